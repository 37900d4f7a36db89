"""One row per effect of the `effect_samples` table: n, means, d/g with the bootstrap CI, permutation p against the
matching null (two-sample, paired, or one-sample against 0), BH within the family, power; and the headline and
per-family summaries of the statistics stage's metrics. Every effect gets its own seeded generator derived from
(seed, family, effect), so adding an effect never changes the numbers of another."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS
from emotion_circuits.params import StatisticsParams
from emotion_circuits.stats.effects import HEADLINE_POOL, cohens_d, hedges_g, effect_labels
from emotion_circuits.stats.intervals import bootstrap_ci
from emotion_circuits.stats.multiple import bh_adjust
from emotion_circuits.stats.nulls import permutation_p
from emotion_circuits.stats.power import achieved_power, min_detectable_d


def effect_rng(seed: int, family: str, effect: str) -> np.random.Generator:
    """A generator that depends only on the seed and the effect's identity (not on table order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"{family}\x00{effect}".encode())])


def analyse_effect(x: np.ndarray, y: np.ndarray | None, cfg: StatisticsParams, rng: np.random.Generator,
                   paired: bool = False) -> dict:
    """All statistics of one effect: `x` the intervention's per-unit values, `y` its null's (or None).

    `paired` (x[i] and y[i] measured on the same unit, one null value per unit): the test runs on the per-unit
    differences x - y (sign flips; d is Cohen's d_z = mean difference / SD of the differences), which removes
    the between-unit variance. Otherwise two independent samples (label shuffling, pooled-SD d), or one sample
    against 0 when there is no null."""
    x = np.asarray(x, dtype=float)
    y = None if y is None or len(y) == 0 else np.asarray(y, dtype=float)
    if paired and (y is None or len(y) != len(x)):
        raise ValueError("a paired effect needs one null value per effect unit")
    first, second = (x - y, None) if paired else (x, y)
    n_null = None if second is None else len(second)
    low, high = bootstrap_ci(first, second, cfg.n_boot, cfg.ci_level, cfg.ci_method, rng)
    test = "paired_vs_null" if paired else ("one_sample_vs_0" if y is None else "two_sample_vs_null")
    row = {"test": test, "n": len(x), "n_null": 0 if y is None else len(y), "mean": float(x.mean()),
           "null_mean": float(y.mean()) if y is not None else float("nan"),
           "diff": float(first.mean() - (second.mean() if second is not None else 0.0)),
           "diff_ci_low": float(low[0]), "diff_ci_high": float(high[0]),
           "d": float(cohens_d(first, second)) if len(x) > 1 else float("nan"),
           "d_ci_low": float(low[1]), "d_ci_high": float(high[1]),
           "g": float(hedges_g(first, second)) if len(x) > 1 else float("nan"),
           "d_vs_0": float(cohens_d(x)) if len(x) > 1 else float("nan"),
           "null_d_vs_0": float(cohens_d(y)) if y is not None and len(y) > 1 else float("nan"),
           "p": permutation_p(first, second, cfg.n_perm, rng),
           "mde_d": min_detectable_d(len(x), n_null, cfg.power, cfg.power_alpha)}
    for target in cfg.power_ds:
        row[f"power_d{target:g}"] = achieved_power(target, len(x), n_null, cfg.power_alpha)
    return row


def is_paired(effect_units: np.ndarray, null_units: np.ndarray) -> bool:
    """One null value per effect unit, on the same units (unit ids >= 0): the schema's pairing."""
    e, n = np.asarray(effect_units), np.asarray(null_units)
    return (len(e) == len(n) > 0 and bool(np.all(e >= 0)) and len(np.unique(e)) == len(e)
            and len(np.unique(n)) == len(n) and np.array_equal(np.sort(e), np.sort(n)))


