"""Statistics for every effect the pipeline produces: effect sizes, bootstrap CIs, permutation p-values against the
matching null, Benjamini-Hochberg within a family of tests, power, and the k-selection of the alignment sweep.

Effects arrive as the long `effect_samples` table (see `SAMPLE_COLUMNS`): per (family, effect) the per-unit values
of the intervention (`group == "effect"`) and, where the stage ran one, of its matching control (`group == "null"`:
equal-norm random directions, random heads, random neurons). With a null the test is two-sample (is the
intervention different from its control?); without one it is one-sample against 0 (sign-flip permutation).
Resampling uses scipy.stats (`bootstrap`, `permutation_test`), multiple testing and power statsmodels; every
effect gets its own seeded generator derived from (seed, family, effect), so adding an effect never changes the
numbers of another.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from emotion_circuits import EMOTIONS
from emotion_circuits.errors import DataError

SAMPLE_COLUMNS = {"family": "str", "effect": "str", "emotion": "str", "metric": "str", "group": "str", "unit": "int",
                  "value": "float"}
GROUPS = ("effect", "null")


@dataclass(frozen=True)
class StatsConfig:
    """Resampling and testing settings (params.yaml `statistics`)."""

    n_boot: int = 2000
    n_perm: int = 2000
    ci_level: float = 0.95
    ci_method: str = "BCa"
    fdr_alpha: float = 0.05
    power: float = 0.8
    power_alpha: float = 0.05
    power_ds: tuple[float, ...] = (0.2, 0.5)
    seed: int = 0


# ------------------------------------------------------------------------------------------------ effect sizes

def _pooled_sd(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    nx, ny = x.shape[axis], y.shape[axis]
    return np.sqrt(((nx - 1) * x.var(axis=axis, ddof=1) + (ny - 1) * y.var(axis=axis, ddof=1)) / (nx + ny - 2))


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 1e-12 * np.maximum(1.0, np.abs(num)), out, np.nan)


def cohens_d(x: np.ndarray, y: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
    """Two-sample d = (mean x - mean y) / pooled SD, or one-sample d = mean x / SD x when `y` is None.
    NaN where the SD is 0 (e.g. a keyword metric that never fires): no scale, no standardised effect."""
    x = np.asarray(x, dtype=float)
    if y is None:
        return _safe_ratio(x.mean(axis=axis), x.std(axis=axis, ddof=1))
    y = np.asarray(y, dtype=float)
    return _safe_ratio(x.mean(axis=axis) - y.mean(axis=axis), _pooled_sd(x, y, axis))


def hedges_correction(n1: int, n2: int | None = None) -> float:
    """Small-sample bias correction J (exact gamma form) with df = n1 + n2 - 2, or n1 - 1 for one sample."""
    from scipy.special import gammaln

    df = (n1 + n2 - 2) if n2 is not None else (n1 - 1)
    if df < 1:
        return float("nan")
    return float(np.exp(gammaln(df / 2) - 0.5 * np.log(df / 2) - gammaln((df - 1) / 2)))


def hedges_g(x: np.ndarray, y: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    n2 = None if y is None else np.asarray(y).shape[axis]
    return cohens_d(x, y, axis) * hedges_correction(x.shape[axis], n2)


# ------------------------------------------------------------------------------------------------ resampling

def _diff_and_d(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.stack([x.mean(axis=axis) - y.mean(axis=axis), cohens_d(x, y, axis)], axis=0)


def _mean_and_d(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.stack([x.mean(axis=axis), cohens_d(x, None, axis)], axis=0)


def bootstrap_ci(x: np.ndarray, y: np.ndarray | None, n_boot: int, level: float, method: str,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CI of (mean difference, Cohen's d) — or (mean, d) for one sample — by scipy.stats.bootstrap, resampling
    each group independently. Returns (low[2], high[2]); NaN where the data have no spread."""
    data = (x,) if y is None else (x, y)
    stat = _mean_and_d if y is None else _diff_and_d
    if len(x) < 2 or (y is not None and len(y) < 2):
        return np.full(2, np.nan), np.full(2, np.nan)
    if np.ptp(np.concatenate(data)) == 0:  # all values equal: the effect is exactly 0 with no uncertainty
        return np.array([0.0, np.nan]), np.array([0.0, np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (one group constant) give NaN d: handled below
        res = stats.bootstrap(data, stat, n_resamples=n_boot, confidence_level=level, method=method,
                              vectorized=True, rng=rng)
        low, high = np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)
    bad = ~(np.isfinite(low) & np.isfinite(high))
    if bad.any():
        # BCa needs every resample (and jackknife value) finite; d is undefined on resamples without spread
        # (e.g. prompts whose continuation did not change). Fall back to percentiles over the defined resamples,
        # when at least 90% of them are defined.
        dist = np.asarray(res.bootstrap_distribution, dtype=float)
        finite = np.isfinite(dist).mean(axis=-1)
        q = np.nanpercentile(np.where(np.isfinite(dist), dist, np.nan), [50 * (1 - level), 50 * (1 + level)],
                             axis=-1)
        ok = bad & (finite >= 0.9)
        low, high = np.where(ok, q[0], low), np.where(ok, q[1], high)
    return low, high


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


def bh_adjust(pvalues: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg (statsmodels multipletests, fdr_bh): (reject, adjusted p). NaN p-values stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    reject, adj = np.zeros(len(p), dtype=bool), np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        r, a, _, _ = multipletests(p[ok], alpha=alpha, method="fdr_bh")
        reject[ok], adj[ok] = r, a
    return reject, adj


# ------------------------------------------------------------------------------------------------ power

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


# ------------------------------------------------------------------------------------------------ per effect

def effect_rng(seed: int, family: str, effect: str) -> np.random.Generator:
    """A generator that depends only on the seed and the effect's identity (not on table order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"{family}\x00{effect}".encode())])


def analyse_effect(x: np.ndarray, y: np.ndarray | None, cfg: StatsConfig, rng: np.random.Generator,
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


def validate_samples(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check the effect_samples schema; one clear DataError naming the file otherwise."""
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (see the effect_samples schema)")
    bad = sorted(set(df["group"].astype(str)) - set(GROUPS))
    if bad:
        raise DataError(f"{source}: column group must be 'effect' or 'null', found {', '.join(bad)}")
    out = df[list(SAMPLE_COLUMNS)].copy()
    for col in ("family", "effect", "emotion", "metric", "group"):
        out[col] = out[col].astype(str)
    out["unit"] = pd.to_numeric(out["unit"], errors="raise").astype(np.int64)
    out["value"] = pd.to_numeric(out["value"], errors="raise").astype(float)
    if not np.all(np.isfinite(out["value"].to_numpy())):
        raise DataError(f"{source}: non-finite values in column value")
    no_effect = set(out.groupby(["family", "effect"]).groups) - set(
        out[out["group"] == "effect"].groupby(["family", "effect"]).groups)
    if no_effect:
        raise DataError(f"{source}: effect(s) with only null rows: {sorted(no_effect)[:3]}")
    return out


_KEY = re.compile(r"^blocks\.(\d+)\.")


def parse_effect_id(effect: str) -> dict:
    """Optional structure of an effect id: `blocks.<L>.<hook>` -> layer/hook, `name=value` pieces -> columns."""
    out: dict = {}
    for piece in effect.split("/"):
        m = _KEY.match(piece)
        if m:
            out["layer"], out["hook"] = int(m.group(1)), piece
        elif "=" in piece:
            k, v = piece.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def analyse_samples(samples: pd.DataFrame, cfg: StatsConfig, progress: bool = False) -> pd.DataFrame:
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
                     **analyse_effect(x, y if len(y) else None, cfg, effect_rng(cfg.seed, family, effect), paired)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_adj"], table["significant"] = np.nan, False
    for family, idx in table.groupby("family", sort=True).groups.items():
        reject, adj = bh_adjust(table.loc[idx, "p"].to_numpy(), cfg.fdr_alpha)
        table.loc[idx, "p_adj"], table.loc[idx, "significant"] = adj, reject
    parsed = pd.DataFrame([parse_effect_id(e) for e in table["effect"]], index=table.index)
    for col in parsed.columns:
        if col not in table.columns:
            table[col] = parsed[col]
    return table.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ adapters

def own_metric(emotion: str, family: str) -> str:
    """The metric that measures `emotion` in a metric family (p: embedding classifier, lex: keywords)."""
    return "vader_compound" if family == "vader" else f"{family}_{emotion}"


def sample_rows(family: str, effect, emotion, metric: str, group: str, units, values) -> pd.DataFrame:
    """effect_samples rows (columns in `SAMPLE_COLUMNS` order); `effect`/`emotion` a value or one per row."""
    return pd.DataFrame({"family": family, "effect": effect, "emotion": emotion, "metric": metric, "group": group,
                         "unit": np.asarray(units, dtype=np.int64), "value": np.asarray(values, dtype=float)})


def effect_and_set_null(family: str, effect: str, emotion: str, metric: str, effect_rows: pd.DataFrame,
                        null_rows: pd.DataFrame) -> list[pd.DataFrame]:
    """An intervention's per-unit values and its matching null: per unit, the mean over the random control
    sets (random heads, random neurons) run on that unit."""
    null = null_rows.groupby("unit", sort=True)[metric].mean()
    return [sample_rows(family, effect, emotion, metric, "effect", effect_rows["unit"], effect_rows[metric]),
            sample_rows(family, effect, emotion, metric, "null", null.index, null)]


def vs_null(value: float, null: np.ndarray) -> dict:
    """A value next to its control runs (one value per random direction / head set / neuron set): the null's
    mean, 5% and 95% quantiles, z-score, and the two-sided empirical p with the +1 correction."""
    null = np.asarray(null)  # the caller's dtype: float32 scores keep their float32 mean (as the stages always had)
    centre = null.mean()
    sd = float(null.std(ddof=1)) if len(null) > 1 else 0.0
    return {"mean": float(centre), "q05": float(np.quantile(null, 0.05)), "q95": float(np.quantile(null, 0.95)),
            "z": (value - float(centre)) / sd if sd > 0 else None,
            "p": float((1 + np.sum(np.abs(null - centre) >= abs(value - centre))) / (1 + len(null)))}


def _metric_samples(family: str, effect_id, emotion: str, metric_families: Sequence[str], g: pd.DataFrame,
                    null: pd.DataFrame | None, prompt_unit: dict) -> list[pd.DataFrame]:
    """Effect rows (and their null rows) for the emotion's own metric in each metric family present in `g`."""
    parts = []
    for fam in metric_families:
        metric = own_metric(emotion, fam)
        col = f"effect_{metric}"
        if col not in g:
            continue
        effect = effect_id(metric)
        parts.append(sample_rows(family, effect, emotion, metric, "effect", g["prompt_id"].map(prompt_unit),
                                 g[col]))
        if null is not None and len(null):
            parts.append(sample_rows(family, effect, emotion, metric, "null", null["prompt_id"].map(prompt_unit),
                                     null[col]))
    return parts


def sweep_effect_samples(table: pd.DataFrame, metric_families: Sequence[str],
                         family: str = "steering_sweep") -> pd.DataFrame:
    """results/steering_sweep/generations.parquet -> effect_samples.

    Per emotion x layer x alpha and metric family: the per-prompt change vs the unsteered run on the emotion's own
    metric (`effect_<metric>`). Where equal-norm random directions ran at the same emotion, layer and alpha,
    they are the null (every (prompt, random direction) run, unit = prompt) and the effect is restricted to the
    prompts the null ran on, as in `sweep.summarise_effects`; elsewhere the test is against 0 on all prompts.
    """
    prompt_unit = {p: i for i, p in enumerate(sorted(table["prompt_id"].unique()))}
    emo, rnd = table[table["kind"] == "emotion"], table[table["kind"] == "random"]
    parts = []
    for (emotion, layer, alpha), g in emo.groupby(["emotion", "layer", "alpha"], sort=True):
        r = rnd[(rnd["emotion"] == emotion) & (rnd["layer"] == layer) & (rnd["alpha"] == alpha)]
        if len(r):
            g = g[g["prompt_id"].isin(set(r["prompt_id"]))]
        prefix = f"{emotion}/blocks.{int(layer)}.hook_resid_pre/alpha={float(alpha):g}"
        parts += _metric_samples(family, lambda m: f"{prefix}/{m}", emotion, metric_families, g,
                                 r if len(r) else None, prompt_unit)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))


