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

import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import eigh, orthogonal_procrustes, subspace_angles
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.vectors import massive_dimensions, principal_subspace


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
    g = rng.standard_normal((n, d, k))  # [n, d, k], Haar-distributed column spans
    # The projector onto span(G) is G (G'G)^-1 G', so ||v Q||_F^2 = tr((G'G)^-1 (vG)'(vG)): batched k x k solves
    # instead of one QR of each d x k draw (same draws, same numbers to float tolerance, ~5x faster).
    vg = v @ g
    return np.trace(np.linalg.solve(np.swapaxes(g, 1, 2) @ g, np.swapaxes(vg, 1, 2) @ vg), axis1=1, axis2=2) / min(
        k, v.shape[0])


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


def _hsic_parts(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(Gram with zeroed diagonal, its row sums, its total): what unbiased HSIC needs of one Gram matrix."""
    k = k.copy()
    np.fill_diagonal(k, 0.0)
    rows = k.sum(axis=1)
    return k, rows, float(rows.sum())


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    # Song et al. (2012) unbiased HSIC; no scipy/sklearn implementation exists, so written out here. For
    # symmetric Grams tr(K L) = sum(K * L) and 1'KL1 = (K1).(L1): O(n^2), not the O(n^3) product K @ L.
    n = k.shape[0]
    k, k_rows, k_sum = _hsic_parts(k)
    l, l_rows, l_sum = _hsic_parts(l)
    return float((np.vdot(k, l) + k_sum * l_sum / ((n - 1) * (n - 2)) - 2 * (k_rows @ l_rows) / (n - 2))
                 / (n * (n - 3)))


def debiased_cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
    """Debiased linear CKA from Gram matrices: removes the upward bias of CKA at small n / large width."""
    denom = np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(l, l))
    return float(_unbiased_hsic(k, l) / denom) if denom > 0 else 0.0


def centred_gram(x: np.ndarray) -> np.ndarray:
    """Gram matrix [n, n] of column-centred rows (float64): the form CKA needs, shared by the null and the grid."""
    xc = _centre(np.asarray(x, dtype=np.float64))
    return xc @ xc.T


def permuted_cka(kx: np.ndarray, ky: np.ndarray, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear and debiased CKA between Gram `kx` and `ky` with its rows and columns permuted by each row of
    `perms` [n_perm, n] (the row-shuffled null). One gather of ky per permutation serves both: permuting ky
    leaves its norm, its HSIC with itself and its diagonal-free total unchanged, and permutes its row sums."""
    n = kx.shape[0]
    norm = np.linalg.norm(kx) * np.linalg.norm(ky)
    kx0, kx_rows, kx_sum = _hsic_parts(kx)
    _, ky_rows, ky_sum = _hsic_parts(ky)
    dx, dy = np.diag(kx), np.diag(ky)
    denom = np.sqrt(_unbiased_hsic(kx, kx) * _unbiased_hsic(ky, ky))
    lin, deb = np.empty(len(perms)), np.empty(len(perms))
    for i, p in enumerate(perms):
        full = np.vdot(kx, ky.take(p, axis=0).take(p, axis=1))  # take: ~4x faster than ky[np.ix_(p, p)]
        lin[i] = full / norm
        hsic = ((full - dx @ dy[p]) + kx_sum * ky_sum / ((n - 1) * (n - 2)) - 2 * (kx_rows @ ky_rows[p]) / (n - 2))
        deb[i] = hsic / (n * (n - 3)) / denom if denom > 0 else 0.0
    return lin, deb


def cka_with_null(x: np.ndarray, y: np.ndarray, n_perm: int, rng: np.random.Generator,
                  grams: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Linear and debiased CKA, each next to a row-shuffled null (sentence correspondence destroyed).

    Both nulls use all `n_perm` permutations (the debiased one used only the first 5 while it cost O(n^3) per
    permutation; its p-value could then never fall below 1/6). `grams`: precomputed `centred_gram`s of x, y."""
    kx, ky = grams if grams is not None else (centred_gram(x), centred_gram(y))
    perms = np.stack([rng.permutation(len(kx)) for _ in range(n_perm)])
    lin, deb = permuted_cka(kx, ky, perms)
    raw = float(np.vdot(kx, ky) / (np.linalg.norm(kx) * np.linalg.norm(ky)))
    return {"cka": null_summary(raw, lin), "cka_debiased": null_summary(debiased_cka_from_grams(kx, ky), deb)}


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


def _feature_transform(x: np.ndarray, fit_rows: np.ndarray, mode: str,
                       massive_share: float) -> tuple[np.ndarray | None, np.ndarray | None, list[int]]:
    """(shift, scale, dropped dims) of a feature mode, from fit-split statistics: prepared = (x - shift) / scale
    without the dropped dims."""
    if mode == "raw":
        return None, None, []
    if mode == "zscore":
        mu, sd = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0)
        return mu, np.where(sd > 1e-8, sd, 1.0), []
    if mode == "drop_massive":
        dims, _ = massive_dimensions(x[fit_rows], massive_share)
        return None, None, dims.tolist()
    raise ValueError(f"unknown feature mode {mode!r}")


def prepare_features(x: np.ndarray, fit_rows: np.ndarray, mode: str, massive_share: float) -> tuple[np.ndarray, list[int]]:
    """raw | zscore (per-feature, fit-split statistics) | drop_massive (remove massive-activation dimensions)."""
    shift, scale, dropped = _feature_transform(x, fit_rows, mode, massive_share)
    if shift is not None:
        x = (x - shift) / scale
    return (np.delete(x, dropped, axis=1) if dropped else x), dropped


@dataclass
class Embedding:
    """One model's layer in one feature mode: the prepared features and their PCA reduction (fit split).

    A layer of a model enters several layer pairs and variants; the stage embeds it once (`EmbeddingCache`).
    Everything a saved `DirectionMap` needs to redo the reduction is kept."""

    prepared: np.ndarray              # [n, d'] float64, after the feature mode
    reduced: np.ndarray               # [n, r] PCA scores
    dropped: list[int]
    shift: np.ndarray | None          # zscore mean [d] (None: none)
    scale: np.ndarray | None          # zscore sd [d], 1.0 where ~constant (None: none)
    pca_mean: np.ndarray              # [d']
    pca_basis: np.ndarray             # [r, d'] orthonormal rows
    width: int                        # d, the residual width
    _gram: np.ndarray | None = None

    @property
    def gram(self) -> np.ndarray:
        """Centred Gram matrix of the prepared features (CKA), computed once."""
        if self._gram is None:
            self._gram = centred_gram(self.prepared)
        return self._gram


def embed(x: np.ndarray, fit: np.ndarray, features: str, massive_share: float, reduce_dim: int) -> Embedding:
    """Prepare `x` (float64) and PCA-reduce it to `reduce_dim` axes fitted on the fit split."""
    x = np.asarray(x, dtype=np.float64)
    shift, scale, dropped = _feature_transform(x, fit, features, massive_share)
    prepared, _ = prepare_features(x, fit, features, massive_share)
    dim = min(reduce_dim, prepared.shape[1], int(fit.sum()) - 1)
    # covariance_eigh: eigh of the d x d covariance instead of an SVD of the fit rows (3-4x faster at 720 x 640;
    # the same axes and signs to float tolerance, sklearn's svd_flip convention either way)
    pca = PCA(n_components=dim, svd_solver="covariance_eigh").fit(prepared[fit])
    return Embedding(prepared, pca.transform(prepared), dropped, shift, scale, pca.mean_, pca.components_, x.shape[1])


class EmbeddingCache:
    """Embeddings by (model, layer, feature mode), computed on first use (the stage's PCA reductions were a
    fifth of its time when every layer pair and variant redid them)."""

    def __init__(self, fit: np.ndarray, massive_share: float, reduce_dim: int) -> None:
        self.fit, self.massive_share, self.reduce_dim = fit, massive_share, reduce_dim
        self._store: dict[tuple, Embedding] = {}

    def get(self, key: tuple, x: np.ndarray, features: str) -> Embedding:
        if (*key, features) not in self._store:
            self._store[(*key, features)] = embed(x, self.fit, features, self.massive_share, self.reduce_dim)
        return self._store[(*key, features)]


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


def fit_maps(x: np.ndarray, y: np.ndarray, alphas: Sequence[float], intercept: bool) -> list[LinearMap]:
    """Ridge maps y ~= x[b] @ W + c for a stack of designs `x` [B, n, p] against one target `y` [n, t], alpha by
    efficient leave-one-out CV: sklearn's RidgeCV (GCV, one alpha for all targets, first alpha on ties) written
    out so that a stack of designs shares batched SVDs. Per design one SVD X_c = U S V^T serves every alpha:
    hat matrix H = 11'/n + U diag(s^2/(s^2+alpha)) U' (the intercept unpenalised), LOO residual
    (y - Hy) / (1 - h_ii), coef(alpha) = V diag(s/(s^2+alpha)) U' y_c (wide designs: eigh of X_c X_c' instead). Equal to RidgeCV to float tolerance (tested)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.shape[1]
    x_mean = x.mean(axis=1, keepdims=True) if intercept else np.zeros((len(x), 1, x.shape[2]))
    y_mean = y.mean(axis=0) if intercept else np.zeros(y.shape[1])
    xc, yc = x - x_mean, y - y_mean
    if n < x.shape[2]:  # wide design: U and s^2 from the n x n Gram matrix (sklearn's "gram" mode), far cheaper
        evals, u = np.linalg.eigh(xc @ np.swapaxes(xc, 1, 2))
        s2 = np.clip(evals, 0.0, None)
    else:
        u, sv, _ = np.linalg.svd(xc, full_matrices=False)       # [B, n, r], [B, r]
        s2 = sv**2
    uty = np.swapaxes(u, 1, 2) @ yc                              # [B, r, t]
    u2 = u**2
    best_err = np.full(len(x), np.inf)
    best_alpha = np.zeros(len(x))
    for alpha in alphas:
        shrink = s2 / (s2 + alpha)                               # [B, r]
        resid = yc - u @ (shrink[:, :, None] * uty)
        h = u2 @ shrink[:, :, None] + (1.0 / n if intercept else 0.0)   # [B, n, 1] diagonal of the hat matrix
        err = np.mean((resid / (1.0 - h)) ** 2, axis=(1, 2))
        better = err < best_err
        best_err, best_alpha = np.where(better, err, best_err), np.where(better, alpha, best_alpha)
    maps = []
    for b, alpha in enumerate(best_alpha):
        # dual form X_c' U diag(1/(s^2+alpha)) U' y_c = V diag(s/(s^2+alpha)) U' y_c, without dividing by s
        weight = xc[b].T @ (u[b] @ ((1.0 / (s2[b] + alpha))[:, None] * uty[b]))    # [p, t]
        bias = y_mean - x_mean[b, 0] @ weight
        maps.append(LinearMap(weight, bias, float(alpha),
                              float(r2_score(y, x[b] @ weight + bias, multioutput="variance_weighted"))))
    return maps


def fit_map(za: np.ndarray, zb: np.ndarray, alphas: Sequence[float], intercept: bool) -> LinearMap:
    return fit_maps(za[None], zb, alphas, intercept)[0]


def score_map(m: LinearMap, za: np.ndarray, zb: np.ndarray) -> float:
    return float(r2_score(zb, za @ m.weight + m.bias, multioutput="variance_weighted"))


def _fix_signs_batched(comps: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """vectors.fix_signs on a stack [B, k, d] with one reference [B, d] per block (the same rule, vectorised)."""
    dot = np.einsum("bkd,bd->bk", comps, refs)
    scale = np.linalg.norm(refs, axis=1)[:, None] * np.linalg.norm(comps, axis=2)
    largest = np.take_along_axis(comps, np.argmax(np.abs(comps), axis=2)[..., None], axis=2)[..., 0]
    fallback = np.where(np.sign(largest) == 0, 1.0, np.sign(largest))
    sign = np.where((scale > 0) & (np.abs(dot) > 1e-8 * scale), np.sign(dot), fallback)
    return comps * sign[..., None]


def principal_subspaces(blocks: np.ndarray, centers: np.ndarray | None, refs: np.ndarray, k: int) -> np.ndarray:
    """vectors.principal_subspace on a stack of blocks [B, m, d] (centres [B, d] or None, sign references
    [B, d]) -> [B, k, d]: the same eigen-decomposition of the smaller Gram matrix, batched."""
    xc = np.asarray(blocks - centers[:, None, :] if centers is not None else blocks, dtype=np.float64)
    m, d = xc.shape[1:]
    k = min(k, m, d)
    xt = np.swapaxes(xc, 1, 2)
    gram = xc @ xt if m < d else xt @ xc
    size = gram.shape[-1]
    evals, vecs = np.empty((len(gram), k)), np.empty((len(gram), size, k))   # [B, k], [B, m or d, k]
    for i, g in enumerate(gram):  # only the top k eigenpairs (LAPACK syevr): ~4x faster than the full eigh
        w, v = eigh(g, subset_by_index=[size - k, size - 1], driver="evr")
        evals[i], vecs[i] = w[::-1], v[:, ::-1]
    if m < d:
        s = np.sqrt(np.clip(evals, 0.0, None))
        vecs = xt @ vecs / np.where(s > 1e-12, s, 1.0)[:, None, :]
    return _fix_signs_batched(np.swapaxes(vecs, 1, 2), refs)


def emotion_subspace_stack(z: np.ndarray, label_sets: np.ndarray, fit: np.ndarray, k: int, center: str) -> np.ndarray:
    """[n_sets, n_emotions, k, d] orthonormal bases, one label set per row of `label_sets` [n_sets, n] (the
    real labels and the permuted-label null share this code); signs aligned with emotion minus neutral."""
    out = []
    for labels in label_sets:  # neutral rows are never permuted, but each set gets its own neutral mean anyway
        out.append(z[fit & (labels == REFERENCE)].mean(axis=0))
    neutral = np.stack(out)
    per_emotion = []
    for e in EMOTIONS:
        rows = [np.flatnonzero(fit & (labels == e)) for labels in label_sets]
        if len({len(r) for r in rows}) == 1:   # equal class sizes (always, for label permutations): one batch
            groups = [np.arange(len(rows))]
        else:
            groups = [np.array([i]) for i in range(len(rows))]
        bases = np.empty((len(rows), min(k, len(rows[0]), z.shape[1]), z.shape[1]))
        for g in groups:
            blocks = np.stack([z[rows[i]] for i in g])
            means = blocks.mean(axis=1)
            c = {"neutral": neutral[g], "emotion": means, "none": None}[center]
            bases[g] = principal_subspaces(blocks, c, means - neutral[g], k)
        per_emotion.append(bases)
    return np.stack(per_emotion, axis=1)


def emotion_subspaces(z: np.ndarray, labels: np.ndarray, fit: np.ndarray, k: int, center: str) -> dict[str, np.ndarray]:
    """Orthonormal [k, d] basis per emotion; signs aligned with the emotion-minus-neutral direction."""
    stack = emotion_subspace_stack(z, labels[None], fit, k, center)[0]
    return dict(zip(EMOTIONS, stack))


def emotion_differences(z: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """[n_emotions, d] emotion-minus-neutral mean differences on the fit split."""
    neutral = z[fit & (labels == REFERENCE)].mean(axis=0)
    return np.stack([z[fit & (labels == e)].mean(axis=0) - neutral for e in EMOTIONS])


def mapped_vector_cosines(m: LinearMap, vec_a: np.ndarray, vec_b: np.ndarray) -> np.ndarray:
    """Cosine of each mapped A emotion vector (row) with each B emotion vector (column)."""
    mapped = vec_a @ m.weight
    mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
    return mapped @ (vec_b / np.linalg.norm(vec_b, axis=1, keepdims=True)).T


def mapped_bases(bases: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Batched `LinearMap.directions`: bases [..., k, d_A] through weight(s) [..., d_A, d_B], orthonormalised.
    The first j rows of the result span the map of the first j basis rows (QR is sequential), so one QR at
    k_max serves every k of the sweep."""
    q, _ = np.linalg.qr(np.swapaxes(bases @ weight, -1, -2))
    return np.swapaxes(q, -1, -2)


def _overlaps_at(u: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """`overlap` of the top-k rows of u [..., K, d] and v [..., K, d], broadcast over the leading axes."""
    return np.sum((u[..., :k, :] @ np.swapaxes(v[..., :k, :], -1, -2)) ** 2, axis=(-1, -2)) / k


def align_layer_pair(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, split: np.ndarray, cfg: AlignConfig,
                     xa_random: np.ndarray | None = None) -> dict[str, Any]:
    """All scores for one layer pair and one variant. Rows of `xa`, `xb` are the same sentences."""
    fit = split == "fit"

    def emb(x):
        return embed(x, fit, cfg.features, cfg.massive_share, cfg.reduce_dim)

    return align_embeddings(emb(xa), emb(xb), labels, split, cfg, emb(xa_random) if xa_random is not None else None)[0]


def align_embeddings(ea: Embedding, eb: Embedding, labels: np.ndarray, split: np.ndarray, cfg: AlignConfig,
                     er: Embedding | None = None) -> tuple[dict[str, Any], LinearMap]:
    """`align_layer_pair` on embedded layers; also returns the fitted map (saved as a `DirectionMap`).

    Every null is computed in batch (stacked SVDs, eigen-decompositions and QRs) from the same random draws, in
    the same order, as the one-null-at-a-time loop it replaced (kept in benchmarks/alignment.py; equal to float
    tolerance, tested)."""
    rng = np.random.default_rng(cfg.seed)
    fit = split == "fit"
    neutral_fit, neutral_test = fit & (labels == REFERENCE), (split == "test") & (labels == REFERENCE)
    emotional = np.isin(labels, EMOTIONS)
    pa, ra, pb, rb = ea.prepared, ea.reduced, eb.prepared, eb.reduced
    za, zb = (ra, rb) if cfg.reduce else (pa, pb)
    m = fit_map(za[neutral_fit], zb[neutral_fit], cfg.ridge_alphas, cfg.intercept)
    m.r2_heldout = score_map(m, za[neutral_test], zb[neutral_test])
    cca = canonical_correlations(ra[fit], rb[fit])  # CCA and Procrustes always on the reduced axes
    out: dict[str, Any] = {
        "reduce_dim_a": za.shape[1], "reduce_dim_b": zb.shape[1], "dropped_dims_a": ea.dropped,
        "dropped_dims_b": eb.dropped, "ridge_alpha": m.alpha, "map_r2_train": m.r2_train,
        "map_r2_heldout": m.r2_heldout, "map_r2_emotional": score_map(m, za[emotional], zb[emotional]),
        "interpolation": bool(m.r2_train > 0.9 and m.r2_heldout <= 0.0),
        "cca_top5": [float(c) for c in cca[:5]], "cca_mean": float(cca.mean()),
        **procrustes_scores(ra, rb, labels, split),
    }
    # Gaussian-noise maps (null f) and the random-initialised model A (null d) are k-independent fits; the
    # noise maps share one batched SVD call (the map never sees emotion labels, so the permuted-label null
    # below reuses the real map instead of refitting it).
    noise = np.stack([rng.standard_normal(za[neutral_fit].shape) for _ in range(cfg.n_noise)])
    noise_weights = np.stack([nm.weight for nm in fit_maps(noise, zb[neutral_fit], cfg.ridge_alphas, cfg.intercept)])
    if er is not None:
        zr = er.reduced if cfg.reduce else er.prepared
        random_map = fit_map(zr[neutral_fit], zb[neutral_fit], cfg.ridge_alphas, cfg.intercept)
        out["random_init_map_r2_heldout"] = score_map(random_map, zr[neutral_test], zb[neutral_test])
    emo_rows = np.flatnonzero(fit & emotional)
    same_width = pa.shape[1] == pb.shape[1]
    ks = [k for k in cfg.ks if k < min(za.shape[1], zb.shape[1])]
    kmax = max(ks)
    # Principal axes are nested, so every k of the sweep is a slice of the k_max bases: one SVD per subspace.
    full_a = emotion_subspace_stack(za, labels[None], fit, kmax, cfg.center)[0]      # [E, kmax, d_A]
    full_b = emotion_subspace_stack(zb, labels[None], fit, kmax, cfg.center)[0]
    # (b): emotion labels shuffled among emotional rows, the same shuffles for A and B and for both nulls below
    shuffled = np.repeat(labels[None], cfg.n_perm, axis=0)
    for permuted in shuffled:
        permuted[emo_rows] = rng.permutation(labels[emo_rows])
    perm_a = emotion_subspace_stack(za, shuffled, fit, kmax, cfg.center)               # [P, E, kmax, d_A]
    perm_b = emotion_subspace_stack(zb, shuffled, fit, kmax, cfg.center)
    nb = zb[neutral_fit]
    neutral_full, _ = principal_subspace(nb, kmax, nb.mean(axis=0))
    if same_width:  # coordinates comparable without a map (self pairs, equal-width models)
        raw_a = emotion_subspace_stack(pa, labels[None], fit, kmax, cfg.center)[0]
        raw_b = emotion_subspace_stack(pb, labels[None], fit, kmax, cfg.center)[0]
    mapped = mapped_bases(full_a, m.weight)                                           # [E, kmax, d_B]
    mapped_perm = mapped_bases(perm_a, m.weight)                                      # [P, E, kmax, d_B]
    mapped_noise = mapped_bases(full_a[None], noise_weights[:, None])                 # [N, E, kmax, d_B]
    if er is not None:
        mapped_random = mapped_bases(emotion_subspace_stack(zr, labels[None], fit, kmax, cfg.center)[0],
                                     random_map.weight)

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

    per_k = {}
    for k in ks:
        after = _overlaps_at(mapped[:, None], full_b[None], k)                      # [E, E]
        diag = np.diag(after)
        random_null = np.stack([random_subspace_overlaps(full_b[i, :k], k, cfg.n_random, rng)
                                for i in range(len(EMOTIONS))])
        perm_null = _overlaps_at(mapped_perm, perm_b, k).mean(axis=1)
        noise_null = _overlaps_at(mapped_noise, full_b[None], k).mean(axis=1)
        entry = {
            "overlap_after": float(diag.mean()),
            "overlap_after_per_emotion": dict(zip(EMOTIONS, map(float, diag))),
            "mismatched_emotions": float(after[~np.eye(len(EMOTIONS), dtype=bool)].mean()),
            "analytic_random": k / zb.shape[1],
            "vs_random_subspace": null_summary(float(diag.mean()), random_null.mean(axis=0)),
            "vs_permuted_labels": null_summary(float(diag.mean()), perm_null),
            "vs_noise_map": null_summary(float(diag.mean()), noise_null),
            "neutral_axes_overlap": float(np.mean(_overlaps_at(neutral_full[None], full_b, k))),
            "principal_angles_deg_first": float(np.mean([principal_angles_deg(mapped[i, :k], full_b[i, :k])[0]
                                                         for i in range(len(EMOTIONS))])),
        }
        if same_width:
            entry["overlap_before"] = float(np.mean(_overlaps_at(raw_a, raw_b, k)))
            entry["analytic_random_before"] = k / pb.shape[1]
        if er is not None:
            entry["random_init_overlap_after"] = float(np.mean(_overlaps_at(mapped_random, full_b, k)))
        per_k[k] = entry
    out["k"] = per_k
    return out, m


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


def similarity_scores(ea: Embedding, eb: Embedding, labels: np.ndarray, split: np.ndarray, n_perm: int,
                      seed: int) -> dict[str, Any]:
    """Width-free comparisons on full-width prepared features: CKA (linear and debiased) with a row-shuffled
    null, and the two models' emotion geometry (`geometry_scores`), each next to a permutation null."""
    cka = cka_with_null(ea.prepared, eb.prepared, n_perm, np.random.default_rng(seed), grams=(ea.gram, eb.gram))
    return {**cka, **geometry_scores(ea.prepared, eb.prepared, labels, split, n_perm, np.random.default_rng(seed + 1))}


def _centroid_distances(x: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances [..., n_pairs] between class centroids; onehot [..., n, n_classes]."""
    cent = np.swapaxes(onehot, -1, -2) @ x / onehot.sum(axis=-2)[..., None]       # [..., C, d]
    diff = cent[..., :, None, :] - cent[..., None, :, :]
    iu = np.triu_indices(onehot.shape[-1], 1)
    return np.linalg.norm(diff, axis=-1)[..., iu[0], iu[1]]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of vector a [m] with each row of b [..., m]."""
    a = (a - a.mean()) / np.linalg.norm(a - a.mean())
    bc = b - b.mean(axis=-1, keepdims=True)
    return bc @ a / np.linalg.norm(bc, axis=-1)


def geometry_scores(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, split: np.ndarray, n_perm: int,
                    rng: np.random.Generator) -> dict[str, Any]:
    """Width-free counterparts of coordinate comparisons: does each model arrange the emotions alike?

    emotion_geometry: Pearson r between the two models' 6 class-centroid distances (gratitude, anger, apology,
    neutral; fit split); null: class labels of B's fit rows permuted. rsa: Spearman between the two models'
    sentence x sentence correlation-distance matrices on the test rows (representational similarity analysis);
    null: B's test sentences permuted. Also each model's own emotion x emotion cosines of the mean-difference
    vectors and their mean absolute difference (descriptive)."""
    from scipy.spatial.distance import pdist, squareform
    from scipy.stats import rankdata

    classes = [*EMOTIONS, REFERENCE]
    fit, test = split == "fit", split == "test"
    onehot = (labels[fit, None] == np.array(classes)[None]).astype(np.float64)       # [n_fit, C]
    da, db = _centroid_distances(xa[fit], onehot), _centroid_distances(xb[fit], onehot)
    perm_onehot = np.stack([onehot[rng.permutation(len(onehot))] for _ in range(n_perm)])
    geometry = null_summary(float(_pearson_rows(da, db[None])[0]),
                            _pearson_rows(da, _centroid_distances(xb[fit], perm_onehot)))
    # Spearman = Pearson of ranks; permuting B's sentences permutes its rank matrix, so rank once and gather.
    rank_a = rankdata(pdist(xa[test], "correlation"))
    rank_b = squareform(rankdata(pdist(xb[test], "correlation")))
    iu = np.triu_indices(int(test.sum()), 1)
    perms = [rng.permutation(int(test.sum())) for _ in range(n_perm)]
    rsa_null = np.array([_pearson_rows(rank_a, rank_b[np.ix_(p, p)][iu])[()] for p in perms])
    rsa = null_summary(float(_pearson_rows(rank_a, rank_b[iu])), rsa_null)
    pairs = [f"{a}-{b}" for i, a in enumerate(EMOTIONS) for b in EMOTIONS[i + 1:]]
    iu3 = np.triu_indices(len(EMOTIONS), 1)

    def cosines(x: np.ndarray) -> np.ndarray:
        v = emotion_differences(x, labels, fit)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return (v @ v.T)[iu3]

    ca, cb = cosines(xa), cosines(xb)
    return {"emotion_geometry": geometry, "rsa": rsa, "emotion_cosines_a": dict(zip(pairs, map(float, ca))),
            "emotion_cosines_b": dict(zip(pairs, map(float, cb))),
            "emotion_cosine_mad": float(np.mean(np.abs(ca - cb)))}


def cka_grid(grams_a: list[np.ndarray], grams_b: list[np.ndarray]) -> np.ndarray:
    """[layers_a, layers_b] linear CKA from centred Gram matrices (`centred_gram` of each layer's prepared
    features): which layers of A correspond to which of B. <Kx, Ky> / (|Kx| |Ky|) = the feature-space form."""
    ga = np.stack([g.ravel() / np.linalg.norm(g) for g in grams_a])
    gb = np.stack([g.ravel() / np.linalg.norm(g) for g in grams_b])
    return ga @ gb.T


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


BY_LAYER_COLUMNS = ("layer_pair", "layer_a", "layer_b", "k", "overlap_after", "overlap_before", "random_null_q95",
                    "perm_null_q95", "noise_null_q95", "random_init_overlap_after", "neutral_axes_overlap",
                    "mismatched_emotions", "cka", "cka_null_q95", "rsa", "rsa_null_q95", "emotion_geometry",
                    "emotion_geometry_null_q95")
# the series of the PNG (the CSV holds them all)
BY_LAYER_SERIES = {"overlap_after": "after map", "overlap_before": "before map (equal widths)",
                   "random_null_q95": "random subspaces q95", "perm_null_q95": "permuted labels q95",
                   "noise_null_q95": "noise map q95", "random_init_overlap_after": "random-init model"}


def by_layer_table(group):
    """The alignment-by-layer plot data of one ordered model pair at one k: fixed columns (BY_LAYER_COLUMNS),
    one row per layer pair in depth order; a score that does not apply (overlap before the map across widths,
    no random-init model) is left empty."""
    import pandas as pd

    g = group.sort_values(["layer_a", "layer_b"]).reset_index(drop=True)
    source = {"overlap_before": "overlap_before", "random_null_q95": "vs_random_subspace.null_q95",
              "perm_null_q95": "vs_permuted_labels.null_q95", "noise_null_q95": "vs_noise_map.null_q95",
              "random_init_overlap_after": "random_init_overlap_after", "cka": "cka.raw", "cka_null_q95": "cka.null_q95",
              "rsa": "rsa.raw", "rsa_null_q95": "rsa.null_q95", "emotion_geometry": "emotion_geometry.raw",
              "emotion_geometry_null_q95": "emotion_geometry.null_q95"}
    frame = pd.DataFrame({"layer_pair": range(len(g))})
    for col in BY_LAYER_COLUMNS[1:]:
        name = source.get(col, col)
        frame[col] = g[name].to_numpy() if name in g else np.nan
    return frame


def write_outputs(results, grids, massive, p, out, plots_dir) -> None:
    """scores.parquet, k-sweep CSVs (dvc plots) and PNGs with null bands, layer x layer CKA heatmaps."""
    from pathlib import Path

    from emotion_circuits.reporting import plots
    from emotion_circuits.store.io import write_parquet

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
    layer_frames = []
    (plots_dir / "by_layer").mkdir(parents=True, exist_ok=True)
    for (a, b), group in primary[primary["k"] == p.k_report].groupby(["a", "b"], sort=True):
        csv = by_layer_table(group)
        csv.to_csv(plots_dir / "by_layer" / f"{a}__{b}.csv", index=False, float_format="%.6g")
        for col, series in BY_LAYER_SERIES.items():
            layer_frames.append(pd.DataFrame({"layer_pair": csv["layer_pair"], "y": csv[col], "series": series,
                                              "pair": _pair(a, b)}))
    plots.lines(pd.concat(layer_frames).dropna(subset=["y"]), "layer_pair", "y", "series",
                out / "plots" / "alignment_by_layer.png", f"overlap by layer pair ({p.primary_variant}, k={p.k_report})",
                ylabel="overlap (mean cos^2)", facet="pair")
    maxshare = pd.DataFrame([{"model": m, "layer": int(k[1:]), "max_share": v} for m, r in massive.items()
                             for k, v in r["max_share_by_layer"].items()])
    plots.lines(maxshare, "layer", "max_share", "model", out / "plots" / "massive_dimension_share.png",
                "largest single-dimension variance share", hline=p.massive_share)


def summarise(results, massive, p, models: Sequence[str] | None = None) -> dict[str, Any]:
    """metrics/alignment.json: per ordered pair a verdict and, per layer pair, the k_report scores with nulls;
    per unordered model pair (`model_pairs`, `lead_pair` = the first pair of two causal LMs) one summary."""
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
                "passes_all_nulls": passes_all_nulls(r),
                # width-free: the models' own emotion geometry compared, no map and no shared coordinates
                "rsa": r["rsa"]["raw"], "rsa_null_mean": r["rsa"]["null_mean"], "rsa_null_q95": r["rsa"]["null_q95"],
                "p_rsa": r["rsa"]["p"], "emotion_geometry": r["emotion_geometry"]["raw"],
                "emotion_geometry_null_mean": r["emotion_geometry"]["null_mean"],
                "emotion_geometry_null_q95": r["emotion_geometry"]["null_q95"],
                "p_emotion_geometry": r["emotion_geometry"]["p"], "emotion_cosine_mad": r["emotion_cosine_mad"]}
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
    models = list(models) if models is not None else sorted({r["a"] for r in results})
    model_pairs, lead = model_pair_summaries(pairs, models)
    return {"settings": {"position": p.position, "hook": p.hook, "reduce_dim": p.reduce_dim, "k_report": p.k_report,
                         "primary_variant": p.primary_variant, "ks": list(p.ks)},
            "pairs": pairs, "model_pairs": model_pairs, "lead_pair": lead, "massive_dimensions": massive}


def _causal(model: str) -> bool | None:
    from emotion_circuits.model.loading import REGISTRY, resolve_spec

    spec = resolve_spec(model)
    return spec.causal if spec.name in REGISTRY else None


def model_pair_summaries(pairs: dict[str, Any], models: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """One entry per unordered pair of distinct models ("a<->b", in params order): both directions' verdicts, the
    share of layer pairs beyond every null, the mean overlap and the width-free scores (RSA, emotion geometry)."""
    out: dict[str, Any] = {}
    lead = None
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            dirs = {d: pairs[d] for d in (_pair(a, b), _pair(b, a)) if d in pairs}
            if not dirs:
                continue
            lps = [lp for e in dirs.values() for lp in e["layer_pairs"].values()]
            fwd = pairs.get(_pair(a, b), {}).get("layer_pairs", {})
            kinds = [_causal(a), _causal(b)]
            key = f"{a}<->{b}"
            out[key] = {
                "models": [a, b], "both_causal": all(kinds), "verdicts": {d: e["verdict"] for d, e in dirs.items()},
                "layer_pairs_beyond_all_nulls": f"{sum(lp['passes_all_nulls'] for lp in lps)}/{len(lps)}",
                "mean_overlap_after": float(np.mean([lp["overlap_after"] for lp in lps])),
                "mean_random_null_q95": float(np.mean([lp["random_null_q95"] for lp in lps])),
                "mean_perm_null_q95": float(np.mean([lp["perm_null_q95"] for lp in lps])),
                "best_layer_pair": max(fwd, key=lambda k: fwd[k]["overlap_after"] - fwd[k]["perm_null_q95"]) if fwd else None,
                # width-free scores are symmetric in the two models: the a -> b rows
                "mean_rsa": float(np.mean([lp["rsa"] for lp in fwd.values()])) if fwd else None,
                "rsa_significant": f"{sum(lp['p_rsa'] < 0.05 for lp in fwd.values())}/{len(fwd)}",
                "mean_emotion_geometry": float(np.mean([lp["emotion_geometry"] for lp in fwd.values()])) if fwd else None,
                "emotion_geometry_significant": f"{sum(lp['p_emotion_geometry'] < 0.05 for lp in fwd.values())}/{len(fwd)}",
            }
            out[key]["verdict"] = " ".join(out[key]["verdicts"].values()) + (
                f" Width-free: RSA {out[key]['mean_rsa']:.2f} (p < 0.05 at {out[key]['rsa_significant']} layer pairs), "
                f"emotion-centroid geometry r = {out[key]['mean_emotion_geometry']:.2f} "
                f"(p < 0.05 at {out[key]['emotion_geometry_significant']})." if fwd else "")
            if lead is None and all(kinds):
                lead = key
    return out, lead


# ----------------------------------------------------------------------------------------------- saved maps

_SIDE_TENSORS = ("shift", "scale", "pca_mean", "pca_basis")


@dataclass
class DirectionMap:
    """The ridge map the alignment stage fitted and scored for one layer pair, with both models' reductions:
    source residual space -> (feature mode, PCA) -> ridge -> target PCA axes -> target residual space."""

    weight: np.ndarray                 # [r_src, r_tgt] (full prepared widths for the unreduced `seeds` variant)
    bias: np.ndarray                   # [r_tgt]
    source: dict[str, Any]             # shift, scale (zscore or None), dropped, pca_mean, pca_basis (None: unreduced), width
    target: dict[str, Any]
    metadata: dict[str, Any]

    @staticmethod
    def from_fit(m: LinearMap, ea: Embedding, eb: Embedding, reduced: bool, metadata: dict[str, Any]) -> "DirectionMap":
        def side(e: Embedding) -> dict[str, Any]:
            return {"shift": e.shift, "scale": e.scale, "dropped": list(e.dropped), "width": e.width,
                    "pca_mean": e.pca_mean if reduced else None, "pca_basis": e.pca_basis if reduced else None}
        return DirectionMap(m.weight, m.bias, side(ea), side(eb), dict(metadata))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Source residuals [n, d_src] -> the map's input coordinates (affine: the stage's `za` rows)."""
        s = self.source
        x = np.asarray(x, dtype=np.float64)
        if s["shift"] is not None:
            x = (x - s["shift"]) / s["scale"]
        x = np.delete(x, s["dropped"], axis=1) if s["dropped"] else x
        return (x - s["pca_mean"]) @ s["pca_basis"].T if s["pca_basis"] is not None else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Source residuals -> predicted target coordinates (the stage's `zb`; its held-out R^2 is scored there)."""
        return self.encode(x) @ self.weight + self.bias

    def apply(self, v: np.ndarray) -> np.ndarray:
        """A direction (or rows of directions) of the source's residual space -> the target's residual space.
        Linear part only (no means, no intercept): the feature scaling, PCA axes and ridge weight of both sides."""
        s, t = self.source, self.target
        v = np.asarray(v, dtype=np.float64)
        single = v.ndim == 1
        v = np.atleast_2d(v)
        if s["scale"] is not None:
            v = v / s["scale"]
        v = np.delete(v, s["dropped"], axis=1) if s["dropped"] else v
        if s["pca_basis"] is not None:
            v = v @ s["pca_basis"].T
        w = v @ self.weight
        if t["pca_basis"] is not None:
            w = w @ t["pca_basis"]
        if t["dropped"]:  # dropped (massive) target dimensions get no component
            full = np.zeros((len(w), t["width"]))
            full[:, np.setdiff1d(np.arange(t["width"]), t["dropped"])] = w
            w = full
        if t["scale"] is not None:
            w = w * t["scale"]
        return w[0] if single else w

    def info(self) -> dict[str, Any]:
        """JSON-able description: the metadata (models, layers, hook, position, variant, alpha, R^2) and widths."""
        return {**self.metadata, "source_width": self.source["width"], "target_width": self.target["width"],
                "source_dropped": list(self.source["dropped"]), "target_dropped": list(self.target["dropped"])}

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.weight": self.weight, f"{prefix}.bias": self.bias}
        for name, side in (("source", self.source), ("target", self.target)):
            out.update({f"{prefix}.{name}.{k}": side[k] for k in _SIDE_TENSORS if side[k] is not None})
        return out


def layer_key(source_layer: int, target_layer: int) -> str:
    return f"L{source_layer:02d}-L{target_layer:02d}"


def map_filename(source: str, target: str) -> str:
    from emotion_circuits.model.extraction import model_dirname

    return f"{model_dirname(source)}__{model_dirname(target)}.safetensors"


def save_direction_maps(path, maps: dict[str, DirectionMap], source: str, target: str, settings: dict[str, Any]) -> None:
    """One safetensors file per ordered model pair, tensors keyed by layer pair (float64: the exact fitted map),
    metadata: models, hook, position, variant, reduce_dim and per layer pair the layers, alpha, R^2, widths."""
    from emotion_circuits.store.io import dumps_json, write_tensors

    tensors: dict[str, np.ndarray] = {}
    pairs = {}
    for key, dm in sorted(maps.items()):
        tensors.update(dm.tensors(key))
        pairs[key] = {k: v for k, v in dm.metadata.items() if k not in settings}
        for name, side in (("source", dm.source), ("target", dm.target)):
            pairs[key][f"{name}_dropped"] = side["dropped"]
            pairs[key][f"{name}_width"] = side["width"]
    meta = {"source": source, "target": target, **settings, "layer_pairs": pairs}
    write_tensors(path, tensors, {k: dumps_json(v) for k, v in meta.items()})  # values as JSON text


def load_direction_map(path_or_dir, source: str, target: str, source_layer: int, target_layer: int) -> DirectionMap:
    """The map the alignment stage fitted from `source` layer to `target` layer (results/alignment/maps/)."""
    from pathlib import Path

    from emotion_circuits.errors import UserError
    from emotion_circuits.store.io import read_tensor_metadata, read_tensors

    path = Path(path_or_dir)
    if path.is_dir():
        path = path / map_filename(source, target)
    if not path.exists():
        raise UserError(f"no alignment maps for {source} -> {target} at {path}: run `dvc repro alignment` with both models")
    meta = {k: json.loads(v) for k, v in read_tensor_metadata(path).items()}
    pairs = meta["layer_pairs"]
    key = layer_key(source_layer, target_layer)
    if meta["source"] != source or meta["target"] != target or key not in pairs:
        raise UserError(f"{path} has no map {source} L{source_layer} -> {target} L{target_layer} "
                        f"(layer pairs: {', '.join(sorted(pairs))})")
    tensors = {k: v.numpy() for k, v in read_tensors(path).items() if k.startswith(key + ".")}
    info = pairs[key]

    def side(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {k: tensors.get(f"{key}.{name}.{k}") for k in _SIDE_TENSORS}
        out.update(dropped=list(info[f"{name}_dropped"]), width=int(info[f"{name}_width"]))
        return out

    settings = {k: v for k, v in meta.items() if k != "layer_pairs"}
    return DirectionMap(tensors[f"{key}.weight"], tensors[f"{key}.bias"], side("source"), side("target"),
                        {**settings, **{k: v for k, v in info.items() if not k.endswith(("_dropped", "_width"))}})
