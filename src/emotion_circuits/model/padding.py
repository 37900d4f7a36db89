"""Ragged token rows -> rectangular batches: right padding for teacher-forced passes (real tokens never see the
pads under a causal or attention mask), left padding for generation (every row's next token is at the end)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_rows(rows: Sequence[Sequence[float]], fill: float, dtype: torch.dtype = torch.long, side: str = "right",
             width: int | None = None) -> torch.Tensor:
    """[len(rows), width] with each row on the `side` it is aligned to and `fill` elsewhere; rows longer than
    `width` are not allowed (callers cut them first)."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = torch.full((len(rows), width), fill, dtype=dtype)
    for i, row in enumerate(rows):
        if len(row):
            values = torch.as_tensor(list(row), dtype=dtype)
            if side == "right":
                out[i, : len(row)] = values
            else:
                out[i, width - len(row):] = values
    return out


def pad_with_mask(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right",
                  width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token rows padded with `pad_id` on the other side from `side`."""
    return (pad_rows(rows, pad_id, torch.long, side, width),
            pad_rows([[1] * len(r) for r in rows], 0, torch.long, side, width))
