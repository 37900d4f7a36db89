"""The confirmatory steering design: settings from params, the selection within the fluency budget, the
confirmation grid (random assignment, twins, split discipline) and its analysis (paired test vs random, BH,
dose-response trend, real-world paired test), on synthetic tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.errors import ParamsError
from emotion_circuits.model.site import Site
from emotion_circuits.params import StatisticsParams, SteeringCommonParams, SteeringConfirmParams
from emotion_circuits.steering import confirm, selection
from emotion_circuits.steering.prompts import split_prompts
from emotion_circuits.steering.settings import build_setting, settings_from

COMMON = SteeringCommonParams(evaluators=("keyword",), primary_metric="kw")
STATS = StatisticsParams(n_boot=200, n_perm=200)


def test_settings_override_common_knobs_and_reject_bad_entries():
    seeds, last3 = settings_from(COMMON, {"seeds": {"vector_position": "emotion_tokens", "window": "all"},
                                          "last3": {"band": 3, "mode": "norm", "layers": [3]}}, [1, 2], [1.0], 6)
    assert seeds.vectors == ("emotion_tokens", "vector", "raw") and seeds.layers == (1, 2)
    assert "every position" in seeds.describe() and seeds.common.window == "all"
    assert last3.band == 3 and last3.mode == "norm" and "spread over 3 layers" in last3.describe()
    c = last3.condition("Hi", 3, 2.0, np.ones(8, dtype=np.float32))
    assert (c.band, c.mode, c.alpha, c.window.kind) == (3, "norm", 2.0, "last")
    with pytest.raises(ParamsError, match=r"steering_sweep.settings.x: unknown key\(s\) colour"):
        build_setting("x", {"colour": 1}, COMMON, [1], [1.0])
    with pytest.raises(ParamsError, match=r"layer 4 with band 3 reaches layer 6, past the model's last layer 5"):
        build_setting("x", {"band": 3, "layers": [4]}, COMMON, [1], [1.0], 6)
    with pytest.raises(ParamsError, match="settings.x.mode must be one of add, norm, project"):
        build_setting("x", {"mode": "scale"}, COMMON, [1], [1.0])
    with pytest.raises(ParamsError, match="settings.x: steering_common.window must be one of"):
        build_setting("x", {"window": "everywhere"}, COMMON, [1], [1.0])
    with pytest.raises(ParamsError, match="alpha 0 is the unsteered baseline"):
        build_setting("x", {"alphas": [0, 1]}, COMMON, [1], [1.0])


def _summary(rows):
    return pd.DataFrame([dict(zip(["emotion", "setting", "layer", "alpha", "kw_effect", "nll_delta",
                                   "degenerate_delta"], r)) for r in rows])


def test_selection_takes_the_best_cell_within_budget_and_flags_a_pool_with_none():
    s = _summary([("anger", "seeds", 7, 1.0, 0.10, 0.10, 0.0), ("anger", "seeds", 7, 2.0, 0.50, 0.40, 0.0),
                  ("anger", "other", 9, 1.0, 0.30, 0.20, 0.0), ("anger", "other", 9, 2.0, 0.60, 0.10, 0.5),
                  ("anger", "other", 9, -1.0, 0.90, 0.00, 0.0),  # negative alphas are never picked
                  ("gratitude", "seeds", 7, 1.0, 0.20, 0.90, 0.0), ("gratitude", "seeds", 7, 2.0, 0.40, 1.20, 0.0)])
    picks = selection.pick(s, "kw", 0.25, 0.1)
    assert (picks["anger"]["seeds"]["alpha"], picks["anger"]["seeds"]["within_budget"]) == (1.0, True)
    # 0.60 loops (degenerate share +0.5) and 0.50 costs NLL +0.40: the best cell within both budgets is 0.30
    assert (picks["anger"]["frontier"]["setting"], picks["anger"]["frontier"]["selection_effect"]) == ("other", 0.3)
    assert picks["gratitude"]["seeds"] == picks["gratitude"]["frontier"]
    assert picks["gratitude"]["seeds"]["within_budget"] is False and picks["gratitude"]["seeds"]["alpha"] == 1.0


def test_random_assignment_is_balanced_and_never_repeats_a_direction_on_a_prompt():
    a = confirm.random_assignment(64, 50, 5)
    counts = np.bincount(np.concatenate(a), minlength=50)
    assert all(len(set(row)) == 5 for row in a) and counts.max() - counts.min() <= 1 and counts.sum() == 320


def _directions(d: int = 8) -> dict:
    rng = np.random.default_rng(0)
    return {("seeds", 1): EmotionDirections("m", Site(1), "emotion_tokens", "vector", rng.standard_normal((3, d)))}


def test_confirmation_grid_runs_only_confirmation_prompts_and_a_twin_pick_once():
    prompts = pd.DataFrame({"id": [f"p{i:03d}" for i in range(20)], "text": [f"Opening {i}" for i in range(20)]})
    splits = split_prompts(prompts, 8, 6)
    (seeds,) = settings_from(COMMON, {"seeds": {"vector_position": "emotion_tokens", "window": "all"}}, [1], [1.0])
    cell = {"setting": "seeds", "layer": 1, "alpha": 2.0}
    picks = {e: {"seeds": dict(cell), "frontier": dict(cell)} for e in ("gratitude", "anger", "apology")}
    cp = SteeringConfirmParams(n_prompts=6, n_random=4, random_per_prompt=2, dose=(-1.0, 0.5))
    conds, meta = confirm.build_confirmation(splits["confirmation"], None, picks, {"seeds": seeds}, _directions(),
                                             COMMON, cp, seed=0)
    assert len(conds) == len(meta) == 6 + 3 * 6 * (1 + 2 + 2)  # baselines + per emotion: run, randoms, doses
    assert set(meta["prompt_id"]) == set(splits["confirmation"]["id"])
    assert not set(meta["prompt_id"]) & set(splits["selection"]["id"])
    assert set(meta["pick"]) == {"none", "seeds"}  # the identical frontier pick is not run twice
    dose = meta[meta["kind"] == "dose"]
    assert sorted(set(dose["alpha"])) == [-2.0, 1.0] and set(dose["alpha_factor"]) == {-1.0, 0.5}
    rnd = [c for c, k in zip(conds, meta["kind"]) if k == "random"]
    v = _directions()[("seeds", 1)]["anger"].vector  # emotions run in sorted order: anger first
    assert np.allclose([np.linalg.norm(c.direction) for c in rnd[:12]], np.linalg.norm(v), rtol=1e-5)
    assert all(c.window.kind == "all" and c.alpha == 2.0 for c in rnd)


def _generations(effect: float, slope_sign: float = 1.0, n: int = 24, seed: int = 0) -> pd.DataFrame:
    """A confirmation table for one emotion and pick with a known effect beyond random and a dose slope."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pid = f"p{i:02d}"
        rows.append(dict(prompt_id=pid, prompt_set="neutral", kind="baseline", emotion="none", pick="none",
                         alpha=0.0, random_id=-1, kw_gratitude=0.0, nll=1.0, repetition=0.0, degenerate=0.0))
        base = dict(prompt_id=pid, prompt_set="neutral", emotion="gratitude", pick="seeds", layer=3, setting="s")
        rows.append(dict(base, kind="emotion", alpha=2.0, random_id=-1, kw_gratitude=float(rng.random() < effect),
                         nll=1.1, repetition=0.0, degenerate=0.0))
        for j in range(3):
            rows.append(dict(base, kind="random", alpha=2.0, random_id=(i + j) % 6, kw_gratitude=0.0, nll=1.05,
                             repetition=0.0, degenerate=0.0))
        for a in (-2.0, 1.0):
            rows.append(dict(base, kind="dose", alpha=a, random_id=-1, nll=1.0, repetition=0.0, degenerate=0.0,
                             kw_gratitude=float(rng.random() < max(0.0, slope_sign * a / 2 * effect))))
    table = pd.DataFrame(rows).assign(prompt="An opening", text="a continuation")
    for m in ("kw_gratitude", "nll", "repetition", "degenerate"):
        base = table[table["kind"] == "baseline"].set_index("prompt_id")[m]
        table[f"effect_{m}"] = table[m] - table["prompt_id"].map(base)
    return table


