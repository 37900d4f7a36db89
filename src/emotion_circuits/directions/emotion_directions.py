"""`Direction` and `EmotionDirections`: emotion directions as values that know where they live (model, site,
position, method), with the arithmetic of the maths (`d["anger"] - d["gratitude"]`, `-1.5 * d`, `d.unit()`),
saved as safetensors with that provenance in the metadata. Steering, alignment and cross-model maps all pass
these around instead of bare arrays keyed by strings."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emotion_circuits import EMOTIONS
from emotion_circuits.errors import DataError
from emotion_circuits.model.site import Site
from emotion_circuits.store.io import read_tensor_metadata, read_tensors, write_tensors

_EPS = 1e-12


def _same_place(a, b, op: str) -> None:
    if (a.model, a.site, a.position) != (b.model, b.site, b.position):
        raise ValueError(f"cannot {op} directions of {a.model}@{a.site}/{a.position} and "
                         f"{b.model}@{b.site}/{b.position}: different places")


@dataclass(frozen=True, eq=False)
class Direction:
    """One direction in one model's residual stream. `label` says what it is (`anger`, `anger-gratitude`)."""

    model: str
    site: Site
    position: str
    method: str
    label: str
    vector: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", np.asarray(self.vector, dtype=np.float32).reshape(-1))

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector))

    def _with(self, vector: np.ndarray, label: str) -> Direction:
        return replace(self, vector=np.asarray(vector, dtype=np.float32), label=label)

    def __add__(self, other: Direction) -> Direction:
        _same_place(self, other, "add")
        return self._with(self.vector + other.vector, f"{self.label}+{other.label}")

    def __sub__(self, other: Direction) -> Direction:
        _same_place(self, other, "subtract")
        return self._with(self.vector - other.vector, f"{self.label}-{other.label}")

    def __mul__(self, c: float) -> Direction:
        return self._with(self.vector * np.float32(c), self.label)

    __rmul__ = __mul__

    def __neg__(self) -> Direction:
        return self._with(-self.vector, f"-{self.label}")

    def unit(self) -> Direction:
        return self._with(self.vector / max(self.norm, _EPS), self.label)

    def scaled_to(self, norm: float) -> Direction:
        """Same direction, L2 norm `norm` (equal-norm controls; pca1 at the vector's norm)."""
        return self.unit() * float(norm)


@dataclass(frozen=True, eq=False)
class EmotionDirections(Mapping[str, Direction]):
    """One direction per emotion at one site of one model: `vectors[i]` belongs to `emotions[i]`."""

    model: str
    site: Site
    position: str
    method: str
    vectors: np.ndarray
    emotions: tuple[str, ...] = EMOTIONS

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] != len(self.emotions):
            raise ValueError(f"vectors must be ({len(self.emotions)}, d), got {v.shape}")
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "emotions", tuple(self.emotions))

    # Mapping: emotion -> Direction
    def __getitem__(self, emotion: str) -> Direction:
        if emotion not in self.emotions:
            raise KeyError(f"no {emotion!r} direction (have: {', '.join(self.emotions)})")
        i = self.emotions.index(emotion)
        return Direction(self.model, self.site, self.position, self.method, emotion, self.vectors[i])

    def __iter__(self) -> Iterator[str]:
        return iter(self.emotions)

    def __len__(self) -> int:
        return len(self.emotions)

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.vectors, axis=1)

    def _with(self, vectors: np.ndarray, **changes) -> EmotionDirections:
        return replace(self, vectors=np.asarray(vectors, dtype=np.float32), **changes)

    def _operand(self, other: EmotionDirections, op: str) -> np.ndarray:
        _same_place(self, other, op)
        if other.emotions != self.emotions:
            raise ValueError(f"cannot {op}: emotions {other.emotions} != {self.emotions}")
        return other.vectors

    def __add__(self, other: EmotionDirections) -> EmotionDirections:
        return self._with(self.vectors + self._operand(other, "add"))

    def __sub__(self, other: EmotionDirections) -> EmotionDirections:
        return self._with(self.vectors - self._operand(other, "subtract"))

    def __mul__(self, c: float) -> EmotionDirections:
        return self._with(self.vectors * np.float32(c))

    __rmul__ = __mul__

    def __neg__(self) -> EmotionDirections:
        return self * -1.0

    def unit(self) -> EmotionDirections:
        return self._with(self.vectors / np.maximum(self.norms(), _EPS)[:, None])

    def scaled_to(self, norms) -> EmotionDirections:
        """Each emotion's direction rescaled to `norms` (a scalar, or one per emotion, or another set's norms)."""
        target = norms.norms() if isinstance(norms, EmotionDirections) else np.broadcast_to(
            np.asarray(norms, dtype=np.float32), (len(self.emotions),))
        return self._with(self.unit().vectors * target[:, None])

    def mapped(self, model: str, site: Site, vectors: np.ndarray, method: str) -> EmotionDirections:
        """The same emotions carried into another model's space (a cross-model map's output)."""
        return replace(self, model=model, site=site, vectors=np.asarray(vectors, np.float32), method=method)

    # storage
    def metadata(self) -> dict[str, str]:
        return {"model": self.model, "site": self.site.name, "position": self.position, "method": self.method,
                "emotions": json.dumps(list(self.emotions))}

    def save(self, path: Path) -> None:
        write_tensors(Path(path), {"directions": self.vectors}, self.metadata())

    @classmethod
    def load(cls, path: Path) -> EmotionDirections:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path} is missing: run the stage that writes these directions")
        meta = read_tensor_metadata(path)
        try:
            return cls(meta["model"], Site.parse(meta["site"]), meta["position"], meta["method"],
                       read_tensors(path)["directions"].numpy(), tuple(json.loads(meta["emotions"])))
        except (KeyError, ValueError) as err:
            raise DataError(f"{path} is not an EmotionDirections file ({err})") from err