# The single-alpha stage's random directions have the steering vector's norm and are applied prompt-only, so
# they are the matching null only for variants applied the same way with the same norm.
MATCHED_VARIANTS = ("prompt_only", "direction_pca1")


def single_effect_samples(table: pd.DataFrame, metric_families: Sequence[str],
                          family: str = "steering") -> pd.DataFrame:
    """results/steering/generations.parquet -> effect_samples.

    Neutral prompts: every variant; the equal-norm random directions are the null for `MATCHED_VARIANTS` (the
    iterative variant and the emotion-token vectors differ in application or norm: tested against 0). Real-world
    texts, swap patching and cross-model directions have no matching null: tested against 0.
    """
    prompt_unit = {p: i for i, p in enumerate(sorted(table["prompt_id"].unique()))}
    rnd = table[(table["kind"] == "random") & (table["prompt_set"] == "neutral")]
    parts = []
    steered = table[table["kind"].isin(["emotion", "swap"])]
    keys = ["prompt_set", "kind", "variant", "source_emotion", "emotion", "layer", "alpha"]
    for (prompt_set, kind, variant, source, emotion, layer, alpha), g in steered.groupby(keys, sort=True):
        r = rnd[(rnd["emotion"] == emotion) & (rnd["layer"] == layer) & (rnd["alpha"] == alpha)]
        use_null = kind == "emotion" and prompt_set == "neutral" and variant in MATCHED_VARIANTS and len(r) > 0
        label = f"{source}->{emotion}" if kind == "swap" else emotion
        prefix = f"{label}/blocks.{int(layer)}.hook_resid_pre/alpha={float(alpha):g}/{prompt_set}/{variant}"
        null = r[r["prompt_id"].isin(set(g["prompt_id"]))] if use_null else None
        parts += _metric_samples(family, lambda m: f"{prefix}/{m}", emotion, metric_families, g, null, prompt_unit)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))


