"""A value against its null: control runs (random directions / heads / neurons / subspaces, permuted labels) give
an empirical distribution; `vs_null` places one value in it with an explicit alternative, and `permutation_p`
tests per-unit effects against their control units (or 0) by scipy.stats.permutation_test."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

Alternative = Literal["greater", "less", "two-sided"]
ALTERNATIVES = ("greater", "less", "two-sided")
# A null whose SD is at most this fraction of the magnitudes involved (max |value|, |null mean|) has no scale:
# float32 scores carry ~1e-7 relative noise, so e.g. a self-pair's permuted-label cosines that all equal 1 to 1e-7
# would otherwise give a z of +-1e6 whose sign, and a p that flips between 1/(n+1) and 1, follow the noise.
DEGENERATE_RTOL = 1e-5


def vs_null(value: float, null: np.ndarray, alternative: Alternative) -> dict:
    """`value` next to its null draws: p with the +1 correction ((1 + #as extreme) / (1 + n), never 0), z-score,
    null mean and SD, 5% and 95% quantiles, n_null.

    alternative (explicit, no default: the caller says what it tests): "greater" counts null >= value, "less"
    null <= value (both as scipy.stats.permutation_test counts them), "two-sided" |null - mean| >= |value - mean|
    (distance from the null's centre; the doubled one-sided p of scipy only coincides for a symmetric null).
    A degenerate null (a single draw, or SD <= DEGENERATE_RTOL x max(|value|, |null mean|)) has no scale:
    `degenerate` is True, z is None (JSON null), never inf, and p compares within that tolerance (a value within
    it of the null ties with every draw: p = 1; beyond it, in the tested direction: 1/(n+1)), so float noise
    cannot flip it. The null keeps the caller's dtype (float32 scores keep their float32 mean, as the stages
    always had)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    null = np.asarray(null).ravel()
    if null.size == 0:
        raise ValueError("vs_null needs at least one null draw")
    centre = null.mean()  # in the null's dtype, as the distances below
    sd = float(null.std(ddof=1)) if null.size > 1 else 0.0
    tol = DEGENERATE_RTOL * max(abs(float(value)), abs(float(centre)))
    degenerate = sd <= tol or null.size < 2
    slack = tol if degenerate else 0.0  # ties within the tolerance, only where the null has no scale to judge by
    if alternative == "greater":
        hits = np.sum(null >= value - slack)
    elif alternative == "less":
        hits = np.sum(null <= value + slack)
    else:
        hits = np.sum(np.abs(null - centre) >= abs(value - centre) - slack)
    return {"p": float((1 + hits) / (1 + null.size)), "z": None if degenerate else (value - float(centre)) / sd,
            "degenerate": bool(degenerate), "null_mean": float(centre), "null_sd": sd,
            "q05": float(np.quantile(null, 0.05)), "q95": float(np.quantile(null, 0.95)), "n_null": int(null.size)}


def _welch_t(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Studentised statistic: the permutation test stays valid when the groups' variances differ."""
    vx = x.var(axis=axis, ddof=1) / x.shape[axis]
    vy = y.var(axis=axis, ddof=1) / y.shape[axis]
    diff = x.mean(axis=axis) - y.mean(axis=axis)
    se = np.sqrt(vx + vy)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, diff / np.where(se > 0, se, 1.0), 0.0)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def permutation_p(x: np.ndarray, y: np.ndarray | None, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided permutation p-value by scipy.stats.permutation_test: label shuffling between effect and null
    (Welch t statistic), or sign flips of the per-unit values against 0 when there is no null. Exact when the
    number of distinct permutations is at most `n_perm`."""
    x = np.asarray(x, dtype=float)
    if y is None:
        if len(x) < 1 or np.all(x == 0):
            return 1.0
        res = stats.permutation_test((x,), _mean, permutation_type="samples", n_resamples=n_perm,
                                     vectorized=True, alternative="two-sided", rng=rng)
    else:
        y = np.asarray(y, dtype=float)
        if len(x) < 2 or len(y) < 2 or np.ptp(np.concatenate([x, y])) == 0:
            return 1.0
        res = stats.permutation_test((x, y), _welch_t, permutation_type="independent", n_resamples=n_perm,
                                     vectorized=True, alternative="two-sided", rng=rng)
    return float(min(1.0, res.pvalue))
