"""The confirmatory steering test (stage `steering_confirm`): each emotion's picks from the selection split
(`steering.selection`), run on the disjoint confirmation split against equal-norm random directions in the same
setting, with a dose-response over multiples of the picked alpha and, optionally, the real-world texts.

Design, per emotion and pick: every confirmation prompt runs the emotion direction once and `random_per_prompt`
of the pick's `n_random` random directions (assigned round-robin, so each direction runs on about
n_prompts x random_per_prompt / n_random prompts, all of them confirmation prompts). The test is paired by prompt:
the emotion's effect minus the mean of that prompt's random effects (statistics stage machinery: sign-flip
permutation p, BCa CI, Cohen's d_z, Benjamini-Hochberg across emotions and picks in family `steering_confirm`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.evaluation.catalog import own_metric
from emotion_circuits.model.site import Site
from emotion_circuits.params import StatisticsParams, SteeringCommonParams, SteeringConfirmParams
from emotion_circuits.stats.intervals import interval
from emotion_circuits.stats.samples import sample_rows
from emotion_circuits.stats.summary import analyse_samples
from emotion_circuits.steering.engine import Condition, random_directions
from emotion_circuits.steering.selection import PICKS
from emotion_circuits.steering.settings import Setting
from emotion_circuits.steering.sweep import ConditionSet

FAMILY = "steering_confirm"            # the confirmatory family: the primary metric, BH across emotions x picks
SECONDARY = "steering_confirm_other"   # the other metric families of the same runs (exploratory)


def distinct_picks(picks: Mapping[str, Mapping[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per emotion the picks to run: a `frontier` pick identical to the `seeds` pick is run once (as seeds) and
    reported for both (`same_as`)."""
    out = {}
    for emotion, entry in picks.items():
        run = {}
        for name in PICKS:
            cell = entry.get(name)
            if cell is None:
                continue
            twin = next((k for k, v in run.items() if (v["setting"], v["layer"], v["alpha"]) ==
                         (cell["setting"], cell["layer"], cell["alpha"])), None)
            if twin is None:
                run[name] = cell
        out[emotion] = run
    return out


def random_assignment(n_prompts: int, n_random: int, per_prompt: int) -> list[list[int]]:
    """Which random directions each prompt runs: prompt i takes directions (i * per_prompt + k) mod n_random,
    so every direction runs on the same number of prompts (+-1) and no prompt repeats one."""
    return [[(i * per_prompt + k) % n_random for k in range(per_prompt)] for i in range(n_prompts)]


def build_confirmation(prompts: pd.DataFrame, real_world: pd.DataFrame | None, picks: Mapping[str, Mapping],
                       settings: Mapping[str, Setting], directions: Mapping[tuple[str, int], EmotionDirections],
                       common: SteeringCommonParams, cp: SteeringConfirmParams,
                       seed: int) -> tuple[list[Condition], pd.DataFrame]:
    """Conditions and rows: baselines, each pick's emotion run, its random directions, its dose-response (on the
    confirmation prompts) and, with `real_world`, the pick on every real-world text with that text's baseline.
    `directions[(setting name, layer)]` are the directions the pick's setting steers with at that layer."""
    grid = ConditionSet(common)
    sets = [("neutral", prompts)] + ([("real_world", real_world)] if real_world is not None else [])

    def add(condition, p, prompt_set, kind, emotion="none", pick="none", cell=None, factor=0.0, random_id=-1):
        grid.append(condition, prompt_id=p.id, prompt=p.text, prompt_set=prompt_set, kind=kind, emotion=emotion, pick=pick,
                    setting=cell["setting"] if cell else "none", layer=cell["layer"] if cell else -1,
                    alpha=cell["alpha"] * factor if cell else 0.0, alpha_factor=float(factor), random_id=random_id)

    for prompt_set, frame in sets:
        for p in frame.itertuples():
            add(Condition(p.text), p, prompt_set, "baseline")
    assignment = random_assignment(len(prompts), cp.n_random, cp.random_per_prompt)
    for e_index, (emotion, run) in enumerate(sorted(distinct_picks(picks).items())):
        for p_index, (name, cell) in enumerate(run.items()):
            setting, layer, alpha = settings[cell["setting"]], cell["layer"], cell["alpha"]
            v = directions[(cell["setting"], layer)][emotion].vector
            randoms = random_directions(v, cp.n_random, seed + 7919 * (e_index + 1) + 104729 * p_index)
            for prompt_set, frame in sets:
                for p in frame.itertuples():
                    add(setting.condition(p.text, layer, alpha, v), p, prompt_set, "emotion", emotion, name, cell, 1.0)
            for i, p in enumerate(prompts.itertuples()):
                for j in assignment[i]:
                    add(setting.condition(p.text, layer, alpha, randoms[j]), p, "neutral", "random", emotion, name,
                        cell, 1.0, j)
                for f in cp.dose:
                    add(setting.condition(p.text, layer, alpha * f, v), p, "neutral", "dose", emotion, name, cell, f)
    return grid.table()


