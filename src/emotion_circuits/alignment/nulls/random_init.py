"""Null (d): the same recipe with a random-initialised copy of model A (its activations, when the stage has
them): architecture and tokenisation alone give this much overlap."""

from __future__ import annotations

import numpy as np

from emotion_circuits.alignment.maps import mapped_bases
from emotion_circuits.alignment.metrics import overlaps_at
from emotion_circuits.alignment.nulls import Null, register
from emotion_circuits.alignment.subspaces import emotion_subspace_stack


def prepare(ctx, rng: np.random.Generator) -> np.ndarray | None:
    """The random model's subspaces through its own map (fitted with the layer pair, `LayerPair.random_map`)."""
    if ctx.random_map is None:
        return None
    bases = emotion_subspace_stack(ctx.zr, ctx.labels[None], ctx.fit, ctx.kmax, ctx.variant.center)[0]
    return mapped_bases(bases, ctx.random_map.weight)


def at_k(ctx, mapped: np.ndarray | None, k: int, rng: np.random.Generator) -> float | None:
    return None if mapped is None else float(np.mean(overlaps_at(mapped, ctx.full_b, k)))


register(Null("random_init", "random_init_overlap_after", "random-init model", "greater", None, True, at_k, prepare,
              {"random_init_overlap_after": ""}, by_layer="random_init_overlap_after"))
