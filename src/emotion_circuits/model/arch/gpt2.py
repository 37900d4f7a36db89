"""GPT-2: pre-norm LayerNorm (`ln_1`, `ln_f`), Conv1D weights stored [in, out], q/k/v packed in `c_attn`."""

from __future__ import annotations

from typing import Any

import torch

from emotion_circuits.model.arch.base import Adapter, register


class GPT2Adapter(Adapter):
    model_types = ("gpt2",)

    def n_layers(self, config: Any) -> int:
        return int(config.n_layer)

    def d_model(self, config: Any) -> int:
        return int(config.n_embd)

    def d_mlp(self, config: Any) -> int:
        return int(config.n_inner or 4 * config.n_embd)

    def attention_scale(self, config: Any) -> float:
        return self.grouping(config).d_head ** -0.5 if config.scale_attn_weights else 1.0

    layers_path, final_norm_path = "h", "ln_f"
    attention_path, input_norm_path, mlp_out_path = "attn", "ln_1", "mlp.c_proj"

    def head_weights(self, model: Any, layer: int) -> dict[str, torch.Tensor]:
        g, d = self.grouping(model.config), self.d_model(model.config)
        attn = self.attention(self.layers(model)[layer])
        w, b = attn.c_attn.weight.detach(), attn.c_attn.bias.detach()
        out = {}
        for i, name in enumerate("QKV"):
            out[f"W_{name}"] = w[:, i * d:(i + 1) * d].reshape(d, g.n_heads, g.d_head).permute(1, 0, 2)
            out[f"b_{name}"] = b[i * d:(i + 1) * d].reshape(g.n_heads, g.d_head)
        out["W_O"] = attn.c_proj.weight.detach().reshape(g.n_heads, g.d_head, d)
        out["b_O"] = attn.c_proj.bias.detach()
        return out

    def tiny(self, tok: Any) -> Any:
        from transformers import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tok), n_embd=48, n_layer=2, n_head=4, n_positions=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


register(GPT2Adapter())