def test_analysis_confirms_a_real_effect_and_reports_its_trend_and_fluency():
    picks = {"gratitude": {"seeds": {"setting": "s", "layer": 3, "alpha": 2.0}}}
    res = confirm.analyse(_generations(0.8), picks, ["kw"], "kw", (0.25, 0.1), STATS, 0)
    v = res["verdicts"]["gratitude"]["seeds"]
    assert v["steers"] and v["verdict"] == "steers" and v["effect_vs_random"] > 0.5 and v["p"] < 0.01
    assert v["ci_low"] > 0 and v["random_rate"] == 0.0 and v["random_beats"] == 0.0 and v["n_random"] == 6
    assert v["nll_delta"] == pytest.approx(0.1) and v["within_budget"]
    samples = res["samples"]
    assert set(samples["family"]) == {confirm.FAMILY} and (samples["group"] == "null").sum() == 24  # paired
    trend = res["trend"]["gratitude"]["seeds"]["kw"]
    assert trend["slope"] > 0 and trend["p"] < 0.05 and trend["alphas"] == [-2.0, 0.0, 1.0, 2.0]


def test_analysis_does_not_confirm_a_null_effect():
    picks = {"gratitude": {"seeds": {"setting": "s", "layer": 3, "alpha": 2.0}}}
    res = confirm.analyse(_generations(0.0), picks, ["kw"], "kw", (0.25, 0.1), STATS, 0)
    v = res["verdicts"]["gratitude"]["seeds"]
    assert not v["steers"] and v["verdict"] == "does not steer" and v["p"] == 1.0
    assert res["trend"]["gratitude"]["seeds"]["kw"]["slope"] == 0.0