def expand_twins(table: pd.DataFrame, picks: Mapping[str, Mapping[str, dict]]) -> pd.DataFrame:
    """The generations table with a pick that was run under its twin's name copied under its own name too."""
    run = distinct_picks(picks)
    extra = []
    for emotion, entry in picks.items():
        for name in PICKS:
            if name in entry and name not in run[emotion]:
                cell = entry[name]
                twin = next(k for k, v in run[emotion].items() if (v["setting"], v["layer"], v["alpha"]) ==
                            (cell["setting"], cell["layer"], cell["alpha"]))
                extra.append(table[(table["emotion"] == emotion) & (table["pick"] == twin)].assign(pick=name))
    return pd.concat([table, *extra], ignore_index=True) if extra else table


def effect_samples(table: pd.DataFrame, families: Sequence[str], primary: str) -> pd.DataFrame:
    """effect_samples rows: per emotion, pick and metric family, the emotion run's per-prompt effect on the
    emotion's own metric (group effect) and the mean of that prompt's random runs (group null): paired."""
    neutral = table[table["prompt_set"] == "neutral"]
    units = {p: i for i, p in enumerate(sorted(neutral["prompt_id"].unique()))}
    parts = []
    for (emotion, pick), g in neutral[neutral["kind"].isin(["emotion", "random"])].groupby(["emotion", "pick"],
                                                                                           sort=True):
        emo, rnd = g[g["kind"] == "emotion"].sort_values("prompt_id"), g[g["kind"] == "random"]
        for fam in families:
            metric = own_metric(emotion, fam)
            col = f"effect_{metric}"
            if metric is None or col not in g:
                continue
            family = FAMILY if fam == primary else SECONDARY
            effect = f"{emotion}/{pick}/{metric}"
            null = rnd.groupby("prompt_id", sort=True)[col].mean()
            layer, alpha = int(emo["layer"].iloc[0]), float(emo["alpha"].iloc[0])
            labels = {"layer": layer, "hook": Site(layer).name, "alpha": alpha}
            parts += [sample_rows(family, effect, emotion, metric, "effect", emo["prompt_id"].map(units),
                                  emo[col]).assign(**labels),
                      sample_rows(family, effect, emotion, metric, "null", null.index.map(units), null.to_numpy())
                      .assign(**labels)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def random_beats(g: pd.DataFrame, col: str) -> float:
    """Share of random directions whose mean effect on their prompts reaches the emotion run's mean on the same
    prompts (the seeds' "random vs emotion" comparison, direction by direction)."""
    emo = g[g["kind"] == "emotion"].set_index("prompt_id")[col]
    rnd = g[g["kind"] == "random"]
    if rnd.empty:
        return float("nan")
    beats = [float(r[col].mean() >= emo.loc[r["prompt_id"]].mean()) for _, r in rnd.groupby("random_id")]
    return float(np.mean(beats))


def fluency(g: pd.DataFrame, cfg: StatisticsParams, seed: int) -> dict:
    """NLL rise with its CI, degenerate-share rise and repetition of the emotion runs."""
    nll = g["effect_nll"].to_numpy(dtype=float)
    low, high = interval(nll, None, cfg, seed)
    out = {"nll_delta": float(nll.mean()), "nll_ci_low": low, "nll_ci_high": high,
           "repetition": float(g["repetition"].mean())}
    if "effect_degenerate" in g:
        out["degenerate_delta"] = float(g["effect_degenerate"].mean())
    return out


def verdicts(table: pd.DataFrame, picks: Mapping[str, Mapping[str, dict]], effects: pd.DataFrame, primary: str,
             budget: tuple[float, float], cfg: StatisticsParams, seed: int) -> dict:
    """Per emotion and pick: steers or not (BH-significant positive paired effect vs random), the effect with
    its CI, p, q, d_z, power at d = 0.5, random_beats, fluency and whether it stays within the budget."""
    neutral = table[table["prompt_set"] == "neutral"]
    run = distinct_picks(picks)
    out: dict = {}
    for emotion, entry in sorted(picks.items()):
        metric = own_metric(emotion, primary)
        for name, cell in entry.items():
            g = neutral[(neutral["emotion"] == emotion) & (neutral["pick"] == name)]
            row = effects[(effects["family"] == FAMILY) & (effects["effect"] == f"{emotion}/{name}/{metric}")]
            if row.empty:
                continue
            r = row.iloc[0]
            emo = g[g["kind"] == "emotion"]
            flu = fluency(emo, cfg, seed)
            within = flu["nll_delta"] <= budget[0] and flu.get("degenerate_delta", 0.0) <= budget[1]
            steers = bool(r["significant"]) and float(r["diff"]) > 0
            out.setdefault(emotion, {})[name] = {
                **{k: cell[k] for k in ("setting", "layer", "alpha")}, "metric": metric,
                "verdict": "steers" if steers else "does not steer", "steers": steers,
                "rate": float(emo[metric].mean()), "baseline_rate": float(
                    table[(table["kind"] == "baseline") & table["prompt_id"].isin(emo["prompt_id"])][metric].mean()),
                "random_rate": float(g[g["kind"] == "random"][metric].mean()),
                "effect_vs_random": float(r["diff"]), "ci_low": float(r["diff_ci_low"]),
                "ci_high": float(r["diff_ci_high"]), "p": float(r["p"]), "q": float(r["p_adj"]),
                "d_z": None if pd.isna(r["d"]) else float(r["d"]), "power_d0.5": float(r.get("power_d0.5", np.nan)),
                "n": int(r["n"]), "n_random": int(g[g["kind"] == "random"]["random_id"].nunique()),
                "random_beats": random_beats(g, f"effect_{metric}"), **flu, "within_budget": bool(within),
                "selection": {k: cell[k] for k in cell if k.startswith("selection_") or k in (
                    "within_budget", "n_cells", "n_within_budget")},
                "same_as": next((k for k in run[emotion] if k != name and name not in run[emotion]), None)}
    return out


def dose_response(table: pd.DataFrame, primary: str, families: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """Per emotion, pick and metric family: the mean effect at every alpha (0 = unsteered, the dose multiples,
    the pick) and a trend test: OLS of the per-prompt effect on alpha with prompt-clustered standard errors
    (statsmodels), its slope, CI and p, whether the means rise monotonically, and the effect at the most
    negative alpha (does -alpha reduce the emotion?)."""
    import statsmodels.api as sm

    neutral = table[(table["prompt_set"] == "neutral") & table["kind"].isin(["emotion", "dose"])]
    rows, trend = [], {}
    for (emotion, pick), g in neutral.groupby(["emotion", "pick"], sort=True):
        for fam in families:
            metric = own_metric(emotion, fam)
            col = f"effect_{metric}"
            if metric is None or col not in g:
                continue
            zero = g[g["kind"] == "emotion"].assign(alpha=0.0, alpha_factor=0.0)
            zero[col] = 0.0  # the unsteered run is the effect's zero on every prompt
            d = pd.concat([zero, g], ignore_index=True)
            means = d.groupby("alpha", sort=True)[col].agg(["mean", "sem", "count"]).reset_index()
            rows += [{"emotion": emotion, "pick": pick, "family": fam, "metric": metric, "alpha": float(m.alpha),
                      "effect": float(m.mean), "sem": float(0.0 if pd.isna(m.sem) else m.sem), "n": int(m.count)}
                     for m in means.itertuples()]
            y, x = d[col].to_numpy(dtype=float), sm.add_constant(d["alpha"].to_numpy(dtype=float))
            groups = pd.factorize(d["prompt_id"])[0]
            if np.ptp(y) == 0:
                slope, low, high, p = 0.0, 0.0, 0.0, 1.0
            else:
                fit = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups})
                slope, p = float(fit.params[1]), float(fit.pvalues[1])
                low, high = (float(v) for v in fit.conf_int()[1])
            ordered = means.sort_values("alpha")["mean"].to_numpy()
            negative = means[means["alpha"] < 0]
            trend.setdefault(emotion, {}).setdefault(pick, {})[fam] = {
                "metric": metric, "slope": slope, "slope_ci_low": low, "slope_ci_high": high, "p": p,
                "monotone": bool(np.all(np.diff(ordered) >= 0)),
                "alphas": [float(a) for a in means["alpha"]],
                "effect_at_most_negative": float(negative.iloc[0]["mean"]) if len(negative) else None}
    return pd.DataFrame(rows), trend


