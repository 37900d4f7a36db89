"""What the engines need to know about a model family, in one place: an `Adapter` per HF `config.model_type`.

Every engine (residual hooks, head screening/patching, neurons, OV/QK circuits, tiny test models) asks the adapter
instead of branching on module names. Adding a family = one new module in this package that calls `register`.

Conventions (TransformerLens): W_Q [n_heads, d_model, d_head], W_K/W_V [n_kv_heads, d_model, d_head] (unexpanded;
query head h reads KV head h // (n_heads // n_kv_heads)), W_O [n_heads, d_head, d_model]; biases b_Q/b_K/b_V
[n_(kv_)heads, d_head] and b_O [d_model] where the family has them. All are the *raw* projections: q/k norms
(Gemma 3, Qwen 3) and rotary embeddings act after them, inside the attention module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from operator import attrgetter

import torch

from emotion_circuits.errors import ModelLoadError


@dataclass(frozen=True)
class Grouping:
    """Query heads, key/value heads (GQA/MQA: fewer) and the head width."""

    n_heads: int
    n_kv_heads: int
    d_head: int


class Adapter:
    """One model family. Subclasses override what differs; the defaults fit llama-style decoders."""

    model_types: ClassVar[tuple[str, ...]] = ()
    causal: ClassVar[bool] = True

    # ---------------------------------------------------------------- config
    def text_config(self, config: Any) -> Any:
        """The language model's config (multimodal wrappers keep it under text_config)."""
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def n_layers(self, config: Any) -> int:
        return int(self.text_config(config).num_hidden_layers)

    def d_model(self, config: Any) -> int:
        return int(self.text_config(config).hidden_size)

    def grouping(self, config: Any) -> Grouping:
        c = self.text_config(config)
        n_heads = int(c.num_attention_heads)
        n_kv = int(getattr(c, "num_key_value_heads", None) or n_heads)
        d_head = int(getattr(c, "head_dim", None) or self.d_model(config) // n_heads)
        return Grouping(n_heads, n_kv, d_head)

    def d_mlp(self, config: Any) -> int:
        return int(self.text_config(config).intermediate_size)

    def attention_scale(self, config: Any) -> float:
        """The factor the attention scores are multiplied by before the softmax."""
        return self.grouping(config).d_head ** -0.5

    def logit_softcap(self, config: Any) -> float | None:
        """tanh soft-capping of the final logits (Gemma); None = none."""
        return None

    # ---------------------------------------------------------------- modules
    def body(self, model: Any) -> Any:
        """The decoder stack to call with input_ids for hidden states (embeddings, masks, rotary, layers, norm)."""
        return model.base_model

    # Where a family keeps its modules: dotted attribute paths (layers/final norm on `body(model)`, the rest on a
    # layer). A family overrides these strings, not the methods; None = the family has no such module.
    layers_path = "layers"
    final_norm_path: str | None = "norm"
    attention_path = "self_attn"  # the module whose forward calls the attention function (owns q/k/v/o)
    input_norm_path: str | None = "input_layernorm"  # the norm the attention reads the residual through
    mlp_out_path = "mlp.down_proj"  # MLP output projection; its input is the neuron activation (mlp.hook_post)

    def layers(self, model: Any) -> torch.nn.ModuleList:
        return attrgetter(self.layers_path)(self.body(model))

    def final_norm(self, model: Any) -> torch.nn.Module | None:
        return None if self.final_norm_path is None else attrgetter(self.final_norm_path)(self.body(model))

    def unembed(self, model: Any) -> torch.nn.Module | None:
        return model.get_output_embeddings()

    def attention(self, layer: torch.nn.Module) -> torch.nn.Module:
        return attrgetter(self.attention_path)(layer)

    def input_norm(self, layer: torch.nn.Module) -> torch.nn.Module:
        """Post-norm families (None) read the residual as it is."""
        return torch.nn.Identity() if self.input_norm_path is None else attrgetter(self.input_norm_path)(layer)

    def mlp_out(self, layer: torch.nn.Module) -> torch.nn.Module:
        return attrgetter(self.mlp_out_path)(layer)

    def head_weights(self, model: Any, layer: int) -> dict[str, torch.Tensor]:
        """W_Q/W_K/W_V/W_O (+ biases where present) of one layer, from separate q/k/v/o Linear layers."""
        g = self.grouping(model.config)
        attn = self.attention(self.layers(model)[layer])
        return linear_qkvo(g, attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)

    # ---------------------------------------------------------------- behaviour
    def logits(self, model: Any, final: torch.Tensor) -> torch.Tensor:
        """Next-token logits from final residuals [R, d] (norm, unembedding, soft-capping)."""
        norm = self.final_norm(model)
        x = norm(final) if norm is not None else final
        logits = self.unembed(model)(x)
        cap = self.logit_softcap(model.config)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def route_attention(self, model: Any, fn: Any) -> None:
        """Make every attention layer call `fn` (HF `AttentionInterface` signature). Families whose attention
        calls the interface need nothing beyond `config._attn_implementation`, which the engine sets."""

    def tiny(self, tokenizer: Any) -> Any:
        """A seeded-by-caller, random-weight model of this family, small enough for tests (d_model <= 64)."""
        raise ModelLoadError(f"no tiny model for {self.model_types}")


def linear_qkvo(g: Grouping, q: torch.nn.Linear, k: torch.nn.Linear, v: torch.nn.Linear,
                o: torch.nn.Linear) -> dict[str, torch.Tensor]:
    """TransformerLens-shaped weights from nn.Linear projections (weights stored [out, in])."""
    d = q.weight.shape[1]

    def split(lin: torch.nn.Linear, n: int) -> torch.Tensor:
        return lin.weight.detach().reshape(n, g.d_head, d).transpose(1, 2)

    out = {"W_Q": split(q, g.n_heads), "W_K": split(k, g.n_kv_heads), "W_V": split(v, g.n_kv_heads),
           "W_O": o.weight.detach().T.reshape(g.n_heads, g.d_head, o.weight.shape[0])}
    for name, lin, n in (("b_Q", q, g.n_heads), ("b_K", k, g.n_kv_heads), ("b_V", v, g.n_kv_heads)):
        if lin.bias is not None:
            out[name] = lin.bias.detach().reshape(n, g.d_head)
    if o.bias is not None:
        out["b_O"] = o.bias.detach()
    return out


REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    for model_type in adapter.model_types:
        REGISTRY[model_type] = adapter
    return adapter


def adapter_for(config: Any) -> Adapter:
    """The adapter of an HF config (by `model_type`); one clear error for a family the project does not know."""
    model_type = getattr(config, "model_type", None)
    if model_type not in REGISTRY:
        raise ModelLoadError(
            f"model family {model_type!r} is not supported (supported: {', '.join(sorted(REGISTRY))}); "
            f"add an adapter module under src/emotion_circuits/model/arch/")
    return REGISTRY[model_type]
