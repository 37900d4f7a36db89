"""Benchmark the batched alignment nulls against the one-null-at-a-time path they replaced, in one run.

The reference below is the alignment stage's code before batching (sklearn RidgeCV per noise map, one
eigen-decomposition per permuted subspace, one QR per mapped basis, O(n^3) debiased-CKA permutations), kept
here only, so that the library carries no dead code; tests/test_alignment.py checks that both give the same
numbers. Workload: one layer pair of the stage (all four variants plus the CKA/RSA similarity block of the
three feature modes) on random data of the real shapes: 960 sentences, widths 576 and 640, reduce_dim 48,
the default null counts (n_random 500, n_perm 50, n_noise 20, n_cka_perm 50). CPU time via time.process_time.
Usage (from the repo root): python benchmarks/alignment.py [--items 54] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.alignment import features, layer_pair, metrics
from emotion_circuits.alignment.features import prepare_features
from emotion_circuits.alignment.layer_pair import vector_scores
from emotion_circuits.alignment.maps import LinearMap, score_map
from emotion_circuits.alignment.metrics import canonical_correlations, null_summary, overlap, principal_angles_deg
from emotion_circuits.alignment.nulls.permuted_labels import shuffled_labels
from emotion_circuits.alignment.variants import VARIANTS, Variant
from emotion_circuits.params import AlignmentParams
from emotion_circuits.directions.geometry import principal_subspace


# ------------------------------------------------------------------------- the reference (pre-batching code)

def reduce(x: np.ndarray, fit_rows: np.ndarray, dim: int) -> np.ndarray:
    dim = min(dim, x.shape[1], int(fit_rows.sum()) - 1)
    return PCA(n_components=dim, svd_solver="full").fit(x[fit_rows]).transform(x)


def fit_map(za: np.ndarray, zb: np.ndarray, alphas, intercept: bool) -> LinearMap:
    ridge = RidgeCV(alphas=list(alphas), fit_intercept=intercept).fit(za, zb)
    return LinearMap(ridge.coef_.T, np.atleast_1d(ridge.intercept_), float(ridge.alpha_),
                     float(r2_score(zb, ridge.predict(za), multioutput="variance_weighted")))


def random_subspace_overlaps(v: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    d = v.shape[1]
    q, _ = np.linalg.qr(rng.standard_normal((n, d, k)))
    return np.sum(np.einsum("kd,ndj->nkj", v, q) ** 2, axis=(1, 2)) / min(k, v.shape[0])


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    kl = k @ l
    return float((np.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * kl.sum() / (n - 2)) / (n * (n - 3)))


def debiased_cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
    denom = np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(l, l))
    return float(_unbiased_hsic(k, l) / denom) if denom > 0 else 0.0


def reference_cka_with_null(x: np.ndarray, y: np.ndarray, n_perm: int, rng: np.random.Generator) -> dict[str, Any]:
    """The old CKA null: fancy-indexed Gram per permutation, debiased CKA on the first 5 permutations only."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    kx, ky = xc @ xc.T, yc @ yc.T
    norm = np.linalg.norm(kx) * np.linalg.norm(ky)

    def lin(perm: np.ndarray | None) -> float:
        kyp = ky if perm is None else ky[np.ix_(perm, perm)]
        return float(np.sum(kx * kyp) / norm)

    perms = [rng.permutation(len(x)) for _ in range(n_perm)]
    debiased_null = [debiased_cka_from_grams(kx, ky[np.ix_(p, p)]) for p in perms[:5]]
    return {"cka": null_summary(lin(None), np.array([lin(p) for p in perms]), "greater"),
            "cka_debiased": null_summary(debiased_cka_from_grams(kx, ky), np.array(debiased_null), "greater")}


def emotion_subspaces(z: np.ndarray, labels: np.ndarray, fit: np.ndarray, k: int, center: str) -> dict[str, np.ndarray]:
    neutral_mean = z[fit & (labels == REFERENCE)].mean(axis=0)
    out = {}
    for e in EMOTIONS:
        rows = z[fit & (labels == e)]
        c = {"neutral": neutral_mean, "emotion": rows.mean(axis=0), "none": None}[center]
        basis, _ = principal_subspace(rows, k, c, rows.mean(axis=0) - neutral_mean)
        out[e] = basis
    return out


def _map_overlaps(m: LinearMap, sub_a: dict, sub_b: dict) -> np.ndarray:
    """[n_emotions, n_emotions] overlap of mapped A-subspace (row) with B-subspace (column)."""
    mapped = {e: m.directions(sub_a[e]) for e in EMOTIONS}
    return np.array([[overlap(mapped[a], sub_b[b]) for b in EMOTIONS] for a in EMOTIONS])