def real_world_tests(table: pd.DataFrame, families: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """Per emotion, pick and metric family on the real-world texts: the per-text score before (unsteered) and
    after (steered), the mean change and a paired Wilcoxon signed-rank test (scipy)."""
    from scipy.stats import wilcoxon

    real = table[table["prompt_set"] == "real_world"]
    base = real[real["kind"] == "baseline"].set_index("prompt_id")
    rows, tests = [], {}
    for (emotion, pick), g in real[real["kind"] == "emotion"].groupby(["emotion", "pick"], sort=True):
        for fam in families:
            metric = own_metric(emotion, fam)
            if metric is None or metric not in g:
                continue
            before, after = base.loc[g["prompt_id"], metric].to_numpy(float), g[metric].to_numpy(float)
            rows += [{"emotion": emotion, "pick": pick, "family": fam, "metric": metric, "prompt_id": pid,
                      "before": b, "after": a} for pid, b, a in zip(g["prompt_id"], before, after)]
            diff = after - before
            p = 1.0 if np.all(diff == 0) else float(wilcoxon(after, before, zero_method="wilcox").pvalue)
            tests.setdefault(emotion, {}).setdefault(pick, {})[fam] = {
                "metric": metric, "before": float(before.mean()), "after": float(after.mean()),
                "change": float(diff.mean()), "n": int(len(diff)), "n_up": int((diff > 0).sum()),
                "n_down": int((diff < 0).sum()), "p_wilcoxon": p}
    return pd.DataFrame(rows), tests


def examples(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per emotion and pick, `n` confirmation prompts side by side: unsteered, steered at the pick, and the
    prompt's first random direction of the same norm and setting."""
    neutral = table[table["prompt_set"] == "neutral"]
    base = neutral[neutral["kind"] == "baseline"].set_index("prompt_id")["text"]
    rows = []
    for (emotion, pick), g in neutral[neutral["kind"] == "emotion"].groupby(["emotion", "pick"], sort=True):
        rnd = neutral[(neutral["kind"] == "random") & (neutral["emotion"] == emotion) & (neutral["pick"] == pick)]
        for r in g.sort_values("prompt_id").head(n).itertuples():
            random_text = rnd[rnd["prompt_id"] == r.prompt_id].sort_values("random_id")["text"]
            rows.append({"emotion": emotion, "pick": pick, "prompt_id": r.prompt_id, "prompt": r.prompt,
                         "unsteered": base[r.prompt_id],
                         "steered": r.text, "random": random_text.iloc[0] if len(random_text) else ""})
    return pd.DataFrame(rows)


def analyse(table: pd.DataFrame, picks: Mapping[str, Mapping[str, dict]], families: Sequence[str], primary: str,
            budget: tuple[float, float], cfg: StatisticsParams, seed: int, n_examples: int = 3) -> dict:
    """Everything the stage writes: samples, effects, verdicts, dose-response, real-world tests, examples."""
    table = expand_twins(table, picks)
    samples = effect_samples(table, families, primary)
    effects = analyse_samples(samples, cfg, seed) if len(samples) else pd.DataFrame()
    dose, trend = dose_response(table, primary, families)
    real, real_tests = real_world_tests(table, families)
    return {"table": table, "samples": samples, "effects": effects,
            "verdicts": verdicts(table, picks, effects, primary, budget, cfg, seed), "dose": dose, "trend": trend,
            "real_world": real, "real_world_tests": real_tests, "examples": examples(table, n_examples)}
