"""Emotion subspaces of one model's coordinates: per emotion the top principal axes of its fit rows about the
neutral mean (signs aligned with emotion minus neutral), batched over label sets for the permutation null."""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from emotion_circuits import EMOTIONS, REFERENCE


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
