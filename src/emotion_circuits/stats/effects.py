"""Effect sizes (Cohen's d, Hedges' g) of the pipeline's effects; and, until their owners move them, the steering
stages' adapters to the effect_samples table (`sweep_effect_samples`, `single_effect_samples`, `effect_labels`,
`own_metric`). The statistics around them live next door: `samples` (the table), `intervals` (the one CI),
`nulls` (vs_null, permutation p), `multiple` (BH), `power`, `summary` (one row per effect), `kselect`, `plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emotion_circuits.evaluation.catalog import own_metric  # callers here and in steering read it from here
from emotion_circuits.model.site import Site
from emotion_circuits.stats.samples import LABEL_COLUMNS, SAMPLE_COLUMNS, sample_rows


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


def effect_labels(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, effect): the typed label columns (`LABEL_COLUMNS`: layer, hook site, alpha) its
    stage wrote next to the samples, so nothing is parsed back out of the effect id (a readable label only)."""
    present = [c for c in LABEL_COLUMNS if c in samples.columns]
    labelled = samples.dropna(subset=present, how="all") if present else samples.iloc[:0]
    return labelled.groupby(["family", "effect"], sort=True)[present].first().reset_index()


def with_labels(parts: list[pd.DataFrame], site: Site, alpha: float | None = None) -> list[pd.DataFrame]:
    """effect_samples rows of one steering condition with its typed labels (the same values its id shows)."""
    labels = {"layer": site.layer, "hook": site.name, **({} if alpha is None else {"alpha": float(alpha)})}
    return [p.assign(**labels) for p in parts]


def metric_samples(family: str, effect_id, emotion: str, metric_families: Sequence[str], g: pd.DataFrame,
                   null: pd.DataFrame | None, prompt_unit: dict) -> list[pd.DataFrame]:
    """Effect rows (and their null rows) for the emotion's own metric (as its evaluator declares it) in each
    metric family present in `g`."""
    parts = []
    for fam in metric_families:
        metric = own_metric(emotion, fam)
        col = f"effect_{metric}"
        if metric is None or col not in g:
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

    Per emotion x setting x layer x alpha and metric family: the per-prompt change vs the unsteered run on the
    emotion's own metric (`effect_<metric>`). Where equal-norm random directions ran in the same setting, layer
    and alpha (for this emotion, or shared by every emotion: emotion "any"), they are the null (every (prompt,
    random direction) run, unit = prompt) and the effect is restricted to the prompts the null ran on, as in
    `sweep.summarise_effects`; elsewhere the test is against 0 on all prompts. Tables from before settings
    existed (no `setting` column) read as one setting.
    """
    table = table if "setting" in table else table.assign(setting="default")
    prompt_unit = {p: i for i, p in enumerate(sorted(table["prompt_id"].unique()))}
    emo, rnd = table[table["kind"] == "emotion"], table[table["kind"] == "random"]
    parts = []
    for (emotion, setting, layer, alpha), g in emo.groupby(["emotion", "setting", "layer", "alpha"], sort=True):
        r = rnd[rnd["emotion"].isin([emotion, "any"]) & (rnd["setting"] == setting) & (rnd["layer"] == layer)
                & (rnd["alpha"] == alpha)]
        if len(r):
            g = g[g["prompt_id"].isin(set(r["prompt_id"]))]
        site = Site(int(layer), "resid_pre")
        prefix = f"{emotion}/{setting}/{site.name}/alpha={float(alpha):g}"
        parts += with_labels(metric_samples(family, lambda m: f"{prefix}/{m}", emotion, metric_families, g,
                                            r if len(r) else None, prompt_unit), site, alpha)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))


def single_effect_samples(table: pd.DataFrame, metric_families: Sequence[str],
                          family: str = "steering") -> pd.DataFrame:
    """results/steering/generations.parquet -> effect_samples.

    Neutral prompts: every variant; the equal-norm random directions are the null of the conditions whose rows
    say `null_matched` (the experiment that built them knows: `steering.single`; the iterative variant and the
    emotion-token vectors differ in application or norm: tested against 0). Real-world texts and swap patching
    have no matching null: tested against 0.
    """
    prompt_unit = {p: i for i, p in enumerate(sorted(table["prompt_id"].unique()))}
    rnd = table[(table["kind"] == "random") & (table["prompt_set"] == "neutral")]
    parts = []
    steered = table[table["kind"].isin(["emotion", "swap"])]
    keys = ["prompt_set", "kind", "variant", "source_emotion", "emotion", "layer", "alpha"]
    for (prompt_set, kind, variant, source, emotion, layer, alpha), g in steered.groupby(keys, sort=True):
        r = rnd[(rnd["emotion"] == emotion) & (rnd["layer"] == layer) & (rnd["alpha"] == alpha)]
        use_null = prompt_set == "neutral" and bool(g["null_matched"].all()) and len(r) > 0
        label = f"{source}->{emotion}" if kind == "swap" else emotion
        site = Site(int(layer), "resid_pre")
        prefix = f"{label}/{site.name}/alpha={float(alpha):g}/{prompt_set}/{variant}"
        null = r[r["prompt_id"].isin(set(g["prompt_id"]))] if use_null else None
        parts += with_labels(metric_samples(family, lambda m: f"{prefix}/{m}", emotion, metric_families, g, null,
                                            prompt_unit), site, alpha)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))


# The pre-registered pool of each family's headline (a substring of the effect id): the single-alpha stage's main
# condition is the prompt-only emotion vector on neutral prompts; its other variants are secondary.
HEADLINE_POOL = {"steering": "/neutral/prompt_only/"}
