"""Shared pieces of the steering stages: metric families, metrics JSON and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_circuits.evaluation.catalog import families_in, metric_families
from emotion_circuits.params import (StatisticsParams, SteeringCommonParams, SteeringConfirmParams, SteeringParams,
                                     SteeringSweepParams)
from emotion_circuits.steering.selection import best_cell, within_budget
from emotion_circuits.steering.settings import Setting

FAMILIES = metric_families()
POWER_D = 0.5  # the effect size (Cohen's d_z) the confirmation's power is stated at (issue 17's design target)  # every registered evaluator's metric families, in registry order


def sweep_metrics(summary: pd.DataFrame, picks: dict, settings: Sequence[Setting], common: SteeringCommonParams,
                  g: SteeringSweepParams, budget: SteeringParams, n_conditions: int) -> dict:
    """metrics/steering_sweep/metrics.json: the grid, each setting, each emotion's picks (selection split: biased
    upward by the choice, the confirmation stage reports the result), per (setting, emotion) the best cell within
    budget and the random band where it ran (no timing: that goes to timing.json, so reruns give the same bytes)."""
    c = common
    primary = c.primary_metric if f"{c.primary_metric}_effect" in summary else families_in(summary.rename(
        columns=lambda col: col.replace("_effect", "_x")))[0]
    out = {"model": c.model, "primary_metric": primary, "nll_budget": budget.nll_budget,
           "degenerate_budget": budget.degenerate_budget, "direction": c.direction,
           "grid": {"layers": sorted({L for s in settings for L in s.layers}), "n_prompts": g.n_prompts, "n_random": g.n_random, "random_prompts": g.random_prompts,
                    "random_settings": list(g.random_settings), "n_conditions": n_conditions,
                    "n_cells": int(len(summary))},
           "settings": {s.name: s.to_dict() for s in settings}, "picks": picks}
    ok = within_budget(summary, budget.nll_budget, budget.degenerate_budget)
    by_setting: dict = {}
    for (setting, emotion), grp in summary.groupby(["setting", "emotion"], sort=True):
        cell = best_cell(grp, primary, budget.nll_budget, budget.degenerate_budget)
        r = grp[(grp["layer"] == cell["layer"]) & (grp["alpha"] == cell["alpha"])].iloc[0]
        by_setting.setdefault(setting, {})[emotion] = {
            "layer": cell["layer"], "alpha": cell["alpha"], "within_budget": cell["within_budget"],
            "n_within_budget": int(ok[grp.index].sum()), **_effect_entry(r, primary),
            "degenerate_delta": None if pd.isna(r.get("degenerate_delta", np.nan)) else float(r["degenerate_delta"]),
            "strongest_effect": float(grp[f"{primary}_effect"].max()),
            "other_metrics": {f: float(r[f"{f}_effect"]) for f in FAMILIES if f != primary and f"{f}_effect" in r}}
    out["best_by_setting"] = by_setting
    banded = summary.dropna(subset=[f"{primary}_random_q95"]) if f"{primary}_random_q95" in summary else summary[:0]
    out["vs_random_band"] = {
        f"{r.setting}|{r.emotion}|L{r.layer:02d}|a{r.alpha:+g}": {
            "effect": getattr(r, f"{primary}_effect_on_random_prompts"),
            "random_q95": getattr(r, f"{primary}_random_q95"), "p": getattr(r, f"{primary}_p"),
            "nll_delta": r.nll_delta}
        for r in banded.itertuples()}
    return out


def read_peers(path: str | Path) -> list[dict]:
    """benchmarks/peers.py's points (metrics/peers.json, git-tracked): [] when the benchmark has not been run."""
    path = Path(path)
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).get("points", []))


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


def confirm_metrics(res: dict, picks: dict, settings: dict, common: SteeringCommonParams, cp: SteeringConfirmParams,
                    st: StatisticsParams, confirm_ids: Sequence[str], select_ids: Sequence[str],
                    n_conditions: int) -> dict:
    """metrics/steering_confirm/metrics.json: the design (splits, randoms, power), per emotion and pick the
    verdict vs random (primary metric, BH across emotions x picks), the other metric families' effects, the
    dose-response trend and the real-world before/after tests."""
    from emotion_circuits.stats.power import achieved_power, required_n
    from emotion_circuits.steering.confirm import SECONDARY

    n = len(confirm_ids)
    secondary: dict = {}
    effects = res["effects"]
    for r in (effects[effects["family"] == SECONDARY].itertuples() if len(effects) else []):
        emotion, pick, metric = r.effect.split("/")
        secondary.setdefault(emotion, {}).setdefault(pick, {})[metric] = {
            "effect_vs_random": r.diff, "ci_low": r.diff_ci_low, "ci_high": r.diff_ci_high, "p": r.p,
            "q": r.p_adj}
    used = sorted({c["setting"] for entry in picks.values() for c in entry.values()})
    return {"model": common.model, "primary_metric": common.primary_metric,
            "design": {"n_prompts": n, "n_selection_prompts": len(select_ids),
                       "splits_disjoint": not set(confirm_ids) & set(select_ids), "n_random": cp.n_random,
                       "random_per_prompt": cp.random_per_prompt, "dose": list(cp.dose),
                       "test": "paired by prompt: emotion effect - mean of the prompt's random effects "
                               "(sign-flip permutation, BCa CI, BH across emotions x picks)",
                       "power": {"d_z": POWER_D, "achieved": achieved_power(POWER_D, n, None, st.power_alpha),
                                 "required_n": int(np.ceil(required_n(POWER_D, st.power, st.power_alpha, False)))},
                       "n_conditions": n_conditions},
            "settings": {name: settings[name].to_dict() for name in used},
            "verdicts": res["verdicts"], "secondary": secondary, "dose_response": res["trend"],
            "real_world": res["real_world_tests"], "examples": examples_entries(res["examples"]),
            "goal": frontier_goal(res["verdicts"])}


GOAL_RATE = 0.40  # issue 17's frontier goal: this keyword rate within the fluency budget, confirmed vs random


def frontier_goal(verdicts: dict) -> dict:
    """Per emotion: is the best setting's confirmed rate >= GOAL_RATE, within the budget and beyond random?"""
    out = {}
    for emotion, picks in verdicts.items():
        v = picks.get("frontier") or picks.get("seeds")
        if v is None:
            continue
        out[emotion] = {"target_rate": GOAL_RATE, "rate": v["rate"], "within_budget": v["within_budget"],
                        "steers": v["steers"],
                        "met": bool(v["rate"] >= GOAL_RATE and v["within_budget"] and v["steers"])}
    return out


def examples_entries(frame: pd.DataFrame) -> dict:
    """{emotion: {pick: [{prompt, unsteered, steered, random}, ...]}}: the report's side-by-side continuations."""
    out: dict = {}
    for r in frame.itertuples():
        out.setdefault(r.emotion, {}).setdefault(r.pick, []).append(
            {"prompt": r.prompt, "unsteered": r.unsteered, "steered": r.steered, "random": r.random})
    return out
