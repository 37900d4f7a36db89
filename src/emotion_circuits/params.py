"""params.yaml -> typed, validated configs. params.yaml is the only knob file of the pipeline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ParamsError

T = TypeVar("T")

HOOKS = ("resid_pre", "resid_post")
POSITIONS = ("sentence_end", "emotion_tokens")


@dataclass(frozen=True)
class DatasetParams:
    path: str = "data/emotions.jsonl"
    real_world: str = "data/real_world.jsonl"
    steering_prompts: str = "data/steering_prompts.jsonl"
    lexicons: str = "data/lexicons.json"
    test_size: float = 0.25
    profile: str = "baseline"
    smoke_per_emotion: int = 8

    def __post_init__(self) -> None:
        if not 0.0 < float(self.test_size) < 1.0:
            raise ParamsError(f"dataset.test_size must be in (0, 1), got {self.test_size!r}")
        if self.profile not in ("baseline", "smoke"):
            raise ParamsError(f"dataset.profile must be 'baseline' or 'smoke', got {self.profile!r}")
        if int(self.smoke_per_emotion) < 2:
            raise ParamsError(f"dataset.smoke_per_emotion must be >= 2, got {self.smoke_per_emotion!r}")


@dataclass(frozen=True)
class ActivationParams:
    hooks: tuple[str, ...] = HOOKS
    positions: tuple[str, ...] = POSITIONS
    batch_size: int = 32
    prepend_bos: bool = True
    random_init_controls: bool = True
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hooks", tuple(self.hooks))
        object.__setattr__(self, "positions", tuple(self.positions))
        for hook in self.hooks:
            if hook not in HOOKS:
                raise ParamsError(f"activations.hooks: unknown hook point {hook!r} (allowed: {', '.join(HOOKS)})")
        for pos in self.positions:
            if pos not in POSITIONS:
                raise ParamsError(f"activations.positions: unknown position {pos!r} (allowed: {', '.join(POSITIONS)})")
        if not self.hooks or not self.positions:
            raise ParamsError("activations.hooks and activations.positions must not be empty")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ParamsError(f"activations.batch_size must be a positive integer, got {self.batch_size!r}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ParamsError(f"activations.dtype must be float32, float16 or bfloat16, got {self.dtype!r}")


@dataclass(frozen=True)
class VectorParams:
    n_components: int = 8
    probe_hooks: tuple[str, ...] = ("resid_post",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "probe_hooks", tuple(self.probe_hooks))
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ParamsError(f"vectors.n_components must be a positive integer, got {self.n_components!r}")
        for hook in self.probe_hooks:
            if hook not in HOOKS:
                raise ParamsError(f"vectors.probe_hooks: unknown hook point {hook!r} (allowed: {', '.join(HOOKS)})")


@dataclass(frozen=True)
class AlignmentParams:
    position: str = "sentence_end"
    hook: str = "resid_post"
    reduce_dim: int = 48
    ks: tuple[int, ...] = (2, 5, 10, 20)
    k_report: int = 5
    variants: tuple[str, ...] = ("raw", "zscore", "drop_massive", "seeds")
    primary_variant: str = "zscore"
    ridge_alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    n_layer_pairs: int = 6
    n_random: int = 500
    n_perm: int = 50
    n_noise: int = 20
    n_cka_perm: int = 50
    massive_share: float = 0.2

    def __post_init__(self) -> None:
        for name in ("ks", "variants", "ridge_alphas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.position not in POSITIONS:
            raise ParamsError(f"alignment.position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        if self.hook not in HOOKS:
            raise ParamsError(f"alignment.hook must be one of {', '.join(HOOKS)}, got {self.hook!r}")
        known = ("raw", "zscore", "drop_massive", "seeds")
        for v in self.variants:
            if v not in known:
                raise ParamsError(f"alignment.variants: unknown variant {v!r} (allowed: {', '.join(known)})")
        if self.primary_variant not in self.variants:
            raise ParamsError(f"alignment.primary_variant {self.primary_variant!r} is not in alignment.variants")
        if not all(isinstance(k, int) and k >= 1 for k in self.ks) or self.k_report not in self.ks:
            raise ParamsError(f"alignment.ks must be positive integers containing k_report={self.k_report!r}")
        if max(self.ks) >= self.reduce_dim:
            raise ParamsError(f"alignment.reduce_dim ({self.reduce_dim}) must exceed every k in alignment.ks")
        for name in ("n_random", "n_perm", "n_noise", "n_cka_perm", "n_layer_pairs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ParamsError(f"alignment.{name} must be an integer >= 2, got {getattr(self, name)!r}")
        if not 0.0 < float(self.massive_share) < 1.0:
            raise ParamsError(f"alignment.massive_share must be in (0, 1), got {self.massive_share!r}")


@dataclass(frozen=True)
class SteeringParams:
    model: str = "smollm2-135m"
    vector_position: str = "sentence_end"
    direction: str = "vector"
    emotions: tuple[str, ...] = ("gratitude", "anger", "apology")
    layers: tuple[int, ...] = (7, 15, 22)
    alphas: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
    n_prompts: int = 12
    n_random: int = 20
    random_alphas: tuple[float, ...] = (1.0, 2.0)
    random_prompts: int = 6
    window: str = "last"
    window_n: int = 3
    positions: tuple[int, ...] = ()
    schedule: str = "constant"
    decay: float = 0.7
    iterative: bool = False
    unit: str = "raw"
    max_new_tokens: int = 30
    batch_size: int = 256
    prepend_bos: bool = True
    evaluators: tuple[str, ...] = ("lexicon", "embedding")
    primary_metric: str = "p"
    nll_threshold: float = 1.0
    layer: int = 15
    single_prompts: int = 24
    single_random: int = 10
    cross_model_source: str | None = None

    def __post_init__(self) -> None:
        from . import EMOTIONS

        for name in ("emotions", "layers", "alphas", "random_alphas", "positions", "evaluators"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for e in self.emotions:
            if e not in EMOTIONS:
                raise ParamsError(f"steering.emotions: unknown emotion {e!r} (allowed: {', '.join(EMOTIONS)})")
        for a in (*self.alphas, *self.random_alphas):
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise ParamsError(f"steering alphas must be numbers, got {a!r}")
        for name in ("layers", "positions"):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in getattr(self, name)):
                raise ParamsError(f"steering.{name} must be non-negative integers, got {list(getattr(self, name))}")
        if self.vector_position not in POSITIONS:
            raise ParamsError(f"steering.vector_position must be one of {', '.join(POSITIONS)}")
        if self.window not in ("last", "positions", "generated", "all"):
            raise ParamsError(f"steering.window must be last, positions, generated or all, got {self.window!r}")
        if self.schedule not in ("constant", "linear", "exp"):
            raise ParamsError(f"steering.schedule must be constant, linear or exp, got {self.schedule!r}")
        if self.direction not in ("vector", "pca1"):
            raise ParamsError(f"steering.direction must be vector or pca1, got {self.direction!r}")
        if self.unit not in ("raw", "norm"):
            raise ParamsError(f"steering.unit must be raw or norm, got {self.unit!r}")
        if self.primary_metric not in ("p", "lex", "vader"):
            raise ParamsError(f"steering.primary_metric must be p, lex or vader, got {self.primary_metric!r}")
        for name in ("n_prompts", "n_random", "random_prompts", "max_new_tokens", "batch_size", "single_prompts",
                     "single_random"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ParamsError(f"steering.{name} must be a positive integer, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Params:
    seed: int = 0
    models: tuple[str, ...] = ("smollm2-135m",)
    dataset: DatasetParams = field(default_factory=DatasetParams)
    activations: ActivationParams = field(default_factory=ActivationParams)
    vectors: VectorParams = field(default_factory=VectorParams)
    alignment: AlignmentParams = field(default_factory=AlignmentParams)
    steering: SteeringParams = field(default_factory=SteeringParams)
    alpha: float = 0.8

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ParamsError("models must list at least one model")
        if len(set(self.models)) != len(self.models):
            raise ParamsError(f"models contains duplicates: {list(self.models)}")
        if not isinstance(self.seed, int):
            raise ParamsError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ParamsError(f"alpha must be a number, got {self.alpha!r}")


def _build(cls: type[T], section: Any, name: str) -> T:
    if section is None:
        return cls()
    if not isinstance(section, dict):
        raise ParamsError(f"params section {name!r} must be a mapping, got {type(section).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ParamsError(f"unknown key(s) in params section {name!r}: {', '.join(unknown)}")
    try:
        return cls(**section)
    except TypeError as exc:  # wrong value types that the dataclass itself rejects
        raise ParamsError(f"params section {name!r}: {exc}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; unknown keys are errors (typos must not be silently ignored)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    top = {k: raw[k] for k in ("seed", "models", "alpha") if k in raw}
    return Params(
        **top,
        dataset=_build(DatasetParams, raw.get("dataset"), "dataset"),
        activations=_build(ActivationParams, raw.get("activations"), "activations"),
        vectors=_build(VectorParams, raw.get("vectors"), "vectors"),
        alignment=_build(AlignmentParams, raw.get("alignment"), "alignment"),
        steering=_build(SteeringParams, raw.get("steering"), "steering"),
    )
