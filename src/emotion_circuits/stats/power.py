"""Power of the design (statsmodels t-test power): n needed for a target d, achieved power and the minimum
detectable d of the current n, the honest reading of a non-significant effect."""

from __future__ import annotations

import warnings

import numpy as np
from statsmodels.stats.power import TTestIndPower, TTestPower

from emotion_circuits.params import StatisticsParams


def required_n(d: float, power: float, alpha: float, two_sample: bool = True) -> float:
    """Units per group needed to detect |d| with `power` at two-sided `alpha` (t-test; statsmodels)."""
    solver = TTestIndPower() if two_sample else TTestPower()
    return float(solver.solve_power(effect_size=d, power=power, alpha=alpha, alternative="two-sided"))


def achieved_power(d: float, n_effect: int, n_null: int | None, alpha: float) -> float:
    """Power of the current design to detect |d| (two-sample with ratio n_null/n_effect, or one-sample)."""
    if n_effect < 2 or (n_null is not None and n_null < 2):
        return float("nan")
    if n_null is None:
        return float(TTestPower().power(effect_size=d, nobs=n_effect, alpha=alpha, alternative="two-sided"))
    return float(TTestIndPower().power(effect_size=d, nobs1=n_effect, alpha=alpha, ratio=n_null / n_effect,
                                       alternative="two-sided"))


def min_detectable_d(n_effect: int, n_null: int | None, power: float, alpha: float) -> float:
    """Smallest |d| the current n detects with `power`: the honest reading of a non-significant effect."""
    if n_effect < 2 or (n_null is not None and n_null < 2):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_null is None:
            out = TTestPower().solve_power(effect_size=None, nobs=n_effect, alpha=alpha, power=power,
                                           alternative="two-sided")
        else:
            out = TTestIndPower().solve_power(effect_size=None, nobs1=n_effect, alpha=alpha, power=power,
                                              ratio=n_null / n_effect, alternative="two-sided")
    return float(np.squeeze(out))


def power_table(cfg: StatisticsParams) -> dict:
    """n per group needed for each target d at the target power (two-sample and one-sample/paired t-tests)."""
    return {"power": cfg.power, "alpha": cfg.power_alpha,
            "n_per_group_two_sample": {f"d={d:g}": int(np.ceil(required_n(d, cfg.power, cfg.power_alpha, True)))
                                       for d in cfg.power_ds},
            "n_one_sample": {f"d={d:g}": int(np.ceil(required_n(d, cfg.power, cfg.power_alpha, False)))
                             for d in cfg.power_ds}}
