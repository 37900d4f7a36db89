"""BERT encoders (MiniLM): post-norm, no final norm and no unembedding on `BertModel`; q/k/v/o are
`attention.self.{query,key,value}` and `attention.output.dense`; the neuron activation is the input of
`output.dense`. Kept on HF module hooks (the TransformerLens 4.3 BERT blocks do not reproduce MiniLM)."""

from __future__ import annotations

from typing import Any

import torch

from emotion_circuits.model.arch.base import Adapter, linear_qkvo, register


class BertAdapter(Adapter):
    model_types = ("bert",)
    causal = False

    layers_path, final_norm_path = "encoder.layer", None
    attention_path, input_norm_path, mlp_out_path = "attention.self", None, "output.dense"  # post-norm

    def unembed(self, model: Any) -> None:
        return None

    def logits(self, model: Any, final: torch.Tensor) -> torch.Tensor:
        raise ValueError("an encoder has no next-token logits")


    def head_weights(self, model: Any, layer: int) -> dict[str, torch.Tensor]:
        block = self.layers(model)[layer]
        s = block.attention.self
        return linear_qkvo(self.grouping(model.config), s.query, s.key, s.value, block.attention.output.dense)

    def tiny(self, tok: Any) -> Any:
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id))


register(BertAdapter())
