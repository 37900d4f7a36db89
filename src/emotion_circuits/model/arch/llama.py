"""Llama family (SmolLM2, Llama 3): pre-norm RMSNorm decoder, separate q/k/v/o, GQA, SwiGLU MLP (`down_proj`)."""

from __future__ import annotations

from typing import Any

from emotion_circuits.model.arch.base import Adapter, register


class LlamaAdapter(Adapter):
    model_types = ("llama",)

    def tiny(self, tok: Any) -> Any:
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True))


register(LlamaAdapter())
