"""What an evaluator is: a name, the metrics it declares, and `score(texts)` giving exactly those columns.

The declarations are the contract the rest of the instrument reads: steering tables, statistics families and the
own-emotion metric of each family all come from the registered evaluators' `Metric`s, never from column-name
guesses, so a new evaluator's scores cannot be silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

EVERY_EMOTION = "*"  # Metric.emotion of a score that is every emotion's own metric in its family (VADER sentiment)


@dataclass(frozen=True)
class Metric:
    """One score column. `emotion`: the emotion it measures (`EVERY_EMOTION`: the family's one metric for every
    emotion; None: measures no single emotion, kept in tables but never an own metric). `higher_is_more`: what
    a higher value means more of. Columns are `<family>_<name>`, so a family's columns are found by prefix too
    (the hub classifiers' label columns are only known once the models load)."""

    column: str
    emotion: str | None
    family: str
    higher_is_more: str

    def __post_init__(self) -> None:
        if not self.family or "_" in self.family or not self.column.startswith(f"{self.family}_"):
            raise ValueError(f"metric {self.column!r}: the column must be '<family>_<name>' with a family "
                             f"without '_' (family {self.family!r})")


@dataclass(frozen=True, eq=False)
class EvaluatorInputs:
    """Everything an evaluator may be built from (each takes what it needs): the keyword lexicons, the rows a
    trained classifier may fit on (`results/dataset/judge_train.parquet`: id, text, emotion, source; every row is
    a training row, no validation portion is among them) and the seed."""

    lexicons: Mapping[str, Sequence[str]] = field(default_factory=dict)
    train: pd.DataFrame | None = None
    seed: int = 0


class Evaluator(Protocol):
    """A text evaluator. The class's `metrics` are what the registry knows without building it (statistics reads
    them); an instance may refine them once its models load (hf: every label), and `score` returns exactly the
    instance's `metrics` columns, in order, one row per text. `classify(scores)` is its decision rule: its own
    scores -> one of LABELS per row (how the judges stage validates it); `trained_on` the ids of the rows it was
    fitted on (empty for rule-based ones), which no validation may score."""

    name: ClassVar[str]
    metrics: tuple[Metric, ...]
    trained_on: frozenset[str]

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> Evaluator: ...

    def score(self, texts: Sequence[str]) -> pd.DataFrame: ...

    def classify(self, scores: pd.DataFrame) -> np.ndarray: ...


def scores_frame(metrics: Sequence[Metric], values: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """The declared columns in declared order; a column scored but not declared (or declared but not scored) is
    a programming error, raised here rather than dropped downstream."""
    declared = [m.column for m in metrics]
    if set(values) != set(declared):
        raise RuntimeError(f"scores {sorted(values)} do not match the declared metrics {declared}")
    return pd.DataFrame({c: values[c] for c in declared}, columns=declared)


def argmax_labels(scores: pd.DataFrame, columns: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Per row, the label of the highest of `columns` (ties: the first, in `labels` order)."""
    if len(scores) == 0:
        return np.array([], dtype=object)
    return np.asarray(labels, dtype=object)[scores[list(columns)].to_numpy(dtype=float).argmax(axis=1)]
