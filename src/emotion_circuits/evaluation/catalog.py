"""What the registered evaluators declare, asked by the tables and statistics (which never build them): every
metric, the metric families, each emotion's own metric in a family; and `build_evaluators` for the stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from emotion_circuits.errors import ParamsError
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EVERY_EMOTION, EvaluatorInputs, Metric

FLUENCY_COLUMNS = ("nll", "repetition", "degenerate")  # in every scored table beside the evaluators' columns


def declared_metrics() -> tuple[Metric, ...]:
    """Every registered evaluator's class-level metrics, in registry order, each column once (`lexicon` carries
    `vader`'s metric: the same declaration, listed once). An emotion has at most one metric per family, so
    "the emotion's own metric" is never a guess."""
    seen: dict[str, Metric] = {}
    own: dict[tuple[str, str], str] = {}
    for name, cls in EVALUATORS.items():
        for m in cls.metrics:
            if seen.setdefault(m.column, m) != m:
                raise ValueError(f"evaluator {name!r} declares {m.column!r} differently: {m} vs {seen[m.column]}")
            if m.emotion is not None and own.setdefault((m.family, m.emotion), m.column) != m.column:
                raise ValueError(f"family {m.family!r} declares two {m.emotion!r} metrics: "
                                 f"{own[m.family, m.emotion]!r} and {m.column!r}")
    return tuple(seen.values())


def metric_families() -> tuple[str, ...]:
    """The metric families of the registered evaluators, in registry order."""
    return tuple(dict.fromkeys(m.family for m in declared_metrics()))


def check_families(knob: str, families: Sequence[str]) -> None:
    """ParamsError naming the registered families if `families` (a params list) has one no evaluator declares."""
    allowed = metric_families()
    for fam in families:
        if fam not in allowed:
            raise ParamsError(f"{knob}: unknown metric family {fam!r} (allowed: {', '.join(allowed)})")


def family_of(column: str) -> str | None:
    """The registered family a score column belongs to (`<family>_<name>`), None for any other column."""
    declared = {m.column: m.family for m in declared_metrics()}
    if column in declared:
        return declared[column]
    return next((f for f in metric_families() if column.startswith(f"{f}_")), None)


def own_metric(emotion: str, family: str) -> str | None:
    """The column that measures `emotion` in `family`: the family's metric declared for that emotion, else its
    every-emotion metric (VADER sentiment); None where the family does not measure the emotion."""
    check_families("metric family", [family])
    metrics = [m for m in declared_metrics() if m.family == family]
    for wanted in (emotion, EVERY_EMOTION):
        for m in metrics:
            if m.emotion == wanted:
                return m.column
    return None


def build_evaluators(names: Sequence[str], lexicons: Mapping[str, Sequence[str]], train: pd.DataFrame | None,
                     seed: int) -> list:
    """Instantiate the requested evaluators once (models load once per stage); `train`: the rows trained ones fit
    on (judge_train.parquet). Unknown names are a ParamsError listing the registered ones; two evaluators that
    score the same column (`lexicon` + `vader`) too."""
    classes = [EVALUATORS[n] for n in names]
    owner: dict[str, str] = {}
    for cls in classes:
        for m in cls.metrics:
            if owner.setdefault(m.column, cls.name) != cls.name:
                raise ParamsError(f"evaluators {owner[m.column]!r} and {cls.name!r} both score {m.column!r}: "
                                  f"list one of them")
    inputs = EvaluatorInputs(lexicons, train, seed)
    return [cls.build(inputs) for cls in classes]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """Every score column present that a registered evaluator declares (evaluators differ), plus fluency
    (`text.score_all`'s repetition and degenerate, and the NLL the stages add)."""
    return [c for c in table.columns if family_of(c) is not None] + list(FLUENCY_COLUMNS)


def families_in(table: pd.DataFrame) -> list[str]:
    """The registered metric families with a column in `table`, in registry order."""
    present = {family_of(c) for c in table.columns}
    return [f for f in metric_families() if f in present]
