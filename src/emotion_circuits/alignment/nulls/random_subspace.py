"""Null (a): uniformly random k-dimensional subspaces of B's space against B's emotion subspaces (analytic
mean k/d). Any two subspaces overlap this much by chance."""

from __future__ import annotations

import numpy as np

from emotion_circuits import EMOTIONS
from emotion_circuits.alignment.metrics import random_subspace_overlaps
from emotion_circuits.alignment.nulls import Null, register


def at_k(ctx, state: None, k: int, rng: np.random.Generator) -> np.ndarray:
    """Per draw, the mean over emotions (n_random draws per emotion, emotion by emotion)."""
    null = np.stack([random_subspace_overlaps(ctx.full_b[i, :k], k, ctx.params.n_random, rng)
                     for i in range(len(EMOTIONS))])
    return null.mean(axis=0)


register(Null("random_subspace", "vs_random_subspace", "random subspaces", "greater", "n_random", True, at_k,
              columns={"random_null_mean": "null_mean", "random_null_q95": "null_q95", "z_random": "z"},
              by_layer="random_null_q95"))
