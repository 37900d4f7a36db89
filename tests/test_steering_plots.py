"""Steering figures (`steering.plots`): the random-band mask, the Pareto frontier, and that every figure and plot
table is written from small synthetic frames, deterministically, with missing parts tolerated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from emotion_circuits.reporting import plots as P
from emotion_circuits.steering import plots as SP

FAMILIES = ("kw", "p", "lex", "vader")
EMOTIONS = ("gratitude", "anger")


class FakeLive:
    """What the plot writers use of `reporting.live.StageLive`: `figures` and `log_table`."""

    def __init__(self, figures: Path):
        self.figures = figures
        self.tables: dict[str, dict] = {}

    def log_table(self, name, frame, x, y, y_label=None, title=None, template="simple"):
        assert name not in self.tables, name
        self.tables[name] = {"frame": frame.copy(), "x": x, "y": y, "y_label": y_label}


def sweep_summary() -> pd.DataFrame:
    """Setting "band" (layers 3, 5; random controls at alpha 4 and 8) and "single" (layer 5, no controls)."""
    rng = np.random.default_rng(0)
    rows = []
    for e in EMOTIONS:
        for setting, layers in (("band", (3, 5)), ("single", (5,))):
            for layer in layers:
                for alpha in (2.0, 4.0, 8.0):
                    r = {"emotion": e, "layer": layer, "alpha": alpha, "setting": setting, "n": 16,
                         "nll_delta": 0.05 * alpha + 0.01 * layer, "repetition": 0.1, "broken": False}
                    for f in FAMILIES:
                        eff = float(rng.normal(0.02 * alpha, 0.02))
                        r.update({f"{f}_effect": eff, f"{f}_ci_low": eff - 0.05, f"{f}_ci_high": eff + 0.05})
                        if setting == "band" and alpha >= 4:
                            r.update({f"{f}_effect_on_random_prompts": eff, f"{f}_random_mean": 0.0,
                                      f"{f}_random_q05": -0.1, f"{f}_random_q95": 0.1 + 0.01 * layer,
                                      f"{f}_p": 0.04})
                    rows.append(r)
    frame = pd.DataFrame(rows)
    # fix the mask's cases: gratitude L3 a4 inside the band (<= q95, equal counts), gratitude L5 a8 above it
    at = lambda e, l, a: (frame["emotion"] == e) & (frame["layer"] == l) & (frame["alpha"] == a)  # noqa: E731
    equal = at("gratitude", 3, 4.0)
    frame.loc[equal, "kw_effect_on_random_prompts"] = frame.loc[equal, "kw_random_q95"]  # == q95: masked
    frame.loc[at("gratitude", 5, 8.0), "kw_effect_on_random_prompts"] = 0.5
    frame.loc[at("anger", 3, 8.0), "kw_effect_on_random_prompts"] = -0.2
    return frame


def test_within_random_band_marks_exactly_the_cells_not_above_random():
    s = sweep_summary()
    mask = SP.within_random_band(s, "kw")
    e, q = s["kw_effect_on_random_prompts"], s["kw_random_q95"]
    expected = [bool(np.isfinite(a) and np.isfinite(b) and a <= b) for a, b in zip(e, q)]
    assert mask.dtype == bool and mask.tolist() == expected
    assert mask.sum() >= 2 and not mask[s["setting"] == "single"].any()  # no band known: never masked
    gl3a4 = (s["emotion"] == "gratitude") & (s["layer"] == 3) & (s["alpha"] == 4.0) & (s["setting"] == "band")
    gl5a8 = (s["emotion"] == "gratitude") & (s["layer"] == 5) & (s["alpha"] == 8.0) & (s["setting"] == "band")
    assert mask[gl3a4].all() and not mask[gl5a8].any()
    no_random = s.drop(columns=[c for c in s if "random" in c])
    assert not SP.within_random_band(no_random, "kw").any()


def test_pareto_keeps_the_best_effect_at_or_below_each_nll():
    points = pd.DataFrame({"nll_delta": [0.3, 0.1, 0.2, 0.3, 0.5, 0.6, np.nan, 0.05],
                           "effect": [0.4, 0.2, 0.1, 0.5, 0.5, 0.7, 0.9, -0.1]})
    front = SP.pareto(points)
    assert front["nll_delta"].tolist() == [0.05, 0.1, 0.3, 0.6]
    assert front["effect"].tolist() == [-0.1, 0.2, 0.5, 0.7]
    assert SP.pareto(points.iloc[::-1]).equals(front.loc[front.index])  # independent of row order
    assert SP.pareto(points.iloc[:0]).empty


def test_sweep_plots_write_figures_tables_and_hatch_the_masked_cells(tmp_path, monkeypatch):
    s = sweep_summary()
    hatched: dict[str, list[set]] = {}
    save = P.save_figure

    def capture(fig, path):
        hatched[path.name] = [{(int(p.get_x() + 0.5), int(p.get_y() + 0.5)) for p in ax.patches
                               if isinstance(p, Rectangle) and p.get_hatch()} for ax in fig.axes
                              if ax.get_label() != "<colorbar>"]
        save(fig, path)

    monkeypatch.setattr(P, "save_figure", capture)
    peers = [{"system": "repeng", "setting": "pca", "emotion": "gratitude", "strength": 1.0, "rate": 0.3,
              "nll_delta": 0.2, "baseline_rate": 0.05},
             {"system": "steering-vectors", "setting": "meandiff", "emotion": "anger", "strength": 2.0,
              "rate": 0.2, "nll_delta": 0.4}]
    live = FakeLive(tmp_path / "a")
    SP.write_sweep_plots(s, live, "kw", peers, 0.25)
    names = sorted(p.name for p in live.figures.glob("*.png"))
    assert names == ["effect_vs_alpha.png", "frontier.png", "heatmap_band.png"]  # "single" has one layer
    assert all((live.figures / n).stat().st_size > 1000 for n in names)
    # the hatched cells of each emotion's panel: (alpha column, layer row) where the mask holds
    band = s[s["setting"] == "band"]
    mask = SP.within_random_band(band, "kw")
    for panel, emotion in zip(hatched["heatmap_band.png"], EMOTIONS):
        rows = band[mask & (band["emotion"] == emotion)]
        assert panel == {([2.0, 4.0, 8.0].index(r.alpha), [3, 5].index(r.layer)) for r in rows.itertuples()}
    assert hatched["heatmap_band.png"][0]  # gratitude has a masked cell
    expected = {f"{e}_{st}_L{n}" for e in EMOTIONS for st, ns in (("band", (3, 5)), ("single", (5,))) for n in ns}
    assert set(live.tables) == expected
    t = live.tables["gratitude_band_L3"]
    assert t["x"] == "alpha" and t["y"] == ["effect", "nll_delta"]
    assert t["frame"].columns.tolist() == ["alpha", "effect", "nll_delta"]
    assert t["frame"]["alpha"].tolist() == [2.0, 4.0, 8.0]

    again = FakeLive(tmp_path / "b")  # deterministic, and peers may be missing
    SP.write_sweep_plots(s.iloc[::-1], again, "kw", peers, 0.25)
    for n in names:
        assert (again.figures / n).read_bytes() == (live.figures / n).read_bytes(), n
    bare = FakeLive(tmp_path / "bare")  # no peers (None or []: the same path) and no random controls anywhere
    SP.write_sweep_plots(s.drop(columns=[c for c in s if "random" in c]), bare, "kw", None, 0.5)
    assert (bare.figures / "frontier.png").stat().st_size > 1000
    nothing = FakeLive(tmp_path / "none")
    SP.write_sweep_plots(s.iloc[:0], nothing, "kw", None, 0.5)
    assert nothing.tables == {} and not (nothing.figures.exists() and list(nothing.figures.glob("*.png")))


def confirm_result(real_world: bool = True) -> dict:
    """A small `steering.confirm.analyse` result: gratitude with both picks, anger with seeds only."""
    rng = np.random.default_rng(1)
    picks = {"gratitude": ("seeds", "frontier"), "anger": ("seeds",)}
    dose, table, real, verdicts, tests = [], [], [], {}, {}
    for e, ps in picks.items():
        for pick in ps:
            for fam, metric in (("kw", f"kw_{e}"), ("p", f"p_{e}")):
                for a in (-4.0, 0.0, 2.0, 4.0, 8.0):
                    dose.append({"emotion": e, "pick": pick, "family": fam, "metric": metric, "alpha": a,
                                 "effect": 0.02 * a, "sem": 0.01, "n": 8})
                for i in range(6):
                    b = float(rng.uniform(0, 0.5))
                    real.append({"emotion": e, "pick": pick, "family": fam, "metric": metric,
                                 "prompt_id": f"rw-{i}", "before": b, "after": b + 0.1})
                tests.setdefault(e, {}).setdefault(pick, {})[fam] = {"metric": metric, "p_wilcoxon": 0.03}
            verdicts.setdefault(e, {})[pick] = {"metric": f"kw_{e}", "effect_vs_random": 0.2, "ci_low": 0.1,
                                                "ci_high": 0.3, "p": 0.01, "q": 0.02}
            for i in range(8):
                table.append({"kind": "emotion", "prompt_set": "neutral", "emotion": e, "pick": pick,
                              "random_id": -1, "prompt_id": f"p-{i}", f"effect_kw_{e}": float(i % 2)})
                for j in (i % 4, (i + 1) % 4):
                    table.append({"kind": "random", "prompt_set": "neutral", "emotion": e, "pick": pick,
                                  "random_id": j, "prompt_id": f"p-{i}", f"effect_kw_{e}": float(rng.uniform(-.2, .2))})
    for i in range(8):
        table.append({"kind": "baseline", "prompt_set": "neutral", "emotion": "none", "pick": "none",
                      "random_id": -1, "prompt_id": f"p-{i}"})
    res = {"dose": pd.DataFrame(dose), "table": pd.DataFrame(table), "verdicts": verdicts}
    if real_world:
        res |= {"real_world": pd.DataFrame(real), "real_world_tests": tests}
    return res


def test_confirm_plots_write_figures_and_dose_tables(tmp_path):
    live = FakeLive(tmp_path / "a")
    SP.write_confirm_plots(confirm_result(), live, "kw")
    names = sorted(p.name for p in live.figures.glob("*.png"))
    assert names == ["dose_response.png", "random_vs_emotion.png", "real_world.png"]
    assert all((live.figures / n).stat().st_size > 1000 for n in names)
    assert set(live.tables) == {"dose_gratitude_seeds", "dose_gratitude_frontier", "dose_anger_seeds"}
    d = live.tables["dose_anger_seeds"]
    assert d["frame"].columns.tolist() == ["alpha", "effect"] and d["frame"]["alpha"].tolist() == [-4, 0, 2, 4, 8]
    assert d["frame"]["effect"].tolist() == pytest.approx([0.02 * a for a in (-4, 0, 2, 4, 8)])  # family kw only
    again = FakeLive(tmp_path / "b")
    SP.write_confirm_plots(confirm_result(), again, "kw")
    for n in names:
        assert (again.figures / n).read_bytes() == (live.figures / n).read_bytes(), n


def test_confirm_plots_tolerate_missing_parts(tmp_path):
    no_real = FakeLive(tmp_path / "a")
    SP.write_confirm_plots(confirm_result(real_world=False), no_real, "kw")
    assert sorted(p.name for p in no_real.figures.glob("*.png")) == ["dose_response.png", "random_vs_emotion.png"]
    res = confirm_result() | {"dose": pd.DataFrame(), "verdicts": {}}
    empty_dose = FakeLive(tmp_path / "b")
    SP.write_confirm_plots(res, empty_dose, "kw")  # metric from the catalog (kw_<emotion>) without verdicts
    assert sorted(p.name for p in empty_dose.figures.glob("*.png")) == ["random_vs_emotion.png", "real_world.png"]
    assert empty_dose.tables == {}
    nothing = FakeLive(tmp_path / "c")
    SP.write_confirm_plots({}, nothing, "kw")
    assert nothing.tables == {} and not (nothing.figures.exists() and list(nothing.figures.glob("*.png")))
