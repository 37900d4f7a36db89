"""Null (f): a ridge map fitted on Gaussian noise instead of model A's residuals, then applied to A's real
emotion subspaces. A map that carries no information about A's sentences scores this much."""

from __future__ import annotations

import numpy as np

from emotion_circuits.alignment.maps import fit_maps, mapped_bases
from emotion_circuits.alignment.metrics import overlaps_at
from emotion_circuits.alignment.nulls import Null, register


def prepare(ctx, rng: np.random.Generator) -> np.ndarray:
    """[N, E, kmax, d_B]: A's subspaces through n_noise noise-fitted maps (one batched SVD call)."""
    shape = ctx.za[ctx.neutral_fit].shape
    noise = np.stack([rng.standard_normal(shape) for _ in range(ctx.params.n_noise)])
    maps = fit_maps(noise, ctx.zb[ctx.neutral_fit], ctx.params.ridge_alphas, ctx.variant.intercept)
    return mapped_bases(ctx.full_a[None], np.stack([m.weight for m in maps])[:, None])


def at_k(ctx, mapped_noise: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return overlaps_at(mapped_noise, ctx.full_b[None], k).mean(axis=1)


register(Null("noise_map", "vs_noise_map", "noise map", "greater", "n_noise", True, at_k, prepare,
              {"noise_null_mean": "null_mean", "noise_null_q95": "null_q95"}, by_layer="noise_null_q95"))
