"""Null (b): emotion labels shuffled among the emotional fit rows (the same shuffles for A and B), subspaces
rebuilt and pushed through the real map (it never sees labels, so it is not refitted). Shared sentence
geometry without emotion-specific structure scores this much. The shuffles also serve the specific-vector
cosine's null (`LayerPair.shuffled`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotion_circuits.alignment.maps import mapped_bases
from emotion_circuits.alignment.metrics import overlaps_at
from emotion_circuits.alignment.nulls import Null, register
from emotion_circuits.alignment.subspaces import emotion_subspace_stack


@dataclass(frozen=True)
class Permuted:
    labels: np.ndarray        # [P, n] shuffled label sets
    mapped: np.ndarray        # [P, E, kmax, d_B] permuted A subspaces through the map
    target: np.ndarray        # [P, E, kmax, d_B] permuted B subspaces


def shuffled_labels(labels: np.ndarray, rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, len(labels)]: `labels` with the entries at `rows` shuffled, one permutation per set."""
    out = np.repeat(labels[None], n, axis=0)
    for permuted in out:
        permuted[rows] = rng.permutation(labels[rows])
    return out


def prepare(ctx, rng: np.random.Generator) -> Permuted:
    sets = shuffled_labels(ctx.labels, np.flatnonzero(ctx.fit & ctx.emotional), ctx.params.n_perm, rng)
    center = ctx.variant.center
    perm_a = emotion_subspace_stack(ctx.za, sets, ctx.fit, ctx.kmax, center)
    perm_b = emotion_subspace_stack(ctx.zb, sets, ctx.fit, ctx.kmax, center)
    return Permuted(sets, mapped_bases(perm_a, ctx.map.weight), perm_b)


def at_k(ctx, state: Permuted, k: int, rng: np.random.Generator) -> np.ndarray:
    return overlaps_at(state.mapped, state.target, k).mean(axis=1)


register(Null("permuted_labels", "vs_permuted_labels", "permuted labels", "greater", "n_perm", True, at_k,
              prepare, {"perm_null_mean": "null_mean", "perm_null_q95": "null_q95", "p_perm": "p"},
              by_layer="perm_null_q95"))
