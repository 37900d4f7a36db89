"""Scores that compare two models' representations: subspace overlap (mean cos^2 of principal angles) and its
random-subspace draws, CCA, Procrustes, and the width-free ones (linear and debiased CKA with a row-shuffled
null, RSA, emotion-centroid geometry). Each score next to its null goes through `stats.nulls.vs_null`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import orthogonal_procrustes, subspace_angles
from sklearn.metrics import r2_score

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.alignment.subspaces import emotion_differences
from emotion_circuits.stats.nulls import Alternative, vs_null

if TYPE_CHECKING:
    from emotion_circuits.alignment.features import Embedding


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


def null_summary(raw: float, null: np.ndarray, alternative: Alternative) -> dict[str, Any]:
    """raw next to its null, the columns the alignment outputs have always had (raw, null_mean, null_q95, z, p),
    from `stats.nulls.vs_null` with the null's declared alternative, plus `degenerate`: a null without spread
    (e.g. a self-pair's permuted-label cosines, all 1 to 1e-7) has z None and a tolerance-aware p, and callers
    report it as untestable rather than as evidence either way."""
    s = vs_null(raw, np.asarray(null, dtype=float), alternative)
    return {"raw": raw, "null_mean": s["null_mean"], "null_q95": s["q95"], "z": s["z"], "p": s["p"],
            "degenerate": s["degenerate"]}


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
    return {"cka": null_summary(raw, lin, "greater"),
            "cka_debiased": null_summary(debiased_cka_from_grams(kx, ky), deb, "greater")}


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations via QR + SVD (Bjorck & Golub). Deliberately not sklearn's CCA: that is an
    iterative NIPALS fit per component; this is exact. Inputs must already be reduced below n rows."""
    if x.shape[1] >= x.shape[0] or y.shape[1] >= y.shape[0]:
        raise ValueError("CCA needs fewer dimensions than samples: reduce with PCA first")
    qx, _ = np.linalg.qr(_centre(x))
    qy, _ = np.linalg.qr(_centre(y))
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def overlaps_at(u: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """`overlap` of the top-k rows of u [..., K, d] and v [..., K, d], broadcast over the leading axes."""
    return np.sum((u[..., :k, :] @ np.swapaxes(v[..., :k, :], -1, -2)) ** 2, axis=(-1, -2)) / k


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


def similarity_scores(ea: "Embedding", eb: "Embedding", labels: np.ndarray, split: np.ndarray, n_perm: int,
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
                            _pearson_rows(da, _centroid_distances(xb[fit], perm_onehot)), "greater")
    # Spearman = Pearson of ranks; permuting B's sentences permutes its rank matrix, so rank once and gather.
    rank_a = rankdata(pdist(xa[test], "correlation"))
    rank_b = squareform(rankdata(pdist(xb[test], "correlation")))
    iu = np.triu_indices(int(test.sum()), 1)
    perms = [rng.permutation(int(test.sum())) for _ in range(n_perm)]
    rsa_null = np.array([_pearson_rows(rank_a, rank_b[np.ix_(p, p)][iu])[()] for p in perms])
    rsa = null_summary(float(_pearson_rows(rank_a, rank_b[iu])), rsa_null, "greater")
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