# ------------------------------------------------------------------------------------------------ alignment k

NULL_BANDS = ("vs_random_subspace", "vs_permuted_labels")


def select_k(scores: pd.DataFrame, variant: str) -> pd.DataFrame:
    """k-selection of the alignment k-sweep, per ordered model pair and layer pair of `variant`.

    The null band at each k is the strictest 95% quantile of the random-subspace and permuted-label nulls (both
    grow with k: a k-dimensional random subspace already overlaps ~k/d). excess(k) = overlap(k) - band(k); k is
    supported when excess > 0, and the selected k is the elbow where the excess peaks (adding dimensions beyond it
    buys less overlap than the null gains). No supported k -> selected k is -1.
    """
    rows = []
    part = scores[scores["variant"] == variant]
    for (a, b, la, lb), g in part.groupby(["a", "b", "layer_a", "layer_b"], sort=True):
        g = g.sort_values("k")
        band = np.max(np.stack([g[f"{n}.null_q95"].to_numpy(dtype=float) for n in NULL_BANDS]), axis=0)
        overlap = g["overlap_after"].to_numpy(dtype=float)
        excess = overlap - band
        supported = excess > 0
        best = int(g["k"].to_numpy()[int(np.argmax(np.where(supported, excess, -np.inf)))]) if supported.any() else -1
        for i, (k, r) in enumerate(zip(g["k"].to_numpy(), g.itertuples(index=False))):
            rows.append({"a": a, "b": b, "self_pair": a == b, "layer_a": int(la), "layer_b": int(lb),
                         "variant": variant, "k": int(k), "overlap_after": overlap[i], "null_band_q95": band[i],
                         "random_null_q95": float(g[f"{NULL_BANDS[0]}.null_q95"].iloc[i]),
                         "perm_null_q95": float(g[f"{NULL_BANDS[1]}.null_q95"].iloc[i]),
                         "p_random": float(g[f"{NULL_BANDS[0]}.p"].iloc[i]),
                         "p_perm": float(g[f"{NULL_BANDS[1]}.p"].iloc[i]),
                         "excess": excess[i], "supported": bool(supported[i]), "k_selected": best})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # BH over the cross-model tests (self pairs are sanity checks, not hypotheses); the permuted-label null is
    # the emotion-specific one.
    table["p_perm_adj"] = np.nan
    cross = table.index[~table["self_pair"]]
    if len(cross):
        table.loc[cross, "p_perm_adj"] = bh_adjust(table.loc[cross, "p_perm"].to_numpy(), 0.05)[1]
    return table


