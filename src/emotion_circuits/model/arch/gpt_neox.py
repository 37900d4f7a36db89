"""GPT-NeoX (Pythia): parallel residual (attention and MLP both read the layer input: x + attn(ln1 x) +
mlp(ln2 x)), partial rotary (`partial_rotary_factor` of each head's dims), untied `embed_out`, and q/k/v packed
*per head* in `query_key_value` (rows [h*3*dh, (h+1)*3*dh) = q_h, k_h, v_h)."""

from __future__ import annotations

from typing import Any

import torch

from emotion_circuits.model.arch.base import Adapter, register


class GPTNeoXAdapter(Adapter):
    model_types = ("gpt_neox",)

    final_norm_path, attention_path, mlp_out_path = "final_layer_norm", "attention", "mlp.dense_4h_to_h"

    def head_weights(self, model: Any, layer: int) -> dict[str, torch.Tensor]:
        g, d = self.grouping(model.config), self.d_model(model.config)
        attn = self.attention(self.layers(model)[layer])
        w = attn.query_key_value.weight.detach().reshape(g.n_heads, 3, g.d_head, d)
        out = {f"W_{n}": w[:, i].transpose(1, 2) for i, n in enumerate("QKV")}
        if attn.query_key_value.bias is not None:
            b = attn.query_key_value.bias.detach().reshape(g.n_heads, 3, g.d_head)
            out.update({f"b_{n}": b[:, i] for i, n in enumerate("QKV")})
        out["W_O"] = attn.dense.weight.detach().T.reshape(g.n_heads, g.d_head, d)
        if attn.dense.bias is not None:
            out["b_O"] = attn.dense.bias.detach()
        return out

    def tiny(self, tok: Any) -> Any:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        return GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            use_parallel_residual=True, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False))


register(GPTNeoXAdapter())
