"""`pca1`: each emotion's first principal axis (PCA of its own fit-split activations about their mean), its sign
aligned with the emotion vector and rescaled to the vector's norm. The direction along which that emotion's
sentences vary most: a check that steering works along the emotion's own dominant axis, not only its mean shift."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.geometry import emotion_vectors, principal_subspace
from emotion_circuits.directions.methods import DirectionMethod, at_norms, need, register
from emotion_circuits.model.site import Site


@register
class FirstPrincipalAxis(DirectionMethod):
    """Reads the vectors stage's `<site>.pca.<emotion>.components` row 0 (fitted the same way as `fit`)."""

    name = "pca1"

    def fit(self, x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
        vecs = emotion_vectors(x, labels, emotions, reference)
        axes = []
        for e, v in zip(emotions, vecs):
            xs = x[labels == e]
            axes.append(principal_subspace(xs, 1, xs.mean(axis=0), v)[0][0])
        return at_norms(np.stack(axes).astype(np.float32), np.linalg.norm(vecs.astype(np.float32), axis=1))

    def stored(self, x: np.ndarray, labels: np.ndarray, site: Site) -> dict[str, np.ndarray]:
        return {}  # the vectors stage writes every emotion's PCA axes itself (`<site>.pca.<emotion>.components`)

    def read(self, tensors: Mapping[str, np.ndarray], site: Site) -> np.ndarray:
        vecs = need(tensors, site.key("emotion_vectors")).astype(np.float32)
        axes = np.stack([need(tensors, site.key("pca", e, "components"))[0] for e in EMOTIONS])
        return at_norms(axes, [np.linalg.norm(v) for v in vecs])