def test_real_world_paired_test_and_twin_expansion():
    rows = []
    for i in range(12):
        pid = f"rw{i:02d}"
        rows.append(dict(prompt_id=pid, prompt_set="real_world", kind="baseline", emotion="none", pick="none",
                         p_gratitude=0.1))
        rows.append(dict(prompt_id=pid, prompt_set="real_world", kind="emotion", emotion="gratitude", pick="seeds",
                         p_gratitude=0.1 + 0.05 * (i + 1)))
    table = pd.DataFrame(rows)
    cell = {"setting": "s", "layer": 1, "alpha": 1.0}
    table = confirm.expand_twins(table, {"gratitude": {"seeds": cell, "frontier": dict(cell)}})
    per_text, tests = confirm.real_world_tests(table, ["p"])
    assert set(per_text["pick"]) == {"seeds", "frontier"}
    t = tests["gratitude"]["frontier"]["p"]
    assert t["n_up"] == 12 and t["change"] == pytest.approx(0.325) and t["p_wilcoxon"] < 0.001


def test_the_frontier_goal_needs_the_rate_the_budget_and_the_random_null_together():
    from emotion_circuits.steering.tables import GOAL_RATE, frontier_goal

    def v(rate, within, steers):
        return {"rate": rate, "within_budget": within, "steers": steers}

    goal = frontier_goal({"gratitude": {"seeds": v(0.9, True, True), "frontier": v(0.45, True, True)},
                          "anger": {"seeds": v(0.5, True, True), "frontier": v(0.5, False, True)},
                          "apology": {"seeds": v(0.6, True, False)}})  # frontier twin missing: seeds stands in
    assert goal["gratitude"]["met"] and goal["gratitude"]["rate"] == 0.45 and GOAL_RATE == 0.40
    assert not goal["anger"]["met"] and not goal["apology"]["met"]
