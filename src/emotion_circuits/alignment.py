"""Phase 4: is it the same emotion subspace in different coordinates? Cross-model subspace comparison.

The central experiment (after the seeds): learn a linear map from model A's to model B's residuals on *neutral*
sentences only, push A's emotion subspaces through it, and measure their overlap with B's own emotion subspaces.
Every score is reported next to nulls that would produce the same number without shared emotion geometry:
(a) random k-subspaces, (b) permuted emotion labels, (c) held-out R^2 of the map, (d) a random-initialised model A,
(e) B's own top neutral principal axes, (f) a map fitted on Gaussian noise; plus mismatched emotions.

Both models are first reduced to `reduce_dim` principal axes (fitted on the fit split), so the map is estimated
from more neutral sentences than it has inputs; without that, ridge on 180 sentences x 576 dims interpolates.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import orthogonal_procrustes, subspace_angles
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from . import EMOTIONS, REFERENCE
from .vectors import massive_dimensions, principal_subspace


# ----------------------------------------------------------------------------------------------- geometry

def orthonormal_rows(basis: np.ndarray) -> np.ndarray:
    """Orthonormal basis [k, d] of the row span of `basis` [k, d]."""
    q, _ = np.linalg.qr(basis.T)
    return q.T


def overlap(u: np.ndarray, v: np.ndarray) -> float:
    """Mean cos^2 of the principal angles between row spans of orthonormal `u` [k1, d] and `v` [k2, d].

    Equal to ||u v^T||_F^2 / min(k1, k2); computed that way (vectorisable), checked against
    scipy.linalg.subspace_angles in the tests.
    """
    return float(np.sum((u @ v.T) ** 2) / min(u.shape[0], v.shape[0]))


def principal_angles_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.degrees(subspace_angles(u.T, v.T))


def random_subspace_overlaps(v: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Overlap of `n` uniformly random k-dim subspaces of R^d with the fixed orthonormal `v` [kv, d].
    Expected value k/d when kv == k (the analytic null)."""
    d = v.shape[1]
    q, _ = np.linalg.qr(rng.standard_normal((n, d, k)))  # [n, d, k], Haar-distributed column spans
    return np.sum(np.einsum("kd,ndj->nkj", v, q) ** 2, axis=(1, 2)) / min(k, v.shape[0])


def null_summary(raw: float, null: np.ndarray) -> dict[str, float]:
    """raw next to its null: mean, std, 95% quantile, z-score and a one-sided permutation p-value."""
    null = np.asarray(null, dtype=float)
    std = float(null.std(ddof=1)) if null.size > 1 else 0.0
    return {"raw": raw, "null_mean": float(null.mean()), "null_q95": float(np.quantile(null, 0.95)),
            "z": (raw - float(null.mean())) / std if std > 0 else None,
            "p": float((1 + np.sum(null >= raw)) / (1 + null.size))}


# ----------------------------------------------------------------------------------------------- similarity

def _centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019), width-independent; feature-space form, O(n d1 d2)."""
    x, y = _centre(x), _centre(y)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    # Song et al. (2012) unbiased HSIC; no scipy/sklearn implementation exists, so written out here.
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    kl = k @ l
    return float((np.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * kl.sum() / (n - 2)) / (n * (n - 3)))


def debiased_cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
    """Debiased linear CKA from Gram matrices: removes the upward bias of CKA at small n / large width."""
    denom = np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(l, l))
    return float(_unbiased_hsic(k, l) / denom) if denom > 0 else 0.0


def cka_with_null(x: np.ndarray, y: np.ndarray, n_perm: int, rng: np.random.Generator) -> dict[str, Any]:
    """Linear and debiased CKA, each next to a row-shuffled null (sentence correspondence destroyed)."""
    xc, yc = _centre(x), _centre(y)
    kx, ky = xc @ xc.T, yc @ yc.T
    norm = np.linalg.norm(kx) * np.linalg.norm(ky)

    def lin(perm: np.ndarray | None) -> float:
        kyp = ky if perm is None else ky[np.ix_(perm, perm)]
        return float(np.sum(kx * kyp) / norm)

    perms = [rng.permutation(len(x)) for _ in range(n_perm)]
    # Debiased CKA is unbiased (null expectation 0); a few permutations confirm it at O(n^3) each.
    debiased_null = [debiased_cka_from_grams(kx, ky[np.ix_(p, p)]) for p in perms[:5]]
    return {"cka": null_summary(lin(None), np.array([lin(p) for p in perms])),
            "cka_debiased": null_summary(debiased_cka_from_grams(kx, ky), np.array(debiased_null))}


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations via QR + SVD (Bjorck & Golub). Deliberately not sklearn's CCA: that is an
    iterative NIPALS fit per component; this is exact. Inputs must already be reduced below n rows."""
    if x.shape[1] >= x.shape[0] or y.shape[1] >= y.shape[0]:
        raise ValueError("CCA needs fewer dimensions than samples: reduce with PCA first")
    qx, _ = np.linalg.qr(_centre(x))
    qy, _ = np.linalg.qr(_centre(y))
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- the map