def reference_map_scores(za, zb, ra, rb, labels, split, v: Variant, p: AlignmentParams) -> tuple[dict, LinearMap]:
    """The map (sklearn RidgeCV) and its quality scores; CCA on the reduced axes (Procrustes: the library's)."""
    fit = split == "fit"
    nf, nt = fit & (labels == REFERENCE), (split == "test") & (labels == REFERENCE)
    emotional = np.isin(labels, EMOTIONS)
    m = fit_map(za[nf], zb[nf], p.ridge_alphas, v.intercept)
    m.r2_heldout = score_map(m, za[nt], zb[nt])
    cca = canonical_correlations(ra[fit], rb[fit])
    return {"reduce_dim_a": za.shape[1], "reduce_dim_b": zb.shape[1], "ridge_alpha": m.alpha,
            "map_r2_train": m.r2_train, "map_r2_heldout": m.r2_heldout,
            "map_r2_emotional": score_map(m, za[emotional], zb[emotional]),
            "interpolation": bool(m.r2_train > 0.9 and m.r2_heldout <= 0.0),
            "cca_top5": [float(c) for c in cca[:5]], "cca_mean": float(cca.mean()),
            **metrics.procrustes_scores(ra, rb, labels, split)}, m


def reference_k_entry(k, m, subs, perms, noise_maps, random, rng, n_random) -> dict[str, Any]:
    """One k of the sweep, one null draw at a time: subs = (A, B, neutral axes of B, raw A, raw B or None)."""
    def top(sub: dict) -> dict:
        return {e: b[:k] for e, b in sub.items()}

    full_a, full_b, neutral_full, raw_a, raw_b = subs
    sub_a, sub_b = top(full_a), top(full_b)
    after = _map_overlaps(m, sub_a, sub_b)
    diag = np.diag(after)
    random_null = np.stack([random_subspace_overlaps(sub_b[e], k, n_random, rng) for e in EMOTIONS])
    perm_null = [np.diag(_map_overlaps(m, top(pa_), top(pb_))).mean() for pa_, pb_ in perms]
    noise_null = [np.diag(_map_overlaps(nm, sub_a, sub_b)).mean() for nm in noise_maps]
    entry = {"overlap_after": float(diag.mean()), "mismatched_emotions": float(after[~np.eye(len(EMOTIONS), dtype=bool)].mean()),
             "vs_random_subspace": null_summary(float(diag.mean()), random_null.mean(axis=0), "greater"),
             "vs_permuted_labels": null_summary(float(diag.mean()), np.array(perm_null), "greater"),
             "vs_noise_map": null_summary(float(diag.mean()), np.array(noise_null), "greater"),
             "neutral_axes_overlap": float(np.mean([overlap(neutral_full[:k], sub_b[e]) for e in EMOTIONS])),
             "principal_angles_deg_first": float(np.mean([principal_angles_deg(m.directions(sub_a[e]), sub_b[e])[0]
                                                          for e in EMOTIONS]))}
    if raw_b is not None:
        entry["overlap_before"] = float(np.mean([overlap(raw_a[e][:k], raw_b[e][:k]) for e in EMOTIONS]))
    if random is not None:
        entry["random_init_overlap_after"] = float(np.diag(_map_overlaps(random[0], top(random[1]), sub_b)).mean())
    return entry


def reference_align_layer_pair(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, split: np.ndarray,
                               p: AlignmentParams, variant: str, seed: int, xa_random: np.ndarray | None = None) -> dict[str, Any]:
    """All scores for one layer pair and one variant, every null its own fit / decomposition (same draw order)."""
    v, rng, fit = VARIANTS[variant], np.random.default_rng(seed), split == "fit"
    nf = fit & (labels == REFERENCE)

    def embed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
        prepared, dropped = prepare_features(x, fit, v.features, p.massive_share)
        return prepared, reduce(prepared, fit, p.reduce_dim), dropped

    (pa, ra, drop_a), (pb, rb, drop_b) = embed(xa), embed(xb)
    za, zb = (ra, rb) if v.reduce else (pa, pb)
    out, m = reference_map_scores(za, zb, ra, rb, labels, split, v, p)
    out.update(dropped_dims_a=drop_a, dropped_dims_b=drop_b)
    noise_maps = [fit_map(rng.standard_normal(za[nf].shape), zb[nf], p.ridge_alphas, v.intercept) for _ in range(p.n_noise)]
    kmax = max(k for k in p.ks if k < min(za.shape[1], zb.shape[1]))
    random = None
    if xa_random is not None:
        zr = embed(xa_random)[1 if v.reduce else 0]
        random = (fit_map(zr[nf], zb[nf], p.ridge_alphas, v.intercept), emotion_subspaces(zr, labels, fit, kmax, v.center))
        out["random_init_map_r2_heldout"] = score_map(random[0], zr[(split == "test") & (labels == REFERENCE)],
                                                      zb[(split == "test") & (labels == REFERENCE)])
    shuffled = shuffled_labels(labels, np.flatnonzero(fit & np.isin(labels, EMOTIONS)), p.n_perm, rng)
    perms = [(emotion_subspaces(za, s, fit, kmax, v.center), emotion_subspaces(zb, s, fit, kmax, v.center)) for s in shuffled]
    same = pa.shape[1] == pb.shape[1]
    subs = (emotion_subspaces(za, labels, fit, kmax, v.center), emotion_subspaces(zb, labels, fit, kmax, v.center),
            principal_subspace(zb[nf], kmax, zb[nf].mean(axis=0))[0],
            emotion_subspaces(pa, labels, fit, kmax, v.center) if same else None,
            emotion_subspaces(pb, labels, fit, kmax, v.center) if same else None)
    # the vector scores were never batched: the library's, on this map
    out.update(vector_scores(SimpleNamespace(map=m, fit=fit, za=za, zb=zb, labels=labels), shuffled))
    out["k"] = {k: reference_k_entry(k, m, subs, perms, noise_maps, random, rng, p.n_random)
                for k in p.ks if k < min(za.shape[1], zb.shape[1])}
    return out


