"""Baseline: A's emotion subspaces mapped onto B's subspaces of the *other* emotions. An alignment that is not
emotion-specific overlaps the wrong emotions as much as the right ones."""

from __future__ import annotations

import numpy as np

from emotion_circuits import EMOTIONS
from emotion_circuits.alignment.metrics import overlaps_at
from emotion_circuits.alignment.nulls import Null, register


def at_k(ctx, state: None, k: int, rng: np.random.Generator) -> float:
    after = overlaps_at(ctx.mapped[:, None], ctx.full_b[None], k)       # [E, E]
    return float(after[~np.eye(len(EMOTIONS), dtype=bool)].mean())


register(Null("mismatched_emotions", "mismatched_emotions", "mismatched emotions", "greater", None, True, at_k,
              columns={"mismatched_emotions": ""}, by_layer="mismatched_emotions"))