def summarise_k(table: pd.DataFrame) -> dict:
    """Per ordered pair: the k selected most often over layer pairs (ties: smallest k), how many layer pairs
    support each k, and the largest excess over the null band."""
    out = {}
    for (a, b), g in table.groupby(["a", "b"], sort=True):
        per_layer = g.drop_duplicates(["layer_a", "layer_b"])
        picks = per_layer["k_selected"].to_numpy()
        chosen = picks[picks > 0]
        if len(chosen):
            values, counts = np.unique(chosen, return_counts=True)
            k_sel = int(values[np.argmax(counts)])
            n_sel = int(counts.max())
        else:
            k_sel, n_sel = -1, 0
        by_k = {f"k={int(k)}": {"n_layer_pairs_supported": int(kg["supported"].sum()),
                                "mean_overlap_after": float(kg["overlap_after"].mean()),
                                "mean_null_band_q95": float(kg["null_band_q95"].mean()),
                                "mean_excess": float(kg["excess"].mean())}
                for k, kg in g.groupby("k", sort=True)}
        top = g.loc[g["excess"].idxmax()]
        out[f"{a}->{b}"] = {"a": a, "b": b, "self_pair": bool(a == b), "k_selected": k_sel, "n_layer_pairs": int(len(per_layer)),
                            "n_layer_pairs_selecting": n_sel, "by_k": by_k,
                            "max_excess": float(top["excess"]), "max_excess_k": int(top["k"]),
                            "max_excess_layers": f"L{int(top['layer_a'])}->L{int(top['layer_b'])}"}
    return out