# ------------------------------------------------------------------------------------------------ benchmark

def synthetic(n: int = 960, widths: tuple[int, int] = (576, 640), seed: int = 0):
    """Real-shaped data: 4 balanced classes, a 25% test split, a shared 30-d latent code with emotion offsets,
    one massive dimension (as on SmolLM2), and a random-init control for model A."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array([*EMOTIONS, REFERENCE]), n // 4)
    split = np.where(np.arange(n) % 4 == 0, "test", "fit")
    z = rng.standard_normal((n, 30))
    for i, e in enumerate(EMOTIONS):
        z[labels == e, i] += 3.0
    xa, xb = (z @ rng.standard_normal((30, w)) + rng.standard_normal((n, w)) for w in widths)
    xa[:, 5] += 40.0
    return xa, xb, rng.standard_normal((n, widths[0])), labels, split


def reference_item(xa, xb, xr, labels, split, params, seed: int = 0) -> list[dict]:
    """One layer pair of the stage, the old way: every variant re-embeds, every null is its own fit."""
    results, similarity = [], {}
    for variant in params.variants:
        mode = VARIANTS[variant].features
        if mode not in similarity:
            fit = split == "fit"
            pa, _ = prepare_features(xa, fit, mode, params.massive_share)
            pb, _ = prepare_features(xb, fit, mode, params.massive_share)
            similarity[mode] = reference_cka_with_null(pa, pb, params.n_cka_perm, np.random.default_rng(seed))
        results.append({**similarity[mode], **reference_align_layer_pair(xa, xb, labels, split, params, variant, seed, xr)})
    return results


def batched_item(xa, xb, xr, labels, split, params, seed: int = 0) -> list[dict]:
    """The same layer pair as the stage now runs it (embeddings shared across variants, batched nulls, plus the
    new RSA / emotion-geometry block)."""
    cache = features.EmbeddingCache(split == "fit", params.massive_share, params.reduce_dim)
    results, similarity = [], {}
    for variant in params.variants:
        mode = VARIANTS[variant].features
        ea, eb, er = (cache.get((name,), x, mode) for name, x in (("a", xa), ("b", xb), ("r", xr)))
        if mode not in similarity:
            similarity[mode] = metrics.similarity_scores(ea, eb, labels, split, params.n_cka_perm, seed)
        results.append({**similarity[mode], **layer_pair.align_embeddings(ea, eb, labels, split, params, variant, seed, er)[0]})
    return results


def _cpu(fn) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def max_difference(ref: list[dict], new: list[dict]) -> float:
    """Largest absolute difference over every number the reference reports (the debiased-CKA null summary
    excepted: it now uses all permutations instead of the first 5)."""
    import pandas as pd

    def flat(rows):
        frame = pd.json_normalize([{k: v for k, v in r.items() if k != "k"} | {f"k{k}": e for k, e in r["k"].items()}
                                   for r in rows], sep=".")
        return frame.select_dtypes("number")

    a, b = flat(ref), flat(new)
    cols = [c for c in a.columns if not c.startswith("cka_debiased.") or c == "cka_debiased.raw"]
    diff = (a[cols] - b[cols]).abs().to_numpy()
    return float(np.nanmax(diff))


def main() -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=54, help="layer pairs of the stage (3 models: 54)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    params = AlignmentParams(ks=(2, 5, 8, 10, 20))
    data = synthetic()
    with threadpool_limits(args.threads):
        ref_cpu, ref_wall, ref = _cpu(lambda: reference_item(*data, params))
        new_cpu, new_wall, new = _cpu(lambda: batched_item(*data, params))
    print(f"workload           one layer pair: 4 variants + similarity, n=960, d=576/640, reduce_dim 48, ks {params.ks}")
    print(f"reference (loops)  {ref_cpu:7.2f} s CPU  {ref_wall:7.2f} s wall")
    print(f"batched            {new_cpu:7.2f} s CPU  {new_wall:7.2f} s wall")
    print(f"ratio              {ref_cpu / new_cpu:7.2f}x CPU  {ref_wall / new_wall:7.2f}x wall")
    print(f"stage estimate     {args.items} items: {ref_wall * args.items / 60:5.1f} min before, "
          f"{new_wall * args.items / 60:5.1f} min after (wall, {args.threads} threads, alignment items only)")
    print(f"max |difference|   {max_difference(ref, new):.2e} over every reported number")


if __name__ == "__main__":
    main()
