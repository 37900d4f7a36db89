"""Direction methods: how an emotion's activations become one steering direction per emotion. One file per method
in this package, each registering itself in `METHODS`; `steering_common.direction` names one, the vectors stage
stores what each needs and `directions.store.load_directions` reads it back.

To add a method: a new file here with a `DirectionMethod` subclass decorated `@register`, whose `fit` computes
[n_emotions, d] directions from fit-split activations (the base class stores and reads them), plus its test."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emotion_circuits import EMOTIONS, LABELS, REFERENCE
from emotion_circuits.directions.geometry import class_means_many
from emotion_circuits.model.site import Site
from emotion_circuits.registry import Registry, autoload


class DirectionMethod:
    """A direction method. By default the vectors stage saves `fit` under `<site>.<name>.directions` and loading
    reads that key; methods derived from tensors the stage writes anyway (vector, PCA axes) override `stored`/`read`
    so the vectors file keeps its keys."""

    name: str = ""

    def fit(self, x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
        """[n_emotions, d] directions from activations `x` [n, d] with `labels` (the fit split)."""
        raise NotImplementedError

    def fit_permuted(self, x: np.ndarray, label_sets: np.ndarray) -> np.ndarray:
        """[n_sets, n_emotions, d]: `fit` under each row of `label_sets` [n_sets, n] (permuted labels: the vectors
        stage's transfer null). Refits one by one; methods that are functions of class means override it with one
        matrix product (`vectorised_null = True`), which is why they can afford many more permutations."""
        label_sets = np.atleast_2d(label_sets)
        if self.vectorised_null:
            return self.from_means(x, class_means_many(x, label_sets, LABELS), class_counts(label_sets))
        return np.stack([self.fit(x, labels) for labels in label_sets])

    vectorised_null: bool = False

    def from_means(self, x: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """[n_sets, n_emotions, d] from each label set's class means [n_sets, 4, d] and counts [n_sets, 4] (LABELS
        order; `x` for label-free statistics such as a whitening): only methods with `vectorised_null = True`. The
        transfer computes the means once and hands them to every such method."""
        raise NotImplementedError

    def stored(self, x: np.ndarray, labels: np.ndarray, site: Site) -> dict[str, np.ndarray]:
        """{tensor key: array} the vectors stage writes for this method at `site`."""
        return {site.key(self.name, "directions"): self.fit(x, labels).astype(np.float32)}

    def read(self, tensors: Mapping[str, np.ndarray], site: Site) -> np.ndarray:
        """[n_emotions, d] directions at `site` from a vectors file (KeyError names a missing key)."""
        return np.asarray(need(tensors, site.key(self.name, "directions")), dtype=np.float32)


CONSTANT = 1e-6  # a feature whose sd is below this fraction of the largest sd is constant (float noise only)


def need(tensors: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """tensors[key] as a numpy array; a missing key is a KeyError carrying the key (the store words the error)."""
    if key not in tensors:
        raise KeyError(key)
    value = tensors[key]
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def class_counts(label_sets: np.ndarray) -> np.ndarray:
    """[n_sets, 4]: rows of each class in LABELS order per label set."""
    label_sets = np.atleast_2d(label_sets)
    return np.stack([(label_sets == c).sum(axis=1) for c in LABELS], axis=1).astype(np.float64)


def aligned(directions: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each direction's sign flipped to a non-negative dot product with its emotion vector (any leading axes):
    fitted axes have arbitrary signs, steering needs +alpha to mean "more of the emotion"."""
    dots = np.sum(directions * vectors, axis=-1, keepdims=True)
    return np.where(dots < 0, -directions, directions)


def at_norms_many(directions: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """`at_norms` over any leading axes (the permutation nulls' [n_sets, n_emotions, d]); float64, zero rows stay
    zero."""
    length = np.linalg.norm(directions, axis=-1, keepdims=True)
    return np.where(length > 0, directions / np.where(length > 0, length, 1.0), 0.0) * np.asarray(norms)[..., None]


def at_norms(directions: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Each row rescaled to the matching norm (pca1 and probe at the emotion vector's norm, so alpha means the same
    displacement size whatever the method); row by row, float32, exactly as steering always computed it. A zero row
    (e.g. a probe that learnt nothing) has no direction: it stays zero instead of becoming NaN."""
    return np.stack([(d / norm * n).astype(np.float32) if (norm := np.linalg.norm(d)) > 0
                     else np.zeros_like(d, dtype=np.float32) for d, n in zip(directions, norms)])


METHODS: Registry[DirectionMethod] = Registry("direction method")


def register(cls: type[DirectionMethod]) -> type[DirectionMethod]:
    """Class decorator: one instance of `cls` registered under `cls.name`."""
    METHODS.register(cls.name)(cls())
    return cls


autoload(__name__, __path__)