def emotions_in(df: pd.DataFrame) -> list[str]:
    return [e for e in EMOTIONS if e in set(df["emotion"])] + sorted(set(df["emotion"]) - set(EMOTIONS))


# ------------------------------------------------------------------------------------------------ stage pieces

def declared_effect_samples(dvc_yaml: Path, stage: str = "statistics") -> list[Path]:
    """The `effect_samples.parquet` files among `stage`'s deps in dvc.yaml (a dep may be the file or the stage
    folder holding it): a new effect-producing stage joins the statistics by one deps line, and nothing the
    pipeline does not declare is read."""
    import yaml

    if not Path(dvc_yaml).exists():
        return []
    spec = (yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage) or {}
    found = []
    for dep in spec.get("deps", []) or []:
        path = Path(str(dep))
        if path.name == "effect_samples.parquet":
            found.append(path)
        elif path.suffix == "" and (path / "effect_samples.parquet").exists():
            found.append(path / "effect_samples.parquet")
    return sorted(set(found))


def load_effect_samples(paths: Sequence[Path]) -> pd.DataFrame:
    """Read and validate effect_samples files. Rows whose value is not finite (an undefined metric on some unit)
    are dropped with a warning; their count per file is in `dropped_non_finite` of the returned frame's attrs."""
    import logging

    parts, dropped = [], {}
    for path in paths:
        if not Path(path).exists():
            raise DataError(f"{path}: declared in dvc.yaml but missing: run its stage first")
        df = pd.read_parquet(path)
        if "value" in df:
            values = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(values)
            if bad.any():
                logging.getLogger(__name__).warning("%s: dropping %d non-finite values", path, int(bad.sum()))
                dropped[str(path)] = int(bad.sum())
                df = df[~bad]
        parts.append(validate_samples(df, str(path)))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    out.attrs["dropped_non_finite"] = dropped
    return out


