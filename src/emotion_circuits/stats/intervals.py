"""The pipeline's one confidence interval: a seeded scipy.stats.bootstrap whose method (BCa | percentile | basic),
level and size come from params.yaml `statistics`, so the same effect gets the same interval in every stage.

`interval` is the CI of a mean (one sample) or of a mean difference (two independent samples; pass x - y for
paired data). `bootstrap_ci` is the same resampling for (mean or difference, Cohen's d) at once, which the
statistics stage reports: its first component equals `interval` for the same generator state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np
from scipy import stats

from emotion_circuits.stats.effects import cohens_d


class IntervalSettings(Protocol):
    """What `interval` reads: the fields of params `StatisticsParams` named here (the params object itself)."""

    ci_method: str
    ci_level: float
    n_boot: int


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def _diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis) - y.mean(axis=axis)


def _diff_and_d(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.stack([x.mean(axis=axis) - y.mean(axis=axis), cohens_d(x, y, axis)], axis=0)


def _mean_and_d(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.stack([x.mean(axis=axis), cohens_d(x, None, axis)], axis=0)


def _resample(data: tuple[np.ndarray, ...], stat: Callable, n_boot: int, level: float, method: str,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (one group constant) give NaN d: handled below
        res = stats.bootstrap(data, stat, n_resamples=n_boot, confidence_level=level, method=method,
                              vectorized=True, rng=rng)
        low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    bad = ~(np.isfinite(low) & np.isfinite(high))
    if bad.any():
        # BCa needs every resample (and jackknife value) finite; d is undefined on resamples without spread
        # (e.g. prompts whose continuation did not change). Fall back to percentiles over the defined resamples,
        # when at least 90% of them are defined.
        dist = np.atleast_2d(np.asarray(res.bootstrap_distribution, dtype=float))
        finite = np.isfinite(dist).mean(axis=-1)
        q = np.nanpercentile(np.where(np.isfinite(dist), dist, np.nan), [50 * (1 - level), 50 * (1 + level)],
                             axis=-1)
        ok = bad & (finite >= 0.9)
        low, high = np.where(ok, q[0], low), np.where(ok, q[1], high)
    return low, high


def _degenerate(x: np.ndarray, y: np.ndarray | None, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The CI where resampling has nothing to do: too few units (NaN), or no spread at all (the point value,
    with no uncertainty; d undefined)."""
    if len(x) < 2 or (y is not None and len(y) < 2):
        return np.full(width, np.nan), np.full(width, np.nan)
    data = x if y is None else np.concatenate([x, y])
    if np.ptp(data) == 0:
        point = np.full(width, np.nan)
        point[0] = x[0] if y is None else 0.0
        return point, point.copy()
    return None


def bootstrap_ci(x: np.ndarray, y: np.ndarray | None, n_boot: int, level: float, method: str,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CI of (mean difference, Cohen's d) — or (mean, d) for one sample — by scipy.stats.bootstrap, resampling
    each group independently. Returns (low[2], high[2]); NaN where the data have no spread."""
    x = np.asarray(x, dtype=float)
    y = None if y is None else np.asarray(y, dtype=float)
    fixed = _degenerate(x, y, 2)
    if fixed is not None:
        return fixed
    data, stat = ((x,), _mean_and_d) if y is None else ((x, y), _diff_and_d)
    return _resample(data, stat, n_boot, level, method, rng)


def interval(x: np.ndarray, y: np.ndarray | None, cfg: IntervalSettings,
             rng: np.random.Generator | int) -> tuple[float, float]:
    """(low, high) of mean(x) (y None) or mean(x) - mean(y), with `cfg.ci_method` at `cfg.ci_level` from
    `cfg.n_boot` resamples. `rng` a generator or a seed. Fewer than 2 units: (NaN, NaN); no spread: the point."""
    x = np.asarray(x, dtype=float)
    y = None if y is None else np.asarray(y, dtype=float)
    fixed = _degenerate(x, y, 1)
    if fixed is None:
        data, stat = ((x,), _mean) if y is None else ((x, y), _diff)
        fixed = _resample(data, stat, int(cfg.n_boot), float(cfg.ci_level), str(cfg.ci_method),
                          np.random.default_rng(rng))
    return float(fixed[0][0]), float(fixed[1][0])
