"""Direction methods: how an emotion's activations become one steering direction per emotion. One file per method
in this package, each registering itself in `METHODS`; `steering_common.direction` names one, the vectors stage
stores what each needs and `directions.store.load_directions` reads it back.

To add a method: a new file here with a `DirectionMethod` subclass decorated `@register`, whose `fit` computes
[n_emotions, d] directions from fit-split activations (the base class stores and reads them), plus its test."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emotion_circuits import EMOTIONS, REFERENCE
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

    def stored(self, x: np.ndarray, labels: np.ndarray, site: Site) -> dict[str, np.ndarray]:
        """{tensor key: array} the vectors stage writes for this method at `site`."""
        return {site.key(self.name, "directions"): self.fit(x, labels).astype(np.float32)}

    def read(self, tensors: Mapping[str, np.ndarray], site: Site) -> np.ndarray:
        """[n_emotions, d] directions at `site` from a vectors file (KeyError names a missing key)."""
        return np.asarray(need(tensors, site.key(self.name, "directions")), dtype=np.float32)


def need(tensors: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """tensors[key] as a numpy array; a missing key is a KeyError carrying the key (the store words the error)."""
    if key not in tensors:
        raise KeyError(key)
    value = tensors[key]
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


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
