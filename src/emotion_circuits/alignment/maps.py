"""The linear map between two models: ridge fits on neutral sentences (batched leave-one-out alpha choice), and the
`DirectionMap` the stage saves (both reductions + the ridge weight), loaded by cross-model steering."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import r2_score

from emotion_circuits.alignment.features import Embedding
from emotion_circuits.alignment.metrics import orthonormal_rows


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
    from emotion_circuits.store.activations import model_dirname

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
