"""All scores of one layer pair in one variant: fit the neutral-sentence map, push A's emotion subspaces
through it, and score their overlap with B's at every k next to each registered null (`alignment.nulls`).

Every null is computed in batch (stacked SVDs, eigen-decompositions and QRs) from the same random draws, in the
same order, as the one-null-at-a-time loop it replaced (kept in benchmarks/alignment.py; equal to float
tolerance, tested)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.alignment.features import Embedding, embed
from emotion_circuits.alignment.maps import LinearMap, fit_map, mapped_bases, mapped_vector_cosines, score_map
from emotion_circuits.alignment.metrics import (canonical_correlations, null_summary, overlaps_at,
                                                principal_angles_deg, procrustes_scores)
from emotion_circuits.alignment.nulls import NULLS
from emotion_circuits.alignment.subspaces import emotion_differences, emotion_subspace_stack
from emotion_circuits.alignment.variants import VARIANTS, Variant
from emotion_circuits.params import AlignmentParams


@dataclass
class LayerPair:
    """What the scores and the nulls of one layer pair share: the map's coordinates (`za`, `zb`, and `zr` of the
    random-initialised model A), the row masks, the fitted maps and the k_max emotion subspaces."""

    params: AlignmentParams
    variant: Variant
    labels: np.ndarray
    split: np.ndarray
    za: np.ndarray
    zb: np.ndarray
    zr: np.ndarray | None
    map: LinearMap
    random_map: LinearMap | None
    kmax: int
    full_a: np.ndarray        # [E, kmax, d_A]
    full_b: np.ndarray        # [E, kmax, d_B]
    mapped: np.ndarray        # [E, kmax, d_B] A's subspaces through the map
    before: tuple[np.ndarray, np.ndarray] | None  # both models' subspaces without a map (equal widths only)

    @property
    def fit(self) -> np.ndarray:
        return self.split == "fit"

    @property
    def neutral_fit(self) -> np.ndarray:
        return self.fit & (self.labels == REFERENCE)

    @property
    def neutral_test(self) -> np.ndarray:
        return (self.split == "test") & (self.labels == REFERENCE)

    @property
    def emotional(self) -> np.ndarray:
        return np.isin(self.labels, EMOTIONS)


def align_layer_pair(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, split: np.ndarray, p: AlignmentParams,
                     variant: str, seed: int, xa_random: np.ndarray | None = None) -> dict[str, Any]:
    """All scores for one layer pair and one variant. Rows of `xa`, `xb` are the same sentences."""
    fit, features = split == "fit", VARIANTS[variant].features

    def emb(x):
        return embed(x, fit, features, p.massive_share, p.reduce_dim)

    er = emb(xa_random) if xa_random is not None else None
    return align_embeddings(emb(xa), emb(xb), labels, split, p, variant, seed, er)[0]


def map_scores(ea: Embedding, eb: Embedding, m: LinearMap, ctx: LayerPair) -> dict[str, Any]:
    """The map's own quality (R^2 train / held-out / emotional rows, interpolation flag), CCA and Procrustes."""
    za, zb, emotional = ctx.za, ctx.zb, ctx.emotional
    cca = canonical_correlations(ea.reduced[ctx.fit], eb.reduced[ctx.fit])  # CCA, Procrustes: always reduced axes
    return {
        "reduce_dim_a": za.shape[1], "reduce_dim_b": zb.shape[1], "dropped_dims_a": ea.dropped,
        "dropped_dims_b": eb.dropped, "ridge_alpha": m.alpha, "map_r2_train": m.r2_train,
        "map_r2_heldout": m.r2_heldout, "map_r2_emotional": score_map(m, za[emotional], zb[emotional]),
        "interpolation": bool(m.r2_train > 0.9 and m.r2_heldout <= 0.0),
        "cca_top5": [float(c) for c in cca[:5]], "cca_mean": float(cca.mean()),
        **procrustes_scores(ea.reduced, eb.reduced, ctx.labels, ctx.split),
    }