@dataclass(frozen=True)
class AlignConfig:
    """One analysis variant plus the shared settings (from `AlignmentParams`, see `variant_config`).

    `center`: neutral | emotion | none (none + no intercept + full width = the seeds' variant)."""

    reduce_dim: int
    ks: tuple[int, ...]
    ridge_alphas: tuple[float, ...]
    n_random: int
    n_perm: int
    n_noise: int
    massive_share: float
    seed: int
    name: str = "raw"
    features: str = "raw"  # raw | zscore | drop_massive
    center: str = "neutral"
    intercept: bool = True
    reduce: bool = True  # False: maps and subspaces at full width (the seeds' setting; interpolates when n < d)


def prepare_features(x: np.ndarray, fit_rows: np.ndarray, mode: str, massive_share: float) -> tuple[np.ndarray, list[int]]:
    """raw | zscore (per-feature, fit-split statistics) | drop_massive (remove massive-activation dimensions)."""
    if mode == "raw":
        return x, []
    if mode == "zscore":
        mu, sd = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0)
        return (x - mu) / np.where(sd > 1e-8, sd, 1.0), []
    if mode == "drop_massive":
        dims, _ = massive_dimensions(x[fit_rows], massive_share)
        return np.delete(x, dims, axis=1), dims.tolist()
    raise ValueError(f"unknown feature mode {mode!r}")


def reduce(x: np.ndarray, fit_rows: np.ndarray, dim: int) -> np.ndarray:
    """PCA to `dim` axes fitted on the fit split (each model in its own coordinates)."""
    dim = min(dim, x.shape[1], int(fit_rows.sum()) - 1)
    return PCA(n_components=dim, svd_solver="full").fit(x[fit_rows]).transform(x)


@dataclass
class LinearMap:
    """z_B ~= z_A @ weight + bias, fitted by ridge (alpha by efficient leave-one-out CV) on neutral rows."""

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    r2_train: float
    r2_heldout: float | None = None

    def directions(self, basis: np.ndarray) -> np.ndarray:
        """Map direction rows [k, d_A] into B's space and orthonormalise: where A's subspace lands in B."""
        return orthonormal_rows(basis @ self.weight)


def fit_map(za: np.ndarray, zb: np.ndarray, alphas, intercept: bool) -> LinearMap:
    ridge = RidgeCV(alphas=list(alphas), fit_intercept=intercept).fit(za, zb)
    return LinearMap(ridge.coef_.T, np.atleast_1d(ridge.intercept_), float(ridge.alpha_),
                     float(r2_score(zb, ridge.predict(za), multioutput="variance_weighted")))


def score_map(m: LinearMap, za: np.ndarray, zb: np.ndarray) -> float:
    return float(r2_score(zb, za @ m.weight + m.bias, multioutput="variance_weighted"))


def emotion_subspaces(z: np.ndarray, labels: np.ndarray, fit: np.ndarray, k: int, center: str) -> dict[str, np.ndarray]:
    """Orthonormal [k, d] basis per emotion; signs aligned with the emotion-minus-neutral direction."""
    neutral_mean = z[fit & (labels == REFERENCE)].mean(axis=0)
    out = {}
    for e in EMOTIONS:
        rows = z[fit & (labels == e)]
        c = {"neutral": neutral_mean, "emotion": rows.mean(axis=0), "none": None}[center]
        basis, _ = principal_subspace(rows, k, c, rows.mean(axis=0) - neutral_mean)
        out[e] = basis
    return out


