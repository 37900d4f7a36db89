"""params.yaml -> typed, validated configs. params.yaml is the only knob file of the pipeline."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emotion_circuits.errors import ParamsError

T = TypeVar("T")

HOOKS = ("resid_pre", "resid_post")
POSITIONS = ("sentence_end", "emotion_tokens")


SOURCES = ("handwritten", "goemotions", "both")  # dataset.source: hand-written rows, real text, or both


@dataclass(frozen=True)
class DatasetParams:
    path: str = "data/emotions.jsonl"
    real_world: str = "data/real_world.jsonl"
    steering_prompts: str = "data/steering_prompts.jsonl"
    lexicons: str = "data/lexicons.json"
    test_size: float = 0.25
    profile: str = "baseline"
    smoke_per_emotion: int = 8
    max_tokens: int = 256  # rows with more words are rejected by the dataset stage, more tokens by model stages
    source: str = "both"                  # handwritten | goemotions | both: which rows make the sentences
    goemotions: str = "data/goemotions/goemotions.jsonl"   # the attributed GoEmotions train-split subset
    goemotions_per_class: int = 240       # its first N rows per class are sentences; the rest only train judges

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ParamsError(f"dataset.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        for name in ("path", "real_world", "steering_prompts", "lexicons", "goemotions"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ParamsError(f"dataset.{name} must be a file path, got {getattr(self, name)!r}")
        # type first: "abc", true or NaN must be one line, not a ValueError from float()/int()
        size = self.test_size
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0.0 < size < 1.0:
            raise ParamsError(f"dataset.test_size must be a number in (0, 1), got {size!r}")
        if not isinstance(self.profile, str) or self.profile not in ("baseline", "smoke"):
            raise ParamsError(f"dataset.profile must be 'baseline' or 'smoke', got {self.profile!r}")
        _check_ints("dataset", self, ("smoke_per_emotion",), minimum=2)
        _check_ints("dataset", self, ("max_tokens",))


DTYPES = ("auto", "float32", "float16", "bfloat16")


def _check_ints(section: str, obj: Any, names: Sequence[str], minimum: int = 1) -> None:
    """Each named field of `obj` is an integer (not a bool) >= `minimum`; one clear error naming the key."""
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ParamsError(f"{section}.{name} must be {what}, got {value!r}")


def _check_device(section: str, device: str, dtype: str) -> None:
    """`auto` picks cuda > mps > cpu (and bfloat16 on GPUs, float32 on CPU); explicit values pass through."""
    if not isinstance(device, str) or not (device in ("auto", "cpu", "mps") or device.startswith("cuda")):
        raise ParamsError(f"{section}.device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
    if dtype not in DTYPES:
        raise ParamsError(f"{section}.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


@dataclass(frozen=True)
class ActivationParams:
    hooks: tuple[str, ...] = HOOKS
    positions: tuple[str, ...] = POSITIONS
    batch_size: int = 32
    prepend_bos: bool = True
    random_init_controls: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    shard_rows: int = 256
    max_batch_tokens: int = 8192  # padded tokens per forward: with dataset.max_tokens, what bounds memory

    def __post_init__(self) -> None:
        _check_device("activations", self.device, self.dtype)
        _check_ints("activations", self, ("shard_rows", "batch_size", "max_batch_tokens"))
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


@dataclass(frozen=True)
class VectorParams:
    n_components: int = 8
    probe_hooks: tuple[str, ...] = ("resid_post",)
    # cross-source transfer (dataset.source = both): directions / probes fit on one source, scored on the other
    transfer_methods: tuple[str, ...] = ("vector", "specific", "lda", "probe")  # direction methods scored
    transfer_n_perm: int = 200            # permuted-label directions per method, layer and emotion (the null)
    probe_n_perm: int = 20                # permuted-label 4-way probes per layer (the probes' null)

    def __post_init__(self) -> None:
        object.__setattr__(self, "probe_hooks", tuple(self.probe_hooks))
        object.__setattr__(self, "transfer_methods", tuple(self.transfer_methods))
        _check_ints("vectors", self, ("n_components",))
        for hook in self.probe_hooks:
            if hook not in HOOKS:
                raise ParamsError(f"vectors.probe_hooks: unknown hook point {hook!r} (allowed: {', '.join(HOOKS)})")
        from emotion_circuits.directions.methods import METHODS  # the registry: a new method is one file

        METHODS.check("vectors.transfer_methods", self.transfer_methods)


@dataclass(frozen=True)
class JudgesParams:
    """Stage `judges`: every evaluator scored on held-out hand-written and real text it was not trained on."""

    evaluators: tuple[str, ...] = ("lexicon", "vader", "embedding")
    n_boot: int = 1000                    # bootstrap resamples of the held-out rows (CI of balanced accuracy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluators", tuple(self.evaluators))


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
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("ks", "variants", "ridge_alphas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.position not in POSITIONS:
            raise ParamsError(f"alignment.position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        if self.hook not in HOOKS:
            raise ParamsError(f"alignment.hook must be one of {', '.join(HOOKS)}, got {self.hook!r}")
        from emotion_circuits.alignment.variants import VARIANTS

        for v in self.variants:
            if v not in VARIANTS:
                raise ParamsError(f"alignment.variants: unknown variant {v!r} (allowed: {', '.join(VARIANTS)})")
        if self.primary_variant not in self.variants:
            raise ParamsError(f"alignment.primary_variant {self.primary_variant!r} is not in alignment.variants")
        if not all(isinstance(k, int) and k >= 1 for k in self.ks) or self.k_report not in self.ks:
            raise ParamsError(f"alignment.ks must be positive integers containing k_report={self.k_report!r}")
        if max(self.ks) >= self.reduce_dim:
            raise ParamsError(f"alignment.reduce_dim ({self.reduce_dim}) must exceed every k in alignment.ks")
        _check_ints("alignment", self, ("n_random", "n_perm", "n_noise", "n_cka_perm", "n_layer_pairs"), 2)
        _check_ints("alignment", self, ("workers",), 0)
        if not 0.0 < float(self.massive_share) < 1.0:
            raise ParamsError(f"alignment.massive_share must be in (0, 1), got {self.massive_share!r}")


def _check_alphas(section: str, name: str, values: Sequence[Any]) -> None:
    for a in values:
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise ParamsError(f"{section}.{name} must be numbers, got {a!r}")


def _check_layers(section: str, name: str, values: Sequence[Any]) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ParamsError(f"{section}.{name} must be non-negative integers, got {list(values)}")


@dataclass(frozen=True)
class SteeringCommonParams:
    """The steering engine's knobs shared by `steering_sweep`, `steering` and `cross_steering`: which vectors,
    where and how they are added (window, schedule, unit), generation, scoring and the model's device."""

    model: str = "smollm2-135m"
    vector_position: str = "sentence_end"
    direction: str = "vector"
    emotions: tuple[str, ...] = ("gratitude", "anger", "apology")
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
    evaluators: tuple[str, ...] = ("keyword", "lexicon", "embedding")
    primary_metric: str = "kw"
    nll_threshold: float = 1.0
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        from emotion_circuits import EMOTIONS

        section = "steering_common"
        _check_device(section, self.device, self.dtype)
        for name in ("emotions", "positions", "evaluators"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for e in self.emotions:
            if e not in EMOTIONS:
                raise ParamsError(f"{section}.emotions: unknown emotion {e!r} (allowed: {', '.join(EMOTIONS)})")
        _check_layers(section, "positions", self.positions)
        choices = {"vector_position": POSITIONS, "window": ("last", "positions", "generated", "all"),
                   "schedule": ("constant", "linear", "exp"), "unit": ("raw", "norm")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ParamsError(f"{section}.{name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        _check_ints(section, self, ("window_n", "max_new_tokens", "batch_size"))
        from emotion_circuits.directions.methods import METHODS  # the registries: an extension is one file
        from emotion_circuits.evaluation import EVALUATORS
        from emotion_circuits.evaluation.catalog import check_families

        METHODS.check(f"{section}.direction", self.direction)
        EVALUATORS.check(f"{section}.evaluators", self.evaluators)
        check_families(f"{section}.primary_metric", [self.primary_metric])


@dataclass(frozen=True)
class SteeringSweepParams:
    """Stage `steering_sweep`: every named setting (`steering.settings`) over its layers x alphas on the selection
    split of prompts, the equal-norm random band of `random_settings`, and each emotion's pick for confirmation."""

    layers: tuple[int, ...] = (7, 15, 22)
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0)
    settings: dict = field(default_factory=lambda: {"seeds": {"vector_position": "emotion_tokens", "window": "all"},
                                                    "last3": {"window": "last", "window_n": 3}})
    n_prompts: int = 34
    n_random: int = 6
    random_prompts: int = 6
    random_settings: tuple[str, ...] = ("seeds",)

    def __post_init__(self) -> None:
        for name in ("layers", "alphas", "random_settings"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.settings, dict) or not self.settings:
            raise ParamsError(f"steering_sweep.settings must map setting names to overrides, got {self.settings!r}")
        object.__setattr__(self, "settings", {str(k): dict(v or {}) for k, v in self.settings.items()})
        _check_alphas("steering_sweep", "alphas", self.alphas)
        _check_layers("steering_sweep", "layers", self.layers)
        _check_ints("steering_sweep", self, ("n_prompts", "random_prompts"))
        _check_ints("steering_sweep", self, ("n_random",), 0)  # 0: no random band
        unknown = [r for r in self.random_settings if r not in self.settings]
        if unknown:
            raise ParamsError(f"steering_sweep.random_settings: {unknown} are not among steering_sweep.settings "
                              f"({', '.join(self.settings)})")


@dataclass(frozen=True)
class SteeringConfirmParams:
    """Stage `steering_confirm`: each emotion's picks (seeds' setting, best within budget) on the disjoint
    confirmation split against `n_random` equal-norm random directions, with the dose-response over `dose`."""

    n_prompts: int = 64
    n_random: int = 50
    random_per_prompt: int = 4
    dose: tuple[float, ...] = (-1.0, 0.5, 1.5)
    real_world: bool = True
    n_examples: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "dose", tuple(self.dose))
        _check_ints("steering_confirm", self, ("n_prompts", "n_random", "random_per_prompt", "n_examples"))
        if self.random_per_prompt > self.n_random:
            raise ParamsError(f"steering_confirm.random_per_prompt ({self.random_per_prompt}) must be at most "
                              f"n_random ({self.n_random})")
        if 0.0 in self.dose or 1.0 in self.dose:
            raise ParamsError("steering_confirm.dose lists multiples of the picked alpha besides 0 (the unsteered "
                              "baseline) and 1 (the pick itself), which always run")


@dataclass(frozen=True)
class SteeringParams:
    """Stage `steering`: the top-level `alpha` at one layer, over neutral prompts and the real-world texts."""

    layer: int = 15
    n_prompts: int = 24
    n_random: int = 10
    nll_budget: float = 0.25          # fluency budget of a pick: NLL rise (nats/token) under the unsteered model
    degenerate_budget: float = 0.1    # ... and rise in the share of degenerate (looping) continuations

    def __post_init__(self) -> None:
        _check_ints("steering", self, ("layer",), 0)
        _check_ints("steering", self, ("n_prompts", "n_random"))


@dataclass(frozen=True)
class CrossSteeringParams:
    """Stage `cross_steering`: each causal model's emotion vectors mapped (through the alignment stage's saved map)
    into each other causal model and steered there at the top-level `alpha`, with the `steering` section's window,
    schedule and generation settings."""

    models: str | tuple[str, ...] = "auto"   # auto: every causal model in `models`
    depth: float = 0.5
    n_prompts: int = 12
    n_random: int = 24

    def __post_init__(self) -> None:
        if self.models == "auto":
            pass
        elif isinstance(self.models, str) or not isinstance(self.models, (list, tuple)):
            raise ParamsError(f"cross_steering.models must be auto or a list of model names, got {self.models!r}")
        else:
            object.__setattr__(self, "models", tuple(self.models))
        if len(self.models) == 1 or len(set(self.models)) != len(self.models):
            raise ParamsError(f"cross_steering.models must list two or more distinct models (or none), "
                              f"got {list(self.models)}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, (int, float)) or not 0 <= self.depth <= 1:
            raise ParamsError(f"cross_steering.depth must be a number in [0, 1], got {self.depth!r}")
        _check_ints("cross_steering", self, ("n_prompts", "n_random"))


@dataclass(frozen=True)
class StatisticsParams:
    """Stage `statistics`: resampling sizes, CI level/method, FDR level and power targets."""

    n_boot: int = 2000                       # bootstrap resamples per effect (scipy.stats.bootstrap)
    n_perm: int = 2000                       # permutations per effect (scipy.stats.permutation_test)
    ci_level: float = 0.95
    ci_method: str = "BCa"                   # BCa | percentile | basic
    fdr_alpha: float = 0.05                  # Benjamini-Hochberg level within each family of tests
    power: float = 0.8                       # target power of the sample-size analysis
    power_alpha: float = 0.05
    power_ds: tuple[float, ...] = (0.2, 0.5)  # effect sizes (Cohen's d) of the power analysis
    metric_families: tuple[str, ...] = ("kw", "p", "lex", "vader")  # steering metrics tested (own-emotion metric)

    def __post_init__(self) -> None:
        object.__setattr__(self, "power_ds", tuple(self.power_ds))
        object.__setattr__(self, "metric_families", tuple(self.metric_families))
        _check_ints("statistics", self, ("n_boot", "n_perm"), 100)
        for name in ("ci_level", "fdr_alpha", "power", "power_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise ParamsError(f"statistics.{name} must be in (0, 1), got {value!r}")
        if self.ci_method not in ("BCa", "percentile", "basic"):
            raise ParamsError(f"statistics.ci_method must be BCa, percentile or basic, got {self.ci_method!r}")
        if not self.power_ds or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0
                                        for d in self.power_ds):
            raise ParamsError(f"statistics.power_ds must be positive numbers, got {list(self.power_ds)}")
        from emotion_circuits.evaluation.catalog import check_families  # the registered evaluators' families

        check_families("statistics.metric_families", self.metric_families)


@dataclass(frozen=True)
class HeadParams:
    """The model and sentence selection every head stage (`head_screening`, `head_patching`, `circuits`) reads."""

    model: str = "smollm2-135m"
    split: str = "fit"                       # fit | test | all: where the screened sentences come from
    source: str = "handwritten"              # handwritten | goemotions | both: which dataset source's sentences
    n_sentences: int = 8                     # per emotion (0 = all of the split); exact screening is ~4 s/sentence
    batch_size: int = 8                      # sentences per clean pass (x n_heads rows per resumed forward)
    prepend_bos: bool = True
    device: str = "cpu"                      # auto = cuda > mps > cpu
    dtype: str = "float32"                   # auto = bfloat16 on GPUs, float32 on CPU

    def __post_init__(self) -> None:
        _check_device("heads", self.device, self.dtype)
        if self.split not in ("fit", "test", "all"):
            raise ParamsError(f"heads.split must be fit, test or all, got {self.split!r}")
        if self.source not in SOURCES:
            raise ParamsError(f"heads.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        _check_ints("heads", self, ("n_sentences",), 0)
        _check_ints("heads", self, ("batch_size",))


@dataclass(frozen=True)
class HeadScreeningParams:
    """Stage `head_screening`: how heads are knocked out (also what `head_patching` ablates), the attribution
    screen and the generation metric of the top heads."""

    ablation: str = "zero"                   # zero | mean (mean z over the screened + neutral sentences)
    attribution: bool = True                 # also a first-order (attribution) screen of every head, all splits
    attribution_sentences: int = 0           # per emotion for that screen (0 = every emotional sentence)
    evaluate_top_n: int = 2                  # top heads per emotion re-scored by generation (0 disables)
    evaluators: tuple[str, ...] = ("lexicon",)
    n_generate: int = 8                      # emotional sentences continued per head for the generation metric
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        section = "head_screening"
        object.__setattr__(self, "evaluators", tuple(self.evaluators))
        if self.ablation not in ("zero", "mean"):
            raise ParamsError(f"{section}.ablation must be zero or mean, got {self.ablation!r}")
        if not isinstance(self.attribution, bool):
            raise ParamsError(f"{section}.attribution must be true or false, got {self.attribution!r}")
        _check_ints(section, self, ("evaluate_top_n", "attribution_sentences"), 0)
        _check_ints(section, self, ("n_generate", "max_new_tokens"))
        from emotion_circuits.evaluation import EVALUATORS

        EVALUATORS.check(f"{section}.evaluators", self.evaluators)


@dataclass(frozen=True)
class HeadPatchingParams:
    """Stage `head_patching`: which heads are ablated and patched, in which modes, against how many random sets."""

    top_k: int = 5                           # top heads per emotion patched singly and jointly (also circuits')
    patch_heads: tuple[str, ...] = ()        # explicit heads ("L3H5", ...) instead of the screening's top_k
    patch_modes: tuple[str, ...] = ("result", "v_only", "pattern_v")
    n_random_sets: int = 10                  # random same-size head sets

    def __post_init__(self) -> None:
        import re

        section = "head_patching"
        for name in ("patch_heads", "patch_modes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for mode in self.patch_modes:
            if mode not in ("result", "v_only", "pattern_v"):
                raise ParamsError(f"{section}.patch_modes: unknown mode {mode!r} (allowed: result, v_only, "
                                  f"pattern_v)")
        for head in self.patch_heads:
            if not isinstance(head, str) or not re.fullmatch(r"L\d+H\d+", head):
                raise ParamsError(f"{section}.patch_heads entries look like 'L3H5', got {head!r}")
        _check_ints(section, self, ("top_k", "n_random_sets"))


@dataclass(frozen=True)
class CircuitParams:
    """Stage `circuits`: MLP neurons ablated against random neuron sets, and the OV/QK token tables."""

    n_neurons: int = 20                      # top salient MLP neurons ablated jointly per emotion
    n_random_sets: int = 10                  # random same-size neuron sets
    n_tokens: int = 10                       # rows of the OV/QK top-token tables

    def __post_init__(self) -> None:
        _check_ints("circuits", self, ("n_neurons", "n_random_sets", "n_tokens"))


@dataclass(frozen=True)
class ExecutionParams:
    """How heavy stages fan out when `executor: ray` (identical chunks, and so identical outs, under `local`).

    `executor` is the top-level `executor` key (`Params` copies it in), so this one frozen object is all that
    `runtime.executor` needs, and all that a stage hands it."""

    chunk_size: int = 512
    ray_address: str | None = None
    ray_workers: int = 2
    executor: str = "local"

    def __post_init__(self) -> None:
        if self.executor not in ("local", "ray"):
            raise ParamsError(f"executor must be local or ray, got {self.executor!r}")
        _check_ints("execution", self, ("chunk_size", "ray_workers"))
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ParamsError(f"execution.ray_address must be null or a string, got {self.ray_address!r}")


@dataclass(frozen=True)
class Params:
    seed: int = 0
    models: tuple[str, ...] = ("smollm2-135m",)
    # data and extraction
    dataset: DatasetParams = field(default_factory=DatasetParams)
    activations: ActivationParams = field(default_factory=ActivationParams)
    # geometry across models
    vectors: VectorParams = field(default_factory=VectorParams)
    judges: JudgesParams = field(default_factory=JudgesParams)
    alignment: AlignmentParams = field(default_factory=AlignmentParams)
    # steering (top-level `alpha`: the single-condition stage's strength)
    alpha: float = 0.8
    steering_common: SteeringCommonParams = field(default_factory=SteeringCommonParams)
    steering_sweep: SteeringSweepParams = field(default_factory=SteeringSweepParams)
    steering: SteeringParams = field(default_factory=SteeringParams)
    steering_confirm: SteeringConfirmParams = field(default_factory=SteeringConfirmParams)
    cross_steering: CrossSteeringParams = field(default_factory=CrossSteeringParams)
    # heads and neurons
    heads: HeadParams = field(default_factory=HeadParams)
    head_screening: HeadScreeningParams = field(default_factory=HeadScreeningParams)
    head_patching: HeadPatchingParams = field(default_factory=HeadPatchingParams)
    circuits: CircuitParams = field(default_factory=CircuitParams)
    # testing, and where heavy stages run
    statistics: StatisticsParams = field(default_factory=StatisticsParams)
    executor: str = "local"
    execution: ExecutionParams = field(default_factory=ExecutionParams)

    def __post_init__(self) -> None:
        object.__setattr__(self, "execution", dataclasses.replace(self.execution, executor=self.executor))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ParamsError("models must list at least one model")
        if len(set(self.models)) != len(self.models):
            raise ParamsError(f"models contains duplicates: {list(self.models)}")
        if not isinstance(self.seed, int):
            raise ParamsError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ParamsError(f"alpha must be a number, got {self.alpha!r}")
        from emotion_circuits.steering.settings import settings_from  # each setting is steering_common + overrides

        g = self.steering_sweep
        settings_from(self.steering_common, g.settings, g.layers, g.alphas)
        missing = ([] if self.cross_steering.models == "auto" else
                   [m for m in self.cross_steering.models if m not in self.models])
        if missing:
            raise ParamsError(f"cross_steering.models {missing} are not in `models` (they need activations, "
                              f"vectors and alignment maps)")


@dataclass(frozen=True)
class Range:
    """The allowed interval of a number (or of each number of a list) and whether a list may be empty."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    nonempty: bool = False

    def holds(self, v: float) -> bool:
        return ((self.lo is None or (v > self.lo if self.open_lo else v >= self.lo)) and
                (self.hi is None or (v < self.hi if self.open_hi else v <= self.hi)))

    def text(self) -> str:
        lo, hi = (None if v is None else int(v) if float(v).is_integer() else v for v in (self.lo, self.hi))
        if lo is not None and hi is not None:
            return f"in {'(' if self.open_lo else '['}{lo}, {hi}{')' if self.open_hi else ']'}"
        if lo is not None:
            return f"{'>' if self.open_lo else '>='} {lo}"
        return f"{'<' if self.open_hi else '<='} {hi}"


# Ranges by dotted key, on top of the type every field's annotation gives (checked for all sections by
# `_conform`); choices and cross-field rules stay in each dataclass's __post_init__.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),  # numpy's seed range
    "models": Range(nonempty=True),
    "alignment.reduce_dim": Range(2),
    "alignment.ks": Range(1, nonempty=True),
    "alignment.k_report": Range(1),
    "alignment.ridge_alphas": Range(0, open_lo=True, nonempty=True),
    "alignment.massive_share": Range(0, 1, True, True),
    "vectors.probe_hooks": Range(nonempty=True),
    "vectors.transfer_n_perm": Range(1),
    "vectors.probe_n_perm": Range(1),
    "dataset.goemotions_per_class": Range(2),
    "judges.evaluators": Range(nonempty=True),
    "judges.n_boot": Range(1),
    "steering_common.emotions": Range(nonempty=True),
    "steering_common.window_n": Range(1),
    "steering_common.positions": Range(0),
    "steering_common.decay": Range(0, 1, open_lo=True),
    "steering_common.nll_threshold": Range(0, open_lo=True),
    "steering_common.evaluators": Range(nonempty=True),
    "steering_sweep.layers": Range(0, nonempty=True),
    "steering_sweep.alphas": Range(nonempty=True),
    "steering.layer": Range(0),
    "steering.nll_budget": Range(0, open_lo=True),
    "steering.degenerate_budget": Range(0, 1),
    "cross_steering.depth": Range(0, 1),
    "statistics.power_ds": Range(0, open_lo=True, nonempty=True),
    "statistics.metric_families": Range(nonempty=True),
    "head_patching.patch_modes": Range(nonempty=True),
}

# what a value of each annotated type must be: (singular, plural)
_KINDS = {bool: ("true or false", "true or false"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a non-empty string", "names")}


def _what(hint: type, rng: Range | None) -> tuple[str, str]:
    """How a number's range reads in an error, in the words `_check_ints` uses for the common cases."""
    one, many = _KINDS[hint]
    if rng is None or (rng.lo is None and rng.hi is None):
        return ("a finite number", "finite numbers") if hint is float else (one, many)
    if hint is int and rng.hi is None and rng.lo in (0, 1) and not rng.open_lo:
        return ("a non-negative integer", "non-negative integers") if rng.lo == 0 else (
            "a positive integer", "positive integers")
    return f"{one} {rng.text()}", f"{many} {rng.text()}"


def _scalar(hint: type, rng: Range | None, value: Any) -> tuple[Any, tuple[str, str] | None]:
    """(the value as read, None) or (value, what it must be): the type of the annotation, finite, in range."""
    if hint is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            return value, _KINDS[hint]
    if isinstance(value, bool) and hint is not bool or not isinstance(value, (int, float) if hint is float else hint):
        return value, _KINDS[hint]
    if hint is str and not value.strip():
        return value, _KINDS[hint]
    if hint is float and not math.isfinite(value):
        return value, ("a finite number", "finite numbers")
    if hint in (int, float) and rng is not None and not rng.holds(value):
        return value, _what(hint, rng)
    return value, None


def _conform(key: str, hint: Any, value: Any) -> Any:
    """`value` checked against the field's annotation and `RANGES[key]`: one ParamsError naming the dotted key.
    Lists must be lists (a string is not a list of names), bools bools (not 0/1), numbers finite."""
    rng = RANGES.get(key)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        if str in args and isinstance(value, str):
            return value
        rest = [a for a in args if a is not str]
        if not rest:
            raise ParamsError(f"{key} must be null or a string, got {value!r}")
        return _conform(key, rest[0], value)
    if typing.get_origin(hint) is tuple:
        item = args[0]
        if not isinstance(value, (list, tuple)):
            written = f" (write [{value}])" if isinstance(value, (str, int, float)) else ""
            raise ParamsError(f"{key} must be a list of {_what(item, rng)[1]}, got {value!r}{written}")
        if rng is not None and rng.nonempty and not value:
            raise ParamsError(f"{key} must not be empty")
        out = []
        for i, v in enumerate(value):
            v, problem = _scalar(item, rng, v)
            if problem:
                raise ParamsError(f"{key} must be {problem[1]}: item {i} is {v!r}")
            out.append(v)
        return tuple(out)
    if hint is dict:  # a mapping of names to mappings (steering_sweep.settings); its entries: the section's check
        if not isinstance(value, dict) or not all(isinstance(v, dict) or v is None for v in value.values()):
            raise ParamsError(f"{key} must be a mapping of names to mappings, got {value!r}")
        return value
    if hint not in _KINDS:
        return value
    value, problem = _scalar(hint, rng, value)
    if problem:
        raise ParamsError(f"{key} must be {problem[0]}, got {value!r}")
    return value


def _conformed(cls: type, section: dict, name: str) -> dict:
    """Every value of a params section checked against its field's annotation (before the dataclass sees it)."""
    hints = typing.get_type_hints(cls)
    prefix = f"{name}." if name else ""
    return {k: _conform(f"{prefix}{k}", hints[k], v) for k, v in section.items()}


def _build(cls: type[T], section: Any, name: str) -> T:
    if section is None:
        return cls()
    if not isinstance(section, dict):
        raise ParamsError(f"params section {name!r} must be a mapping, got {type(section).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ParamsError(f"unknown key(s) in params section {name!r}: {', '.join(unknown)}")
    section = _conformed(cls, section, name)
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
    scalars = ("seed", "models", "alpha", "executor")
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(Params)})
    if unknown:
        raise ParamsError(f"{path}: unknown top-level key(s): {', '.join(map(str, unknown))}")
    top = _conformed(Params, {k: raw[k] for k in scalars if k in raw}, "")
    if isinstance(raw.get("execution"), dict) and "executor" in raw["execution"]:
        raise ParamsError(f"{path}: execution.executor is not a key: set the top-level `executor`")
    return Params(
        execution=_build(ExecutionParams, raw.get("execution"), "execution"),
        **top,
        dataset=_build(DatasetParams, raw.get("dataset"), "dataset"),
        activations=_build(ActivationParams, raw.get("activations"), "activations"),
        vectors=_build(VectorParams, raw.get("vectors"), "vectors"),
        judges=_build(JudgesParams, raw.get("judges"), "judges"),
        alignment=_build(AlignmentParams, raw.get("alignment"), "alignment"),
        steering_common=_build(SteeringCommonParams, raw.get("steering_common"), "steering_common"),
        steering_sweep=_build(SteeringSweepParams, raw.get("steering_sweep"), "steering_sweep"),
        steering=_build(SteeringParams, raw.get("steering"), "steering"),
        steering_confirm=_build(SteeringConfirmParams, raw.get("steering_confirm"), "steering_confirm"),
        cross_steering=_build(CrossSteeringParams, raw.get("cross_steering"), "cross_steering"),
        statistics=_build(StatisticsParams, raw.get("statistics"), "statistics"),
        heads=_build(HeadParams, raw.get("heads"), "heads"),
        head_screening=_build(HeadScreeningParams, raw.get("head_screening"), "head_screening"),
        head_patching=_build(HeadPatchingParams, raw.get("head_patching"), "head_patching"),
        circuits=_build(CircuitParams, raw.get("circuits"), "circuits"),
    )
