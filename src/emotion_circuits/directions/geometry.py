"""Pure geometry of emotion directions shared by the vectors stage, the direction methods and alignment: mean
differences, principal axes with deterministic signs, cosines, massive dimensions and depth-matched layer pairs.
It imports nothing from the stages' modules, so `vectors` and `alignment` both build on it without a circle."""

from __future__ import annotations

import numpy as np
from sklearn.metrics.pairwise import cosine_similarity

from emotion_circuits import EMOTIONS, REFERENCE


def emotion_vectors(x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
    """[n_emotions, d]: mean(emotion) - mean(reference). The seeds' definition, and steering's raw unit."""
    ref = x[labels == reference].mean(axis=0)
    return np.stack([x[labels == e].mean(axis=0) - ref for e in emotions])


def cosine_table(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarities between rows; across models only meaningful when the widths match."""
    if b is not None and a.shape[1] != b.shape[1]:
        raise ValueError(f"cosines need equal widths, got {a.shape[1]} and {b.shape[1]}")
    return cosine_similarity(a, b)


def fix_signs(components: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Deterministic signs for principal axes (SVD signs are arbitrary).

    Each axis is flipped to have a non-negative dot product with `reference` (the emotion-minus-neutral
    direction); axes orthogonal to it (|dot| tiny) get their largest-magnitude coordinate positive instead.
    """
    comps = components.copy()
    for i, c in enumerate(comps):
        dot = float(c @ reference) if reference is not None else 0.0
        scale = float(np.linalg.norm(reference) * np.linalg.norm(c)) if reference is not None else 0.0
        if scale > 0 and abs(dot) > 1e-8 * scale:
            sign = np.sign(dot)
        else:
            sign = np.sign(c[np.argmax(np.abs(c))]) or 1.0
        comps[i] = sign * c
    return comps


def principal_subspace(x: np.ndarray, k: int, center: np.ndarray | None,
                       sign_reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal axes [k, d] of `x` about `center` (None = uncentred, the seeds' variant) and the
    fraction of the second moment about `center` each explains.

    center = the emotion's own mean gives ordinary PCA; center = the neutral mean gives the directions along
    which emotional sentences sit away from neutral ones (our default for subspace alignment).
    """
    xc = np.asarray(x - center if center is not None else x, dtype=np.float64)
    k = min(k, *xc.shape)
    # Eigen-decomposition of the smaller Gram matrix instead of a full SVD: ~6x faster for the 180 x 576
    # blocks of the permutation nulls, and only the top-k axes are needed.
    if xc.shape[0] < xc.shape[1]:
        evals, evecs = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(evals)[::-1][:k]
        s = np.sqrt(np.clip(evals[order], 0.0, None))
        vt = (xc.T @ evecs[:, order] / np.where(s > 1e-12, s, 1.0)).T
    else:
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        order = np.argsort(evals)[::-1][:k]
        vt = evecs[:, order].T
    total = float(np.sum(xc**2))
    ratio = np.clip(evals[order], 0.0, None) / total if total > 0 else np.zeros(k)
    return fix_signs(vt, sign_reference), ratio


def massive_dimensions(x: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Massive-activation dimensions: those holding more than `share` of the total variance *or* of the
    uncentred second moment (a huge near-constant offset has little variance but dominates uncentred PCA,
    norms and maps). On SmolLM2 single dimensions (308, 507, 17) hold 30-70% of either at various depths.
    Returns (dims, per-dimension share = max of the two)."""
    var, energy = x.var(axis=0), (x.astype(np.float64) ** 2).mean(axis=0)
    shares = np.maximum(var / max(var.sum(), 1e-30), energy / max(energy.sum(), 1e-30))
    return np.flatnonzero(shares > share), shares


def layer_pairs(n_a: int, n_b: int, n_pairs: int) -> list[tuple[int, int]]:
    """Layers at matching relative depth: (round(t (n_a-1)), round(t (n_b-1))) for evenly spaced t."""
    n = max(2, min(n_pairs, n_a, n_b))
    ts = np.linspace(0.0, 1.0, n)
    return [(int(round(t * (n_a - 1))), int(round(t * (n_b - 1)))) for t in ts]


def class_means_many(x: np.ndarray, label_sets: np.ndarray, classes) -> np.ndarray:
    """[n_sets, n_classes, d]: each class's mean of `x` under each row of `label_sets` [n_sets, n] (e.g. permuted
    labels), as one matrix product of the one-hot labels with `x`: the permutation nulls of every direction that is
    a function of class means cost one BLAS call instead of n_sets refits. float64."""
    label_sets = np.atleast_2d(label_sets)
    onehot = np.stack([label_sets == c for c in classes], axis=1).astype(np.float64)  # [P, K, n]
    counts = onehot.sum(axis=2, keepdims=True)
    sums = (onehot.reshape(-1, onehot.shape[2]) @ np.asarray(x, dtype=np.float64)).reshape(*onehot.shape[:2], -1)
    return sums / np.maximum(counts, 1.0)
