"""GPT-Neo: alternating global/local layers (`config.attention_layers`); local layers see only the last
`window_size` keys through a per-module `bias` buffer (every layer gets the same attention_mask from the model), no
1/sqrt(d_head) scaling of the scores, q/k computed in float32. Its attention does *not* call HF's
`AttentionInterface` (transformers 5.23 `GPTNeoSelfAttention._attn`), so `route_attention` replaces `_attn` on
each attention module with one that calls the engine's function with the module's own window and scale."""

from __future__ import annotations

import types
from typing import Any

import torch

from emotion_circuits.model.arch.base import Adapter, Grouping, linear_qkvo, register


class GPTNeoAdapter(Adapter):
    model_types = ("gpt_neo",)

    def grouping(self, config: Any) -> Grouping:
        return Grouping(int(config.num_heads), int(config.num_heads), int(config.hidden_size // config.num_heads))

    def n_layers(self, config: Any) -> int:
        return int(config.num_layers)

    def d_mlp(self, config: Any) -> int:
        return int(config.intermediate_size or 4 * config.hidden_size)

    def attention_scale(self, config: Any) -> float:
        return 1.0

    layers_path, final_norm_path, input_norm_path, mlp_out_path = "h", "ln_f", "ln_1", "mlp.c_proj"

    def attention(self, layer: torch.nn.Module) -> torch.nn.Module:
        # A TransformerBridge wraps `attn.attention` in place as `attn` (its AttentionBridge proxies the projections)
        return getattr(layer.attn, "attention", layer.attn)


    def head_weights(self, model: Any, layer: int) -> dict[str, torch.Tensor]:
        attn = self.attention(self.layers(model)[layer])
        return linear_qkvo(self.grouping(model.config), attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj)

    def route_attention(self, model: Any, fn: Any) -> None:
        for i, layer in enumerate(self.layers(model)):
            attn = self.attention(layer)

            def _attn(module, query, key, value, attention_mask=None, _layer=i):
                q_len, k_len = query.size(-2), key.size(-2)
                allowed = module.bias[:, :, k_len - q_len:k_len, :k_len]  # causal, and the window on local layers
                z, pattern = fn(module, query.float(), key.float(), value, attention_mask, scaling=1.0,
                                allowed=allowed, layer_index=_layer)
                return z.transpose(1, 2), pattern  # GPT-Neo merges heads from [B, H, T, dh]

            attn._attn = types.MethodType(_attn, attn)

    def tiny(self, tok: Any) -> Any:
        from transformers import GPTNeoConfig, GPTNeoForCausalLM

        return GPTNeoForCausalLM(GPTNeoConfig(
            vocab_size=len(tok), hidden_size=48, num_layers=2, num_heads=4, attention_types=[[["local", "global"], 1]],
            window_size=4, max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id))


register(GPTNeoAdapter())