def emotion_differences(z: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """[n_emotions, d] emotion-minus-neutral mean differences on the fit split."""
    neutral = z[fit & (labels == REFERENCE)].mean(axis=0)
    return np.stack([z[fit & (labels == e)].mean(axis=0) - neutral for e in EMOTIONS])


def mapped_vector_cosines(m: LinearMap, vec_a: np.ndarray, vec_b: np.ndarray) -> np.ndarray:
    """Cosine of each mapped A emotion vector (row) with each B emotion vector (column)."""
    mapped = vec_a @ m.weight
    mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
    return mapped @ (vec_b / np.linalg.norm(vec_b, axis=1, keepdims=True)).T


def _map_overlaps(m: LinearMap, sub_a: dict, sub_b: dict) -> np.ndarray:
    """[n_emotions, n_emotions] overlap of mapped A-subspace (row) with B-subspace (column)."""
    mapped = {e: m.directions(sub_a[e]) for e in EMOTIONS}
    return np.array([[overlap(mapped[a], sub_b[b]) for b in EMOTIONS] for a in EMOTIONS])


def align_layer_pair(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, split: np.ndarray, cfg: AlignConfig,
                     xa_random: np.ndarray | None = None) -> dict[str, Any]:
    """All scores for one layer pair and one variant. Rows of `xa`, `xb` are the same sentences."""
    rng = np.random.default_rng(cfg.seed)
    fit = split == "fit"
    neutral_fit, neutral_test = fit & (labels == REFERENCE), (split == "test") & (labels == REFERENCE)
    emotional = np.isin(labels, EMOTIONS)

    def embed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
        prepared, dropped = prepare_features(x, fit, cfg.features, cfg.massive_share)
        return prepared, reduce(prepared, fit, cfg.reduce_dim), dropped

    pa, ra, dropped_a = embed(xa)
    pb, rb, dropped_b = embed(xb)
    za, zb = (ra, rb) if cfg.reduce else (pa, pb)
    m = fit_map(za[neutral_fit], zb[neutral_fit], cfg.ridge_alphas, cfg.intercept)
    m.r2_heldout = score_map(m, za[neutral_test], zb[neutral_test])
    cca = canonical_correlations(ra[fit], rb[fit])  # CCA and Procrustes always on the reduced axes
    out: dict[str, Any] = {
        "reduce_dim_a": za.shape[1], "reduce_dim_b": zb.shape[1], "dropped_dims_a": dropped_a,
        "dropped_dims_b": dropped_b, "ridge_alpha": m.alpha, "map_r2_train": m.r2_train,
        "map_r2_heldout": m.r2_heldout, "map_r2_emotional": score_map(m, za[emotional], zb[emotional]),
        "interpolation": bool(m.r2_train > 0.9 and m.r2_heldout <= 0.0),
        "cca_top5": [float(c) for c in cca[:5]], "cca_mean": float(cca.mean()),
        **procrustes_scores(ra, rb, labels, split),
    }
    # Gaussian-noise maps (null f) and the random-initialised model A (null d) are k-independent fits.
    noise_maps = [fit_map(rng.standard_normal(za[neutral_fit].shape), zb[neutral_fit], cfg.ridge_alphas,
                          cfg.intercept) for _ in range(cfg.n_noise)]
    if xa_random is not None:
        pr, rr, _ = embed(xa_random)
        zr = rr if cfg.reduce else pr
        random_map = fit_map(zr[neutral_fit], zb[neutral_fit], cfg.ridge_alphas, cfg.intercept)
        out["random_init_map_r2_heldout"] = score_map(random_map, zr[neutral_test], zb[neutral_test])
    emo_rows = np.flatnonzero(fit & emotional)
    same_width = pa.shape[1] == pb.shape[1]
    ks = [k for k in cfg.ks if k < min(za.shape[1], zb.shape[1])]
    kmax = max(ks)
    # Principal axes are nested, so every k of the sweep is a slice of the k_max bases: one SVD per subspace.
    full_a = emotion_subspaces(za, labels, fit, kmax, cfg.center)
    full_b = emotion_subspaces(zb, labels, fit, kmax, cfg.center)
    # (b): emotion labels shuffled among emotional rows, the same shuffles for A and B and for both nulls below
    shuffled = []
    for _ in range(cfg.n_perm):
        permuted = labels.copy()
        permuted[emo_rows] = rng.permutation(labels[emo_rows])
        shuffled.append(permuted)
    perms = [(emotion_subspaces(za, p, fit, kmax, cfg.center), emotion_subspaces(zb, p, fit, kmax, cfg.center))
             for p in shuffled]
    nb = zb[neutral_fit]
    neutral_full, _ = principal_subspace(nb, kmax, nb.mean(axis=0))
    if same_width:  # coordinates comparable without a map (self pairs, equal-width models)
        raw_a = emotion_subspaces(pa, labels, fit, kmax, cfg.center)
        raw_b = emotion_subspaces(pb, labels, fit, kmax, cfg.center)
    if xa_random is not None:
        full_r = emotion_subspaces(zr, labels, fit, kmax, cfg.center)

    # Emotion directions through the map. All three share an "emotional vs neutral" component, so the
    # emotion-specific part (each vector minus the mean of the three) is also scored, against permuted labels.
    vec_a, vec_b = emotion_differences(za, labels, fit), emotion_differences(zb, labels, fit)
    cosines = mapped_vector_cosines(m, vec_a, vec_b)
    out["vector_cosine_after"] = float(np.diag(cosines).mean())
    out["vector_cosine_mismatched"] = float(cosines[~np.eye(len(EMOTIONS), dtype=bool)].mean())

    def specific(v: np.ndarray) -> np.ndarray:
        return v - v.mean(axis=0)

    spec_null = [np.diag(mapped_vector_cosines(m, specific(emotion_differences(za, p, fit)),
                                               specific(emotion_differences(zb, p, fit)))).mean() for p in shuffled]
    out["specific_vector_cosine_after"] = null_summary(
        float(np.diag(mapped_vector_cosines(m, specific(vec_a), specific(vec_b))).mean()), np.array(spec_null))

    def top(sub: dict, k: int) -> dict:
        return {e: b[:k] for e, b in sub.items()}

    per_k = {}
    for k in ks:
        sub_a, sub_b = top(full_a, k), top(full_b, k)
        after = _map_overlaps(m, sub_a, sub_b)
        diag = np.diag(after)
        random_null = np.stack([random_subspace_overlaps(sub_b[e], k, cfg.n_random, rng) for e in EMOTIONS])
        perm_null = [np.diag(_map_overlaps(m, top(pa_, k), top(pb_, k))).mean() for pa_, pb_ in perms]
        noise_null = [np.diag(_map_overlaps(nm, sub_a, sub_b)).mean() for nm in noise_maps]
        entry = {
            "overlap_after": float(diag.mean()),
            "overlap_after_per_emotion": dict(zip(EMOTIONS, map(float, diag))),
            "mismatched_emotions": float(after[~np.eye(len(EMOTIONS), dtype=bool)].mean()),
            "analytic_random": k / zb.shape[1],
            "vs_random_subspace": null_summary(float(diag.mean()), random_null.mean(axis=0)),
            "vs_permuted_labels": null_summary(float(diag.mean()), np.array(perm_null)),
            "vs_noise_map": null_summary(float(diag.mean()), np.array(noise_null)),
            "neutral_axes_overlap": float(np.mean([overlap(neutral_full[:k], sub_b[e]) for e in EMOTIONS])),
            "principal_angles_deg_first": float(np.mean([principal_angles_deg(m.directions(sub_a[e]), sub_b[e])[0]
                                                         for e in EMOTIONS])),
        }
        if same_width:
            entry["overlap_before"] = float(np.mean([overlap(raw_a[e][:k], raw_b[e][:k]) for e in EMOTIONS]))
            entry["analytic_random_before"] = k / pb.shape[1]
        if xa_random is not None:
            entry["random_init_overlap_after"] = float(np.diag(_map_overlaps(random_map, top(full_r, k), sub_b)).mean())
        per_k[k] = entry
    out["k"] = per_k
    return out


def procrustes_scores(za: np.ndarray, zb: np.ndarray, labels: np.ndarray, split: np.ndarray) -> dict[str, float]:
    """Orthogonal Procrustes on equal-width (PCA-reduced) neutral-fit rows; R^2 on held-out neutral and on
    emotional rows; the same fit with shuffled rows as its null."""
    d = min(za.shape[1], zb.shape[1])
    za, zb = za[:, :d], zb[:, :d]
    nf = (split == "fit") & (labels == REFERENCE)
    nt = (split == "test") & (labels == REFERENCE)
    mu_a, mu_b = za[nf].mean(axis=0), zb[nf].mean(axis=0)
    rot, _ = orthogonal_procrustes(za[nf] - mu_a, zb[nf] - mu_b)
    shuffled = np.random.default_rng(0).permutation(np.flatnonzero(nf))
    rot_null, _ = orthogonal_procrustes(za[nf] - mu_a, zb[shuffled] - mu_b)

    def r2(r: np.ndarray, rows: np.ndarray) -> float:
        return float(r2_score(zb[rows], (za[rows] - mu_a) @ r + mu_b, multioutput="variance_weighted"))

    emo = np.isin(labels, EMOTIONS)
    return {"procrustes_r2_heldout": r2(rot, nt), "procrustes_r2_emotional": r2(rot, emo),
            "procrustes_null_r2_heldout": r2(rot_null, nt)}


def layer_pairs(n_a: int, n_b: int, n_pairs: int) -> list[tuple[int, int]]:
    """Layers at matching relative depth: (round(t (n_a-1)), round(t (n_b-1))) for evenly spaced t."""
    n = max(2, min(n_pairs, n_a, n_b))
    ts = np.linspace(0.0, 1.0, n)
    return [(int(round(t * (n_a - 1))), int(round(t * (n_b - 1)))) for t in ts]


VARIANTS = {
    "raw": {"features": "raw", "center": "neutral", "intercept": True},
    "zscore": {"features": "zscore", "center": "neutral", "intercept": True},
    "drop_massive": {"features": "drop_massive", "center": "neutral", "intercept": True},
    # The seeds' recipe: raw full-width features, PCA not centred on the neutral mean, map without intercept.
    "seeds": {"features": "raw", "center": "none", "intercept": False, "reduce": False},
}


def variant_config(name: str, params: Any, seed: int) -> AlignConfig:
    """The AlignConfig of variant `name` with the shared settings of `params` (an AlignmentParams)."""
    shared = {f: getattr(params, f) for f in ("reduce_dim", "ks", "ridge_alphas", "n_random", "n_perm", "n_noise",
                                              "massive_share")}
    return AlignConfig(name=name, seed=seed, **shared, **VARIANTS[name])


def similarity_scores(xa: np.ndarray, xb: np.ndarray, split: np.ndarray, features: str, massive_share: float,
                      n_perm: int, seed: int) -> dict[str, Any]:
    """CKA (linear and debiased) with a row-shuffled null, on full-width prepared features."""
    fit = split == "fit"
    pa, _ = prepare_features(xa, fit, features, massive_share)
    pb, _ = prepare_features(xb, fit, features, massive_share)
    return cka_with_null(pa, pb, n_perm, np.random.default_rng(seed))


def cka_grid(acts_a: list[np.ndarray], acts_b: list[np.ndarray], split: np.ndarray, features: str,
             massive_share: float) -> np.ndarray:
    """[layers_a, layers_b] linear CKA: which layers of A correspond to which of B."""
    fit = split == "fit"
    pa = [prepare_features(x, fit, features, massive_share)[0] for x in acts_a]
    pb = [prepare_features(x, fit, features, massive_share)[0] for x in acts_b]
    return np.array([[linear_cka(a, b) for b in pb] for a in pa])


def passes_all_nulls(row: dict[str, Any]) -> bool:
    """The bar for 'same emotion subspace': above every null's 95% quantile and above mismatched emotions,
    with a map that generalises to held-out neutral sentences."""
    beats = (row["overlap_after"] > row["vs_random_subspace"]["null_q95"]
             and row["overlap_after"] > row["vs_permuted_labels"]["null_q95"]
             and row["overlap_after"] > row["vs_noise_map"]["null_q95"]
             and row["overlap_after"] > row["mismatched_emotions"]
             and row["overlap_after"] > row["neutral_axes_overlap"])
    if row.get("random_init_overlap_after") is not None:
        beats = beats and row["overlap_after"] > row["random_init_overlap_after"]
    return bool(beats and not row["interpolation"] and row["map_r2_heldout"] > 0)


def verdict(a: str, b: str, rows: list[dict[str, Any]], k: int) -> str:
    """Plain-language answer for one ordered pair, from the primary variant's rows at k (one per layer pair)."""
    n = len(rows)
    if a == b:
        low = min(r["overlap_after"] for r in rows)
        return (f"self-alignment sanity check ({a}, k={k}): minimum overlap after the map {low:.3f} over {n} layers "
                f"({'ok' if low > 0.95 else 'FAILED: expected ~1'}); random-subspace null q95 "
                f"{np.mean([r['vs_random_subspace']['null_q95'] for r in rows]):.2f}.")
    passing = sum(passes_all_nulls(r) for r in rows)
    above_random = sum(r["overlap_after"] > r["vs_random_subspace"]["null_q95"] for r in rows)
    above_perm = sum(r["overlap_after"] > r["vs_permuted_labels"]["null_q95"] for r in rows)
    specific = sum(r["specific_vector_cosine_after"]["p"] < 0.05 for r in rows)
    interp = sum(r["interpolation"] for r in rows)
    mean_after = float(np.mean([r["overlap_after"] for r in rows]))
    mean_rand = float(np.mean([r["vs_random_subspace"]["null_q95"] for r in rows]))
    mean_perm = float(np.mean([r["vs_permuted_labels"]["null_mean"] for r in rows]))
    text = (f"{a} -> {b}, k={k}: mapped emotion subspaces overlap {mean_after:.2f} on average over {n} layer pairs "
            f"(random-subspace null q95 {mean_rand:.2f}, permuted-label null {mean_perm:.2f}). ")
    if passing:
        text += f"Emotion-specific alignment beyond every null at {passing}/{n} layer pairs."
    elif above_random and not above_perm:
        text += (f"Above random-subspace chance at {above_random}/{n} layer pairs but never above permuted emotion "
                 "labels: the map carries shared sentence geometry, not an emotion-specific subspace.")
    elif above_random:
        text += (f"Above random subspaces at {above_random}/{n} and above permuted labels at {above_perm}/{n} layer "
                 "pairs, but not beyond every null at any single pair.")
    else:
        text += "No alignment beyond chance."
    text += f" Emotion-specific directions transfer (permutation p < 0.05) at {specific}/{n} layer pairs."
    if interp:
        text += f" Warning: the map interpolates (train R^2 > 0.9, held-out <= 0) at {interp}/{n} layer pairs."
    return text


# ----------------------------------------------------------------------------------------------- outputs

def massive_report(layers: list[np.ndarray], split: np.ndarray, share: float) -> dict[str, Any]:
    """Per layer: the largest single-dimension share (variance or second moment), and the dimensions above `share`."""
    fit = split == "fit"
    report: dict[str, Any] = {"max_share_by_layer": {}, "massive_dims_by_layer": {}}
    for layer, x in enumerate(layers):
        dims, shares = massive_dimensions(x[fit], share)
        report["max_share_by_layer"][f"L{layer:02d}"] = float(shares.max())
        if dims.size:
            report["massive_dims_by_layer"][f"L{layer:02d}"] = [int(d) for d in dims]
    return report


def score_table(results: list[dict[str, Any]]):
    """One row per (pair, layer pair, variant, k); nested null summaries become dotted columns."""
    import pandas as pd

    rows = []
    for res in results:
        base = {k: v for k, v in res.items() if k != "k"}
        base["cca_top5"] = ",".join(f"{c:.4f}" for c in base["cca_top5"])
        base["dropped_dims_a"] = ",".join(map(str, base["dropped_dims_a"]))
        base["dropped_dims_b"] = ",".join(map(str, base["dropped_dims_b"]))
        for k, entry in res["k"].items():
            rows.append({**base, "k": k, **entry})
    return pd.json_normalize(rows, sep=".")


def _pair(a: str, b: str) -> str:
    return f"{a}->{b}"


def _middle(group):
    pairs = sorted(set(zip(group["layer_a"], group["layer_b"])))
    return pairs[len(pairs) // 2]


def write_outputs(results, grids, massive, p, out, plots_dir) -> None:
    """scores.parquet, k-sweep CSVs (dvc plots) and PNGs with null bands, layer x layer CKA heatmaps."""
    from pathlib import Path

    from . import plots
    from .io import write_parquet

    out, plots_dir = Path(out), Path(plots_dir)
    table = score_table(results)
    write_parquet(out / "scores.parquet", table)
    primary = table[table["variant"] == p.primary_variant]
    sweeps = []
    for (a, b), group in primary.groupby(["a", "b"], sort=True):
        la, lb = _middle(group)
        g = group[(group["layer_a"] == la) & (group["layer_b"] == lb)].sort_values("k")
        csv = g[["k", "overlap_after", "vs_random_subspace.null_mean", "vs_random_subspace.null_q95",
                 "vs_permuted_labels.null_mean", "vs_permuted_labels.null_q95", "vs_noise_map.null_mean",
                 "mismatched_emotions", "neutral_axes_overlap"]].rename(columns=lambda c: c.replace(".", "_"))
        csv.to_csv(plots_dir / f"ksweep_{a}__{b}.csv", index=False, float_format="%.6g")
        title = f"{_pair(a, b)} L{la}->L{lb}"
        sweeps.append(csv.assign(series="overlap after map", pair=title, lo=csv["overlap_after"],
                                 hi=csv["overlap_after"], y=csv["overlap_after"]))
        sweeps.append(csv.assign(series="random subspaces (mean..q95)", pair=title,
                                 lo=csv["vs_random_subspace_null_mean"], hi=csv["vs_random_subspace_null_q95"],
                                 y=csv["vs_random_subspace_null_mean"]))
        sweeps.append(csv.assign(series="permuted labels (mean..q95)", pair=title,
                                 lo=csv["vs_permuted_labels_null_mean"], hi=csv["vs_permuted_labels_null_q95"],
                                 y=csv["vs_permuted_labels_null_mean"]))
        sweeps.append(csv.assign(series="mismatched emotions", pair=title, lo=csv["mismatched_emotions"],
                                 hi=csv["mismatched_emotions"], y=csv["mismatched_emotions"]))
    import pandas as pd

    plots.lines(pd.concat(sweeps), "k", "y", "series", out / "plots" / "ksweep.png",
                f"k-sweep ({p.primary_variant})", ylabel="overlap (mean cos^2)", band=("lo", "hi"), facet="pair")
    for (a, b), grid in grids.items():
        frame = pd.DataFrame(grid, columns=[f"L{j}" for j in range(grid.shape[1])])
        frame.insert(0, "layer", range(grid.shape[0]))
        frame.to_csv(out / f"cka_grid_{a}__{b}.csv", index=False, float_format="%.6g")
        plots.heatmap(grid, [f"{a} L{i}" for i in range(grid.shape[0])],
                      [f"{b} L{j}" for j in range(grid.shape[1])], out / "plots" / f"cka_grid_{a}__{b}.png",
                      f"linear CKA (z-scored) {a} x {b}", vmin=0, vmax=1)
    maxshare = pd.DataFrame([{"model": m, "layer": int(k[1:]), "max_share": v} for m, r in massive.items()
                             for k, v in r["max_share_by_layer"].items()])
    plots.lines(maxshare, "layer", "max_share", "model", out / "plots" / "massive_dimension_share.png",
                "largest single-dimension variance share", hline=p.massive_share)


def summarise(results, massive, p) -> dict[str, Any]:
    """metrics/alignment.json: per ordered pair a verdict and, per layer pair, the k_report scores with nulls."""
    pairs: dict[str, Any] = {}
    by_pair: dict[tuple[str, str], list] = {}
    for res in results:
        by_pair.setdefault((res["a"], res["b"]), []).append(res)
    for (a, b), items in by_pair.items():
        def rows(variant: str) -> list[dict[str, Any]]:
            return [{**{k: v for k, v in r.items() if k != "k"}, **r["k"][p.k_report]}
                    for r in items if r["variant"] == variant and p.k_report in r["k"]]

        primary = rows(p.primary_variant)
        entry: dict[str, Any] = {"verdict": verdict(a, b, primary, p.k_report), "layer_pairs": {}}
        for r in primary:
            entry["layer_pairs"][f"L{r['layer_a']:02d}-L{r['layer_b']:02d}"] = {
                "overlap_after": r["overlap_after"], "overlap_before": r.get("overlap_before"),
                "random_null_mean": r["vs_random_subspace"]["null_mean"],
                "random_null_q95": r["vs_random_subspace"]["null_q95"], "z_random": r["vs_random_subspace"]["z"],
                "perm_null_mean": r["vs_permuted_labels"]["null_mean"],
                "perm_null_q95": r["vs_permuted_labels"]["null_q95"], "p_perm": r["vs_permuted_labels"]["p"],
                "noise_null_mean": r["vs_noise_map"]["null_mean"], "noise_null_q95": r["vs_noise_map"]["null_q95"],
                "random_init_overlap_after": r.get("random_init_overlap_after"),
                "neutral_axes_overlap": r["neutral_axes_overlap"], "mismatched_emotions": r["mismatched_emotions"],
                "map_r2_train": r["map_r2_train"], "map_r2_heldout": r["map_r2_heldout"],
                "interpolation": r["interpolation"], "cka": r["cka"]["raw"], "cka_null_q95": r["cka"]["null_q95"],
                "cka_debiased": r["cka_debiased"]["raw"], "cca_top1": float(r["cca_top5"][0]),
                "procrustes_r2_heldout": r["procrustes_r2_heldout"],
                "specific_vector_cosine": r["specific_vector_cosine_after"]["raw"],
                "specific_vector_p": r["specific_vector_cosine_after"]["p"],
                "passes_all_nulls": passes_all_nulls(r)}
        entry["mean_overlap_after_by_variant"] = {
            v: float(np.mean([r["overlap_after"] for r in rows(v)])) for v in p.variants if rows(v)}
        seeds = rows("seeds")
        if seeds:
            after = float(np.mean([r["overlap_after"] for r in seeds]))
            mism = float(np.mean([r["mismatched_emotions"] for r in seeds]))
            perm = float(np.mean([r["vs_permuted_labels"]["null_mean"] for r in seeds]))
            perm_q95 = float(np.mean([r["vs_permuted_labels"]["null_q95"] for r in seeds]))
            entry["seeds_variant"] = {
                "overlap_after": after, "mismatched_emotions": mism, "perm_null_mean": perm,
                "random_null_q95": float(np.mean([r["vs_random_subspace"]["null_q95"] for r in seeds])),
                "overlap_before": (float(np.mean([r["overlap_before"] for r in seeds]))
                                   if "overlap_before" in seeds[0] else None),
                "reproduces_high_overlap": after > 0.9,
                "emotion_specific": after > max(mism, perm_q95)}
        pairs[_pair(a, b)] = entry
    return {"settings": {"position": p.position, "hook": p.hook, "reduce_dim": p.reduce_dim, "k_report": p.k_report,
                         "primary_variant": p.primary_variant},
            "pairs": pairs, "massive_dimensions": massive}


def direction_map(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, split: np.ndarray, reduce_dim: int,
                  alphas: Sequence[float]):
    """A function taking a direction of model A's residual space to model B's, through the same pipeline as
    the alignment stage: PCA of each model (fit split), ridge map on neutral fit sentences. Directions use
    only the linear part (no means, no intercept). Also returns the map's held-out R^2."""
    fit = split == "fit"
    nf, nt = fit & (labels == REFERENCE), (split == "test") & (labels == REFERENCE)
    dim = min(reduce_dim, xa.shape[1], xb.shape[1], int(fit.sum()) - 1)
    pca_a = PCA(n_components=dim, svd_solver="full").fit(xa[fit])
    pca_b = PCA(n_components=dim, svd_solver="full").fit(xb[fit])
    m = fit_map(pca_a.transform(xa[nf]), pca_b.transform(xb[nf]), alphas, True)
    heldout = score_map(m, pca_a.transform(xa[nt]), pca_b.transform(xb[nt]))

    def apply(v: np.ndarray) -> np.ndarray:
        return ((pca_a.components_ @ v) @ m.weight @ pca_b.components_).astype(np.float32)

    return apply, heldout