def combine_samples(sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate effect_samples from several sources; the same (family, effect) in two sources is an error."""
    seen: dict[tuple[str, str], str] = {}
    for name, df in sources.items():
        for key in df[["family", "effect"]].drop_duplicates().itertuples(index=False, name=None):
            if key in seen:
                raise DataError(f"effect {key[0]}/{key[1]} comes from both {seen[key]} and {name}")
            seen[key] = name
    frames = [validate_samples(df, name) for name, df in sources.items() if len(df)]
    if not frames:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["family", "effect", "group", "unit", "value"], kind="mergesort").reset_index(drop=True)


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


# The pre-registered pool of each family's headline (a substring of the effect id): the single-alpha stage's main
# condition is the prompt-only emotion vector on neutral prompts; its other variants are secondary.
HEADLINE_POOL = {"steering": "/neutral/prompt_only/"}
SIGNED_FAMILIES = ("steering_sweep", "steering")  # positive d = more of the emotion: the expected direction


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


def family_summary(effects: pd.DataFrame, cfg: StatsConfig) -> dict:
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


def power_table(cfg: StatsConfig) -> dict:
    """n per group needed for each target d at the target power (two-sample and one-sample/paired t-tests)."""
    return {"power": cfg.power, "alpha": cfg.power_alpha,
            "n_per_group_two_sample": {f"d={d:g}": int(np.ceil(required_n(d, cfg.power, cfg.power_alpha, True)))
                                       for d in cfg.power_ds},
            "n_one_sample": {f"d={d:g}": int(np.ceil(required_n(d, cfg.power, cfg.power_alpha, False)))
                             for d in cfg.power_ds}}


def write_plots(effects: pd.DataFrame, ktable: pd.DataFrame, png_dir: Path, csv_dir: Path, primary: str) -> None:
    """PNGs (for the report) and CSVs (for `dvc plots`): Cohen's d vs alpha with bootstrap CIs per emotion and layer
    (steering sweep, primary metric), the alignment k-selection (overlap minus null band), p-value histograms."""
    from emotion_circuits.reporting import plots as P

    png_dir, csv_dir = Path(png_dir), Path(csv_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    csv_dir.mkdir(parents=True, exist_ok=True)
    sweep = effects[(effects["family"] == "steering_sweep") & effects["metric"].str.startswith(f"{primary}_")]
    if len(sweep):
        emotions = emotions_in(sweep)
        fig, axes = P.panels(len(emotions))
        for ax, emotion in zip(axes, emotions):
            g = sweep[sweep["emotion"] == emotion]
            for i, (layer, lg) in enumerate(g.groupby("layer", sort=True)):
                lg = lg.sort_values("alpha")
                # one CSV per emotion and layer with fixed columns, so `dvc plots` can name its y fields
                (csv_dir / "steering_d").mkdir(exist_ok=True)
                lg[["alpha", "d", "d_ci_low", "d_ci_high"]].to_csv(
                    csv_dir / "steering_d" / f"{emotion}_L{int(layer):02d}.csv", index=False, float_format="%.6g")
                x = lg["alpha"].to_numpy() + 0.04 * (i - 1)
                err = np.vstack([lg["d"] - lg["d_ci_low"], lg["d_ci_high"] - lg["d"]]).clip(min=0)
                ax.errorbar(x, lg["d"], yerr=np.nan_to_num(err), marker="o", ms=3, capsize=2, label=f"layer {layer}")
                sig = lg[lg["significant"]]
                ax.scatter(sig["alpha"] + 0.04 * (i - 1), sig["d"], marker="*", s=60, color="k", zorder=3)
            P.label(ax, "alpha", "Cohen's d",
                    f"{emotion}: {primary}_{emotion}; d vs random dirs (alpha with controls) else vs 0; * = BH",
                    fontsize=8, hline=0)
        P._save(fig, png_dir / "steering_sweep_d.png")
    cross = ktable[~ktable["self_pair"]] if len(ktable) else ktable
    if len(cross):
        pairs = sorted(set(zip(cross["a"], cross["b"])))
        fig, axes = P.panels(len(pairs))
        for ax, (a, b) in zip(axes, pairs):
            g = cross[(cross["a"] == a) & (cross["b"] == b)]
            mean = g.groupby("k", sort=True)[["overlap_after", "null_band_q95", "excess"]].mean().reset_index()
            (csv_dir / "k_selection").mkdir(exist_ok=True)
            mean.to_csv(csv_dir / "k_selection" / f"{a}__{b}.csv", index=False, float_format="%.6g")
            for (la, lb), lg in g.groupby(["layer_a", "layer_b"], sort=True):
                ax.plot(lg["k"], lg["excess"], marker="o", ms=3, label=f"L{la}->L{lb}")
            P.label(ax, "k (subspace dimension)", "overlap - null band q95", f"{a}->{b}: k supported where > 0",
                    hline=0)
        P._save(fig, png_dir / "k_selection.png")
    if len(effects):
        fams = sorted(set(effects["family"]))
        fig, axes = P.panels(len(fams), 4, 3.2)
        for ax, fam in zip(axes, fams):
            ax.hist(effects.loc[effects["family"] == fam, "p"].dropna(), bins=np.linspace(0, 1, 21), color="C0")
            P.label(ax, "permutation p (unadjusted)", "effects", f"{fam}: p-values (flat = no effects)", legend=False)
        P._save(fig, png_dir / "pvalues.png")