def analyse_samples(samples: pd.DataFrame, cfg: StatisticsParams, seed: int, progress: bool = False) -> pd.DataFrame:
    """One row per (family, effect): n, means, d/g with bootstrap CIs, permutation p, BH within the family,
    achieved power at the target d's and the minimum detectable d. Effect and null rows on the same units, one
    each, are analysed as pairs (`is_paired`); otherwise as two independent samples."""
    from tqdm.auto import tqdm

    samples = samples.sort_values(["family", "effect", "group", "unit", "value"], kind="mergesort")
    rows = []
    groups = samples.groupby(["family", "effect"], sort=True)
    for (family, effect), g in tqdm(groups, total=groups.ngroups, desc="statistics", disable=not progress):
        e, n = g[g["group"] == "effect"], g[g["group"] == "null"]  # sorted by unit: paired rows line up
        paired = is_paired(e["unit"].to_numpy(), n["unit"].to_numpy())
        x, y = e["value"].to_numpy(), n["value"].to_numpy()
        first = g.iloc[0]
        rows.append({"family": family, "effect": effect, "emotion": first["emotion"], "metric": first["metric"],
                     **analyse_effect(x, y if len(y) else None, cfg, effect_rng(seed, family, effect), paired)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_adj"], table["significant"] = np.nan, False
    for family, idx in table.groupby("family", sort=True).groups.items():
        reject, adj = bh_adjust(table.loc[idx, "p"].to_numpy(), cfg.fdr_alpha)
        table.loc[idx, "p_adj"], table.loc[idx, "significant"] = adj, reject
    labels = effect_labels(samples)
    table = table.merge(labels[["family", "effect", *(c for c in labels.columns if c not in table.columns)]],
                        on=["family", "effect"], how="left")
    return table.reset_index(drop=True)


def _clean(value):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


ENTRY_FIELDS = ("effect", "emotion", "metric", "test", "n", "n_null", "mean", "null_mean", "diff", "diff_ci_low",
                "diff_ci_high", "d", "d_ci_low", "d_ci_high", "g", "d_vs_0", "null_d_vs_0", "p", "p_adj",
                "significant", "mde_d", "layer", "alpha")


def effect_entry(row: pd.Series) -> dict:
    out = {k: _clean(row[k]) for k in ENTRY_FIELDS if k in row.index}
    out.update({k: _clean(v) for k, v in row.items() if str(k).startswith("power_d")})
    return out


SIGNED_FAMILIES = ("steering_sweep", "steering", "steering_confirm", "steering_confirm_other")  # positive d = more of the emotion: the expected direction


def headlines(effects: pd.DataFrame, primary_family: str) -> dict:
    """Per family and emotion, the headline effect. Pool: the family's pre-registered condition
    (`HEADLINE_POOL`), the primary metric family, positive alpha (where alphas exist), and the null-controlled
    tests where the family has any. Pick: BH-significant first, then the largest d (steering: signed, in the
    expected direction; other families: |d|). Its adjusted p covers the whole family, so picking the largest
    effect does not inflate it."""
    out: dict = {}
    for family, fam in effects.groupby("family", sort=True):
        pool = fam
        if family in HEADLINE_POOL and pool["effect"].str.contains(HEADLINE_POOL[family], regex=False).any():
            pool = pool[pool["effect"].str.contains(HEADLINE_POOL[family], regex=False)]
        if pool["metric"].str.startswith(f"{primary_family}_").any():
            pool = pool[pool["metric"].str.startswith(f"{primary_family}_")]
        if "alpha" in pool and pool["alpha"].notna().any() and (pool["alpha"] > 0).any():
            pool = pool[pool["alpha"] > 0]
        if (pool["test"] != "one_sample_vs_0").any():
            pool = pool[pool["test"] != "one_sample_vs_0"]
        entry = {}
        for emotion, g in pool.groupby("emotion", sort=True):
            score = g["d"] if family in SIGNED_FAMILIES else g["d"].abs()
            g = g.assign(_sig=g["significant"].astype(int), _d=score.fillna(-np.inf))
            best = g.sort_values(["_sig", "_d", "effect"], ascending=[False, False, True], kind="mergesort").iloc[0]
            entry[emotion] = effect_entry(best)
        out[family] = entry
    return out


def family_summary(effects: pd.DataFrame, cfg: StatisticsParams) -> dict:
    out = {}
    for family, g in effects.groupby("family", sort=True):
        two = g["test"] != "one_sample_vs_0"
        out[family] = {"n_effects": int(len(g)), "n_vs_null": int(two.sum()), "n_vs_0": int((~two).sum()),
                       "n_significant": int(g["significant"].sum()),
                       "n_significant_vs_null": int((g["significant"] & two).sum()),
                       "min_p_adj": _clean(g["p_adj"].min()), "median_n": _clean(g["n"].median()),
                       "median_n_null": _clean(g.loc[two, "n_null"].median()) if two.any() else None,
                       "median_mde_d": _clean(g["mde_d"].median()),
                       "median_power": {f"d={d:g}": _clean(g[f"power_d{d:g}"].median()) for d in cfg.power_ds}}
    return out


def emotions_in(df: pd.DataFrame) -> list[str]:
    return [e for e in EMOTIONS if e in set(df["emotion"])] + sorted(set(df["emotion"]) - set(EMOTIONS))
