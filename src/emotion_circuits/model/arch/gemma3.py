"""Gemma 3 (`gemma3_text`: 270M/1B; `gemma3`: the multimodal 4B-27B, whose text model is
`model.model.language_model`). Differences that matter here:
- embeddings are scaled by sqrt(d_model) inside `embed_tokens` (so hook_resid_pre of layer 0 includes the scale);
- sliding-window and global layers (`config.layer_types`) get *different* masks and rotary tables (different
  rope_theta) from the model forward, so the engine must keep per-layer call inputs;
- attention scale is query_pre_attn_scalar**-0.5, q/k RMSNorm after the projections, post-attention and
  post-feedforward norms (a head's write to the residual is therefore not linear in its z);
- final logits soft-capped by tanh when `final_logit_softcapping` is set. transformers 5.23's Gemma3Attention
  does not pass `attn_logit_softcapping` to the attention function, so it is not applied (the engine follows).
"""

from __future__ import annotations

from typing import Any

from emotion_circuits.model.arch.base import Adapter, register


class Gemma3Adapter(Adapter):
    model_types = ("gemma3_text", "gemma3")

    def body(self, model: Any) -> Any:
        base = model.base_model
        return getattr(base, "language_model", base)  # multimodal: the text decoder inside

    def logit_softcap(self, config: Any) -> float | None:
        return self.text_config(config).final_logit_softcapping

    def attention_scale(self, config: Any) -> float:
        return float(self.text_config(config).query_pre_attn_scalar) ** -0.5

    def tiny(self, tok: Any) -> Any:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        return Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                             "full_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            final_logit_softcapping=5.0, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True))


register(Gemma3Adapter())
