"""`vector`: the emotion vector, mean(emotion) - mean(neutral) on the fit split. The seeds' definition and the
default: no fitting choices, and steering's raw unit of alpha is its length."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.geometry import emotion_vectors
from emotion_circuits.directions.methods import DirectionMethod, need, register
from emotion_circuits.model.site import Site


@register
class MeanDifference(DirectionMethod):
    """Difference of class means: what the vectors stage saves as `<site>.emotion_vectors`."""

    name = "vector"

    def fit(self, x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
        return emotion_vectors(x, labels, emotions, reference)

    vectorised_null = True

    def from_means(self, x: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return means[:, :-1] - means[:, -1:]

    def stored(self, x: np.ndarray, labels: np.ndarray, site: Site) -> dict[str, np.ndarray]:
        return {}  # the vectors stage writes `<site>.emotion_vectors` itself (its norms and cosines use them)

    def read(self, tensors: Mapping[str, np.ndarray], site: Site) -> np.ndarray:
        return need(tensors, site.key("emotion_vectors")).astype(np.float32)
