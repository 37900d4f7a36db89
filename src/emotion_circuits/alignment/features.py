"""Feature modes and PCA reductions of one model's layer (fit-split statistics only), cached per (model, layer,
mode): what the maps and subspaces of the alignment stage are computed on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from emotion_circuits.alignment.metrics import centred_gram
from emotion_circuits.directions.geometry import massive_dimensions


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
