"""Null (e): B's own top neutral principal axes against B's emotion subspaces: the overlap of generic
high-variance directions, which any map onto them would inherit."""

from __future__ import annotations

import numpy as np

from emotion_circuits.alignment.metrics import overlaps_at
from emotion_circuits.alignment.nulls import Null, register
from emotion_circuits.directions.geometry import principal_subspace


def prepare(ctx, rng: np.random.Generator) -> np.ndarray:
    nb = ctx.zb[ctx.neutral_fit]
    return principal_subspace(nb, ctx.kmax, nb.mean(axis=0))[0]


def at_k(ctx, axes: np.ndarray, k: int, rng: np.random.Generator) -> float:
    return float(np.mean(overlaps_at(axes[None], ctx.full_b, k)))


register(Null("neutral_axes", "neutral_axes_overlap", "neutral axes", "greater", None, True, at_k, prepare,
              {"neutral_axes_overlap": ""}, by_layer="neutral_axes_overlap", plotted=False))