def layer_pair_context(ea: Embedding, eb: Embedding, labels: np.ndarray, split: np.ndarray, p: AlignmentParams,
                       variant: Variant, er: Embedding | None) -> LayerPair:
    """Fit the map (and the random-init model's map) on neutral fit rows; the k_max emotion subspaces."""
    pick = (lambda e: e.reduced) if variant.reduce else (lambda e: e.prepared)
    za, zb, zr = pick(ea), pick(eb), pick(er) if er is not None else None
    fit = split == "fit"
    nf, nt = fit & (labels == REFERENCE), (split == "test") & (labels == REFERENCE)
    m = fit_map(za[nf], zb[nf], p.ridge_alphas, variant.intercept)
    m.r2_heldout = score_map(m, za[nt], zb[nt])
    random_map = fit_map(zr[nf], zb[nf], p.ridge_alphas, variant.intercept) if zr is not None else None
    # Principal axes are nested, so every k of the sweep is a slice of the k_max bases: one SVD per subspace.
    kmax = max(k for k in p.ks if k < min(za.shape[1], zb.shape[1]))
    full_a = emotion_subspace_stack(za, labels[None], fit, kmax, variant.center)[0]
    full_b = emotion_subspace_stack(zb, labels[None], fit, kmax, variant.center)[0]
    before = None
    if ea.prepared.shape[1] == eb.prepared.shape[1]:  # coordinates comparable without a map (equal widths)
        before = tuple(emotion_subspace_stack(e.prepared, labels[None], fit, kmax, variant.center)[0] for e in (ea, eb))
    return LayerPair(p, variant, labels, split, za, zb, zr, m, random_map, kmax, full_a, full_b,
                     mapped_bases(full_a, m.weight), before)


def vector_scores(ctx: LayerPair, shuffled: np.ndarray) -> dict[str, Any]:
    """Emotion directions through the map. All three share an "emotional vs neutral" component, so the
    emotion-specific part (each vector minus the mean of the three) is also scored, against permuted labels."""
    m, fit = ctx.map, ctx.fit

    def specific(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        v = emotion_differences(z, labels, fit)
        return v - v.mean(axis=0)

    cosines = mapped_vector_cosines(m, emotion_differences(ctx.za, ctx.labels, fit),
                                    emotion_differences(ctx.zb, ctx.labels, fit))
    spec_null = [np.diag(mapped_vector_cosines(m, specific(ctx.za, s), specific(ctx.zb, s))).mean() for s in shuffled]
    raw = float(np.diag(mapped_vector_cosines(m, specific(ctx.za, ctx.labels), specific(ctx.zb, ctx.labels))).mean())
    return {"vector_cosine_after": float(np.diag(cosines).mean()),
            "vector_cosine_mismatched": float(cosines[~np.eye(len(EMOTIONS), dtype=bool)].mean()),
            "specific_vector_cosine_after": null_summary(raw, np.array(spec_null), "greater")}


def k_scores(ctx: LayerPair, k: int, states: dict[str, Any],
             rng: np.random.Generator) -> dict[str, Any]:
    """The overlap at k, next to every registered null (drawn nulls summarised, baselines as values)."""
    diag = np.diag(overlaps_at(ctx.mapped[:, None], ctx.full_b[None], k))
    after = float(diag.mean())
    entry: dict[str, Any] = {"overlap_after": after, "overlap_after_per_emotion": dict(zip(EMOTIONS, map(float, diag))),
                             "analytic_random": k / ctx.zb.shape[1]}
    for name, null in NULLS.items():
        got = null.at_k(ctx, states[name], k, rng)
        if got is not None:
            entry[null.key] = null_summary(after, got, null.alternative) if null.drawn else got
    entry["principal_angles_deg_first"] = float(np.mean([principal_angles_deg(ctx.mapped[i, :k], ctx.full_b[i, :k])[0]
                                                         for i in range(len(EMOTIONS))]))
    if ctx.before is not None:
        entry["overlap_before"] = float(np.mean(overlaps_at(*ctx.before, k)))
        entry["analytic_random_before"] = k / ctx.before[1].shape[-1]
    return entry


def align_embeddings(ea: Embedding, eb: Embedding, labels: np.ndarray, split: np.ndarray, p: AlignmentParams,
                     variant: str, seed: int, er: Embedding | None = None) -> tuple[dict[str, Any], LinearMap]:
    """`align_layer_pair` on embedded layers; also returns the fitted map (saved as a `DirectionMap`)."""
    rng = np.random.default_rng(seed)
    ctx = layer_pair_context(ea, eb, labels, split, p, VARIANTS[variant], er)
    out = map_scores(ea, eb, ctx.map, ctx)
    if ctx.random_map is not None:
        out["random_init_map_r2_heldout"] = score_map(ctx.random_map, ctx.zr[ctx.neutral_test], ctx.zb[ctx.neutral_test])
    states = {name: null.prepare(ctx, rng) for name, null in NULLS.items()}
    out.update(vector_scores(ctx, states["permuted_labels"].labels))
    out["k"] = {k: k_scores(ctx, k, states, rng) for k in p.ks if k < min(ctx.za.shape[1], ctx.zb.shape[1])}
    return out, ctx.map
