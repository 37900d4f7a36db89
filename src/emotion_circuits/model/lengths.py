"""Token-length limits: one rule for every stage that runs a model on dataset text.

A row longer than min(`dataset.max_tokens`, the model's context) is rejected before any forward pass with one
line naming the row, its token count, the model, the limit and the knob. Nothing is truncated: cutting a text
would move the labelled sentence end. The knob also bounds memory (attention is quadratic in the row length).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emotion_circuits.errors import DataError

# Config keys that carry a model's maximum sequence length, in the order families use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def config_context(config: Any) -> int | None:
    """The context (position table size) an HF config declares (its text config for multimodal families)."""
    config = getattr(config, "text_config", None) or config
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def context_length(lm: Any) -> int | None:
    """The loaded model's context from its HF config, else the bridge cfg's `n_ctx`; None when neither says (then
    only `dataset.max_tokens` applies)."""
    ctx = config_context(getattr(getattr(lm, "hf_model", None), "config", None))
    if ctx is not None:
        return ctx
    n_ctx = getattr(getattr(getattr(lm, "bridge", None), "cfg", None), "n_ctx", None)
    return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None


def token_limit(lm: Any, max_tokens: int | None) -> tuple[int | None, str]:
    """(limit, advice): limit = min(max_tokens, context); the advice names the knob that sets it."""
    ctx = context_length(lm)
    if max_tokens is not None and (ctx is None or max_tokens <= ctx):
        return max_tokens, f"dataset.max_tokens={max_tokens}; shorten or split the text, or raise dataset.max_tokens"
    if ctx is None:
        return None, ""
    return ctx, f"{lm.name}'s context; shorten or split the text (dataset.max_tokens cannot exceed the context)"


def check_token_counts(lm: Any, counts: Sequence[int], row_ids: Sequence[Any], max_tokens: int | None,
                       what: str) -> None:
    """Raise one `DataError` for the first row (in input order) whose token count is over the limit."""
    limit, advice = token_limit(lm, max_tokens)
    if limit is None:
        return
    for n, ident in zip(counts, row_ids):
        if n > limit:
            raise DataError(f"{what}: row {ident!r} has {n} tokens on {lm.name}, over the limit of {limit} "
                            f"({advice})")
