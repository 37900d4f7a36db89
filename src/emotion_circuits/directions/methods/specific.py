"""`specific`: the emotion vector with the shared "emotional vs bland" component removed. The three emotion vectors
share one large component (pairwise cosines 0.66-0.93): steering along any of them mostly adds "emotional".

Definition: v_e minus its projection on u = unit(mean of the emotion vectors), rescaled to |v_e|. Chosen over the
alternative mean(e) - mean(the emotions' means) because (1) every specific direction is exactly orthogonal to the
shared axis, whatever the emotions' norms (the alternative leaves a shared part when the norms differ), (2) it keeps
neutral as the anchor, so "e vs neutral" still means what it does for `vector`, and (3) it does not force the three
directions to sum to zero (the alternative makes apology = -(gratitude + anger) by construction)."""

from __future__ import annotations

import numpy as np

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.geometry import emotion_vectors
from emotion_circuits.directions.methods import DirectionMethod, at_norms, at_norms_many, register


def remove_shared(vectors: np.ndarray) -> np.ndarray:
    """[..., E, d] vectors minus their projection on the unit mean of the E vectors (the shared axis), float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    shared = vectors.mean(axis=-2, keepdims=True)
    length = np.linalg.norm(shared, axis=-1, keepdims=True)
    unit = shared / np.where(length > 0, length, 1.0)
    return vectors - np.sum(vectors * unit, axis=-1, keepdims=True) * unit


@register
class EmotionSpecific(DirectionMethod):
    """Fitted by the vectors stage on the fit split and stored as `<site>.specific.directions`."""

    name = "specific"
    vectorised_null = True

    def fit(self, x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
        vecs = emotion_vectors(x, labels, emotions, reference).astype(np.float64)
        return at_norms(remove_shared(vecs), np.linalg.norm(vecs.astype(np.float32), axis=1))

    def from_means(self, x: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
        vecs = means[:, :-1] - means[:, -1:]
        return at_norms_many(remove_shared(vecs), np.linalg.norm(vecs, axis=-1))
