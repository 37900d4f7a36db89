"""Qwen 3: llama layout plus per-head RMSNorm on q and k (`q_norm`/`k_norm`, applied after the projections, so the
raw W_Q/W_K here do not include them) and optional sliding-window layers (`layer_types`)."""

from __future__ import annotations

from typing import Any

from emotion_circuits.model.arch.base import Adapter, register


class Qwen3Adapter(Adapter):
    model_types = ("qwen3",)

    def tiny(self, tok: Any) -> Any:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True))


register(Qwen3Adapter())
