"""Alignment nulls: each file registers one `Null`, a score the mapped emotion-subspace overlap would reach
without shared emotion geometry. The layer-pair scores, the by-layer table, the metrics JSON and the verdict
loop over `NULLS`, so a new null is one new file here (nothing registered is dropped).

Draws come from the layer pair's one generator, in registry (= sorted file) order: first every null's
k-independent `prepare`, then, per k, every null's `at_k`. Keep that order and the numbers stay put."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotion_circuits.registry import Registry, autoload
from emotion_circuits.stats.nulls import Alternative


def _nothing(ctx: Any, rng: np.random.Generator) -> None:
    return None


@dataclass(frozen=True)
class Null:
    """One null of the overlap score.

    `count`: the AlignmentParams field that sets its number of draws (None: a single baseline value, such as
    the random-initialised model's overlap). `prepare(ctx, rng)` makes its k-independent draws (state);
    `at_k(ctx, state, k, rng)` gives its draws at k (an array: summarised by `vs_null` with `alternative` under
    `key`) or its baseline value (a float, stored under `key`); None where it does not apply.
    `columns`: the metrics JSON / by-layer CSV column -> field of the summary ("" for a baseline value).
    `label`: its name in figures. `in_verdict`: the overlap must beat it (its q95, or its value) to pass every null."""

    name: str
    key: str
    label: str
    alternative: Alternative
    count: str | None
    in_verdict: bool
    at_k: Callable[..., np.ndarray | float | None]
    prepare: Callable[..., Any] = _nothing
    columns: dict[str, str] = field(default_factory=dict)
    by_layer: str = ""      # its column of the by-layer CSV: the q95 of a drawn null, a baseline's value
    plotted: bool = True    # a series of the k-sweep and by-layer PNGs (the CSVs hold every null)

    def source(self, field_name: str = "null_q95") -> str:
        """Its column in scores.parquet (nested summaries flattened with dots)."""
        return f"{self.key}.{field_name}" if self.drawn else self.key

    @property
    def drawn(self) -> bool:
        return self.count is not None

    def value(self, row: dict[str, Any], field_name: str = "null_q95") -> float | None:
        """The number of this null in a layer-pair row: a field of its summary, or its baseline value."""
        got = row.get(self.key)
        if isinstance(got, dict):
            return got.get(field_name)
        return got

    def threshold(self, row: dict[str, Any]) -> float | None:
        """What the overlap must exceed (q95 of drawn nulls, the value of baselines); None: not applicable."""
        return self.value(row, "null_q95")


NULLS: Registry[Null] = Registry("alignment null")


def register(null: Null) -> Null:
    """`register(Null(...))` in a module of this package."""
    return NULLS.register(null.name)(null)


autoload(__name__, __path__)
