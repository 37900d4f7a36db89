"""Shared pieces of the steering stages: metric families, metrics JSON and plots."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS
from emotion_circuits.evaluation.catalog import families_in, metric_families
from emotion_circuits.params import SteeringCommonParams, SteeringParams, SteeringSweepParams
from emotion_circuits.steering.sweep import best_rows

FAMILIES = metric_families()  # every registered evaluator's metric families, in registry order


def sweep_metrics(summary: pd.DataFrame, common: SteeringCommonParams, g: SteeringSweepParams,
                  n_conditions: int) -> dict:
    """metrics/steering_sweep/metrics.json: per emotion the best condition with its CI, random null and fluency
    (no timing: that goes to `generation_timing` -> timing.json, so reruns give the same bytes)."""
    c = common
    primary = c.primary_metric if f"{c.primary_metric}_effect" in summary else families_in(summary.rename(
        columns=lambda col: col.replace("_effect", "_x")))[0]
    out = {"model": c.model, "primary_metric": primary, "vector_position": c.vector_position, "unit": c.unit,
           "direction": c.direction,
           "grid": {"layers": list(g.layers), "alphas": list(g.alphas), "n_prompts": g.n_prompts,
                    "n_random": g.n_random, "random_alphas": list(g.random_alphas), "n_conditions": n_conditions},
           "best": {e: {name: {"layer": int(r["layer"]), "alpha": float(r["alpha"]),
                                **_effect_entry(r, primary),
                                "other_metrics": {f: float(r[f"{f}_effect"]) for f in FAMILIES
                                                  if f != primary and f"{f}_effect" in r}}
                         for name, r in picks.items()}
                    for e, picks in best_rows(summary, primary, g.random_alphas).items()}}
    at_random = summary[summary["alpha"].isin(g.random_alphas)]
    out["vs_random"] = {
        f"{r.emotion}|L{r.layer:02d}|a{r.alpha:+g}": {
            "effect": getattr(r, f"{primary}_effect_on_random_prompts", None),
            "random_mean": getattr(r, f"{primary}_random_mean", None),
            "random_q95": getattr(r, f"{primary}_random_q95", None),
            "p": getattr(r, f"{primary}_p", None), "nll_delta": r.nll_delta}
        for r in at_random.itertuples()}
    return out


def write_sweep_plots(summary: pd.DataFrame, live, primary: str) -> None:
    """Effect vs alpha per layer with the random band (PNG + one plot table per emotion and layer, logged through
    the stage's `reporting.live.StageLive`), and the effect-fluency frontier."""
    from emotion_circuits.reporting import plots as P

    col = f"{primary}_effect"
    png_dir = live.figures
    emotions = [e for e in EMOTIONS if e in set(summary["emotion"])]
    fig, axes = P.panels(len(emotions))
    for ax, emotion in zip(axes, emotions):
        g = summary[summary["emotion"] == emotion]
        for layer, lg in g.groupby("layer", sort=True):  # fixed columns per file, so dvc.yaml names the series
            lg = lg.sort_values("alpha")
            series = lg[["alpha", col]].rename(columns={col: "effect"})
            for q in ("q05", "q95"):  # no random band where no random controls ran (random_alphas: [])
                band = f"{primary}_random_{q}"
                series[f"random_{q}"] = lg[band] if band in lg else np.nan
            live.log_table(f"{emotion}_L{layer}", series, "alpha", ["effect", "random_q05", "random_q95"],
                           y_label="effect on P(emotion) vs unsteered, with the equal-norm random 5-95% band")
        for layer, lg in g.groupby("layer", sort=True):
            lg = lg.sort_values("alpha")
            (line,) = ax.plot(lg["alpha"], lg[col], marker="o", ms=3, label=f"layer {layer}")
            if f"{primary}_random_q05" in lg:
                r = lg.dropna(subset=[f"{primary}_random_q05"])
                ax.vlines(r["alpha"] + 0.03 * layer / 10, r[f"{primary}_random_q05"], r[f"{primary}_random_q95"],
                          color=line.get_color(), alpha=0.5, lw=4)
        P.label(ax, "alpha", "effect vs unsteered", f"{emotion}: effect on {primary}_{emotion} (bars: random 5-95%)",
                hline=0)
    P.save_figure(fig, png_dir / "effect_vs_alpha.png")
    fig, axes = P.panels(len(emotions))
    for ax, emotion in zip(axes, emotions):
        g = summary[summary["emotion"] == emotion]
        sc = ax.scatter(g["nll_delta"], g[col], c=g["layer"], s=12 + 8 * np.abs(g["alpha"]), cmap="viridis")
        P.label(ax, "NLL increase (nats/token, unsteered model)", "effect", f"{emotion}: effect vs fluency",
                legend=False)
        fig.colorbar(sc, ax=ax, label="layer")
    P.save_figure(fig, png_dir / "effect_vs_fluency.png")


def _effect_entry(r, primary: str) -> dict:
    """The primary effect of one summary row (namedtuple or Series) with its CI, random null and fluency."""
    def get(name: str):
        value = r[name] if isinstance(r, pd.Series) and name in r else getattr(r, name, np.nan)
        return None if value is None or pd.isna(value) else float(value)

    return {"effect": get(f"{primary}_effect"), "ci_low": get(f"{primary}_ci_low"),
            "ci_high": get(f"{primary}_ci_high"), "random_mean": get(f"{primary}_random_mean"),
            "random_q95": get(f"{primary}_random_q95"), "p_vs_random": get(f"{primary}_p"),
            "z_vs_random": get(f"{primary}_z"), "nll_delta": get("nll_delta"), "repetition": get("repetition"),
            "broken": bool(r["broken"] if isinstance(r, pd.Series) else r.broken),
            "n": int(r["n"] if isinstance(r, pd.Series) else r.n)}


def generation_timing(seconds: float, n_tokens: int) -> dict:
    """The generation's wall seconds and tokens/s for the stage's timing.json (`StageLive.log_timing`)."""
    return {"generation_wall_seconds": round(seconds, 3), "generated_tokens": n_tokens,
            "generated_tokens_per_s": round(n_tokens / max(seconds, 1e-9), 1)}


def single_metrics(parts: dict, common: SteeringCommonParams, single: SteeringParams, alpha: float,
                   n_conditions: int) -> dict:
    """metrics/steering_alpha.json: effects at the chosen alpha per prompt set and variant, each with its CI,
    random null (neutral prompts), fluency."""
    primary = common.primary_metric
    out = {"model": common.model, "alpha": alpha, "layer": single.layer, "primary_metric": primary,
           "n_conditions": n_conditions}
    for name, frame in parts.items():
        section = {}
        for r in frame.itertuples():
            if name == "swap":
                key = f"{r.source_emotion}->{r.emotion}"
            elif hasattr(r, "variant"):
                key = f"{r.emotion}|{r.variant}"
            else:
                key = r.emotion
            section[key] = _effect_entry(r, primary)
        out[name] = section
    return out


def cross_entries(summary: pd.DataFrame, primary: str) -> dict:
    """metrics/cross_steering.json per pair: {emotion: {mapped: effect vs mapped random, native: effect vs 0}}."""
    out: dict = {}
    for r in summary.itertuples():
        out.setdefault(r.emotion, {})[r.kind] = _effect_entry(r, primary)
    return {"effects": out}
