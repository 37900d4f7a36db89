"""The report: verdicts follow the numbers, every number cites the metrics key it came from, the HTML is
self-contained, the output is deterministic, and the stage fails cleanly without its inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from emotion_circuits.reporting import report as R
from emotion_circuits.stats import samples as S

from .conftest import ROOT, run_module

NUM = re.compile(r"[-+]?\d+(?:\.\d+)?")
KEY = re.compile(r'\[("(?:[^"\\]|\\.)*"|\d+)\]')  # a string key or a list index


def _formats(value) -> set[str]:
    out = set()
    for kind in R.KINDS:
        try:
            out.add(R.format_value(value, kind))
        except (TypeError, ValueError):
            continue
    return out


def check_traceable(root: Path) -> int:
    """Every paragraph of results/report/index.md (up to the reproducibility footer) that shows a number cites a
    footnote; every number it shows is one of the footnote's values; every footnote value is what the cited
    metrics key holds, formatted. Returns the number of numbers checked."""
    md = (root / "results/report/index.md").read_text(encoding="utf-8")
    body, _, sources = md.partition("## Number sources")
    body = body.split("## Reproducibility")[0]
    notes = {int(n): text for n, text in re.findall(r"^\[\^(\d+)\]: (.*)$", sources, re.M)}
    checked = 0
    for para in body.split("\n\n"):
        para = para.strip()
        if not para or para.startswith(("#", "![")):
            continue
        refs = re.findall(r" \[\^(\d+)\]$", para)
        text = re.sub(r" \[\^\d+\]$", "", para)
        numbers = NUM.findall(text)
        if not numbers:
            continue
        assert refs, f"numbers without a source: {para}"
        entries = re.findall(r"`([^`]*)` <- `([^`]+)` `([^`]+)`", notes[int(refs[0])])
        assert entries, notes[int(refs[0])]
        shown = {n for value, _, _ in entries for n in NUM.findall(value)}
        assert set(numbers) <= shown, f"untraceable {set(numbers) - shown} in: {para}"
        for value, file, path in entries:
            keys = [json.loads(k) for k in KEY.findall(path)]
            data = json.loads((root / file).read_text(encoding="utf-8"))
            for k in keys[:-1]:
                data = data[k]
            exists = keys[-1] < len(data) if isinstance(data, list) else keys[-1] in data
            assert exists, f"{file} {path} does not exist"
            if value != keys[-1]:  # a name shown as the key itself
                assert value in _formats(data[keys[-1]]), (value, file, path)
        checked += len(numbers)
    return checked


def _effect(d, low, high, p_adj, significant, **extra):
    return {"effect": "anger/blocks.3.hook_resid_pre/alpha=2/p_anger", "emotion": "anger", "metric": "p_anger",
            "test": "two_sample_vs_null", "n": 12, "n_null": 120, "mean": 0.2, "null_mean": 0.01, "diff": 0.19,
            "diff_ci_low": 0.1, "diff_ci_high": 0.3, "d": d, "d_ci_low": low, "d_ci_high": high, "g": d * 0.98,
            "d_vs_0": 1.0, "null_d_vs_0": 0.05, "p": p_adj / 3, "p_adj": p_adj, "significant": significant,
            "mde_d": 0.9, "layer": 3, "alpha": 2.0, "power_d0.5": 0.4, **extra}


def readout_metrics() -> dict:
    strong = _effect(1.234, 0.91, 1.52, 0.0004, True)
    weak = {**_effect(0.1, -0.3, 0.5, 0.8, False), "effect": "gratitude/blocks.3.hook_resid_pre/alpha=2/p_gratitude",
            "emotion": "gratitude", "metric": "p_gratitude"}
    stats = {"settings": {"ci_level": 0.95, "fdr_alpha": 0.05, "n_boot": 2000, "n_perm": 2000},
             "families": {"steering_sweep": {"n_effects": 2, "n_vs_null": 2, "n_vs_0": 0, "n_significant": 1,
                                             "min_p_adj": 0.0004, "median_n": 12.0, "median_mde_d": 0.9}},
             "headline": {"steering_sweep": {"anger": strong, "gratitude": weak},
                          "head_patching": {"anger": {**strong, "test": "one_sample_vs_0", "layer": None,
                                                      "alpha": None}}},
             "power": {"power": 0.8, "alpha": 0.05, "n_per_group_two_sample": {"d=0.2": 394, "d=0.5": 64},
                       "n_one_sample": {"d=0.2": 199, "d=0.5": 34}},
             "alignment_k": {"pairs": {"m1->m2": {
                 "a": "m1", "b": "m2", "self_pair": False, "k_selected": 5, "n_layer_pairs": 3,
                 "n_layer_pairs_selecting": 2, "max_excess": 0.05,
                 "by_k": {"k=2": {"n_layer_pairs_supported": 0}, "k=5": {"n_layer_pairs_supported": 2}}}}}}
    return {R.STATS: stats, R.DATASET: {"counts": {"anger": {"fit": 30, "test": 10}}, "n_rows": 40,
                                        "n_steering_prompts": 12, "n_real_world": 4}}


def _write(root: Path, metrics: dict, figures: dict | None = None) -> None:
    for file, data in metrics.items():
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text(json.dumps(data), encoding="utf-8")
    doc = R.build(metrics, figures or {}, ("lock", "{}"), "python")
    R.write(doc, figures or {}, root / "results/report")


def test_verdicts_follow_the_numbers_and_every_number_is_traceable(tmp_path):
    _write(tmp_path, readout_metrics())
    md = (tmp_path / "results/report/index.md").read_text()
    anger = next(p for p in md.split("\n\n") if p.startswith("**anger** (steering sweep"))
    assert "d = 1.23 [0.91, 1.52]" in anger and "p_adj < 0.001" in anger
    assert "Verdict: an effect beyond its null" in anger and "layer 3, alpha 2" in anger
    gratitude = next(p for p in md.split("\n\n") if p.startswith("**gratitude**"))
    assert "Verdict: no evidence of an effect beyond its null" in gratitude and "|d| >= 0.90" in gratitude
    assert "## Effects: head_patching" in md and "against zero (no matching null)" in md
    assert "a shared subspace of dimension k = 5" in md
    assert "394 per group (two-sample) or 199 (one-sample) for d = 0.2" in md
    assert check_traceable(tmp_path) > 40


def test_a_changed_metric_changes_the_verdict(tmp_path):
    m = readout_metrics()
    m[R.STATS]["headline"]["steering_sweep"]["anger"].update(p_adj=0.2, significant=False)
    m[R.STATS]["alignment_k"]["pairs"]["m1->m2"].update(k_selected=-1, n_layer_pairs_selecting=0)
    _write(tmp_path, m)
    md = (tmp_path / "results/report/index.md").read_text()
    assert "**Verdict: suggestive only**" in md and "p_adj = 0.200" in md
    assert "no subspace dimension is supported" in md
    check_traceable(tmp_path)


def test_a_number_without_its_source_is_caught(tmp_path):
    _write(tmp_path, readout_metrics())
    path = tmp_path / "results/report/index.md"
    path.write_text(path.read_text().replace("d = 1.23 [0.91", "d = 1.25 [0.91"))
    try:
        check_traceable(tmp_path)
    except AssertionError as exc:
        assert "1.25" in str(exc)
    else:
        raise AssertionError("a number that is not in the metrics passed the traceability check")


def test_html_is_self_contained_and_output_is_deterministic(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = tmp_path / "plots" / "ksweep.png"
    png.parent.mkdir()
    fig, ax = plt.subplots()
    ax.plot(np.arange(3))
    fig.savefig(png, metadata={"Software": None})
    figures = {"alignment__ksweep.png": png}
    _write(tmp_path / "a", readout_metrics(), figures)
    _write(tmp_path / "b", readout_metrics(), figures)
    a, b = tmp_path / "a/results/report", tmp_path / "b/results/report"
    html = (a / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "src=\"http" not in html and "<link" not in html
    assert (a / "figures/alignment__ksweep.png").read_bytes() == png.read_bytes()
    assert "](figures/alignment__ksweep.png)" in (a / "index.md").read_text()
    for name in ("index.md", "index.html"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_upstream_stages_and_footer_come_from_dvc_yaml_and_lock(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: a\n    outs: [results/a, {metrics/a.json: {cache: false}}]\n"
        "  b:\n    cmd: b\n    deps: [results/a/x.parquet]\n    outs: [results/b]\n"
        "  c:\n    cmd: c\n    outs: [results/c]\n"
        "  report:\n    cmd: r\n    deps: [results/b/plots]\n    outs: [results/report]\n")
    assert R.upstream_stages(tmp_path / "dvc.yaml", "report") == ["a", "b"]
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  a:\n    cmd: a\n    params:\n      params.yaml:\n        seed: 0\n"
        "    outs:\n    - path: results/a\n      md5: abc.dir\n    - path: metrics/a.json\n      md5: fff\n"
        "  report:\n    cmd: r\n    outs:\n    - path: results/report\n      md5: zzz.dir\n")
    lock, params = R.reproducibility(tmp_path / "dvc.lock", tmp_path / "dvc.yaml", "report")
    assert "abc.dir  results/a" in lock and "fff" not in lock and "zzz" not in lock  # no metrics, not itself
    assert "b: not in dvc.lock" in lock and "seed: 0" in params


def test_stage_without_statistics_fails_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text("stages:\n  report:\n    cmd: x\n    deps: [metrics/statistics/metrics.json]\n")
    out = run_module("stages.report", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: metrics/statistics/metrics.json not found")
    assert not (tmp_path / "results/report").exists()


def test_statistics_stage_without_inputs_fails_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = run_module("stages.statistics", cwd=tmp_path)
    assert out.returncode == 2 and "not found: run `dvc repro steering_sweep` first" in out.stderr
    assert not (tmp_path / "results/statistics").exists() and S.SAMPLE_COLUMNS


def test_recorded_measurements_are_quoted_after_the_cited_body_and_labelled(tmp_path):
    m = readout_metrics()
    for file, data in m.items():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(json.dumps(data), encoding="utf-8")
    notes = "# Steering engine\n\nMeasured once on a GPU: 18,195 tokens/s.\n\n```\nfloat32 1.7 s\n```\n"
    R.write(R.build(m, {}, ("lock", "{}"), "python", notes), {}, tmp_path / "results/report")
    md = (tmp_path / "results/report/index.md").read_text()
    heading = f"## Recorded measurements (from `{R.MEASUREMENTS}`, not recomputed by this run)"
    assert md.index("## Reproducibility") < md.index(heading) < md.index("18,195 tokens/s") < md.index("## Number")
    assert "### Steering engine" in md and "```\nfloat32 1.7 s\n```" in md
    assert check_traceable(tmp_path) > 40  # the quoted numbers are outside the cited body


def test_heatmap_limits_are_robust_centred_and_mark_clipped_cells():
    from emotion_circuits.reporting import plots

    values = np.concatenate([np.linspace(-1, 1, 199), [90.0]])  # one head (L1H5-like) far beyond the rest
    limit = plots.robust_limit(values)
    assert 0.9 < limit < 1.0  # the 98th percentile of |values|, not the outlier
    assert plots.robust_limit(np.array([[0.0, np.nan], [0.0, 0.0]])) == 1.0  # never a zero-width scale
    assert plots.robust_limit(np.array([0.0, 0.0, 2.0]), 50) == 2.0  # all-but-one zero: the largest value
    assert plots.colour_extend(values, -limit, limit) == "both"  # the top 2% of |values| lie on both sides
    assert plots.colour_extend(values, -1, limit) == "max"
    assert plots.colour_extend(-values, -limit, 1) == "min"
    assert plots.colour_extend(np.array([-3.0, 3.0]), -1, 1) == "both"
    assert plots.colour_extend(np.array([-0.5, np.nan, 0.5]), -1, 1) == "neither"


def _log_stage(directory: Path, fail: bool = False) -> None:
    import pandas as pd

    from emotion_circuits.reporting import plots
    from emotion_circuits.reporting.live import stage_live
    from emotion_circuits.store.io import staged_outputs

    with staged_outputs(directory / "metrics" / "vectors") as (live_dir,), stage_live(live_dir) as live:
        live.log_metrics({"models": {"m": {"best_layer": 3, "acc": float("nan")}}, "n": np.int64(2)})
        live.log_table("norms/m_sentence_end", pd.DataFrame({"layer": [0, 1], "anger": [0.1234567891, np.nan]}),
                       "layer", ["anger"], y_label="L2 norm")
        matrix = np.arange(12, dtype=float).reshape(3, 4) - 6
        plots.heatmap(matrix, list("abc"), list("abcd"), live.figures / "heatmap_anger.png", "t")
        if fail:
            raise RuntimeError("stage failed")


def test_stage_live_writes_dvclive_files_byte_identically_and_all_or_nothing(tmp_path):
    import yaml

    _log_stage(tmp_path / "a")
    _log_stage(tmp_path / "b")
    a, b = tmp_path / "a/metrics/vectors", tmp_path / "b/metrics/vectors"
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == ["dvc.yaml", "metrics.json", "plots/custom/norms/m_sentence_end.json",
                     "plots/images/heatmap_anger.png", "timing.json"]  # timing.json: git-ignored, no DVC out
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names if n != "timing.json")
    assert json.loads((a / "metrics.json").read_text()) == {"models": {"m": {"acc": None, "best_layer": 3}}, "n": 2}
    assert json.loads((a / "plots/custom/norms/m_sentence_end.json").read_text()) == [
        {"layer": 0, "anger": 0.123457}, {"layer": 1, "anger": None}]
    declared = yaml.safe_load((a / "dvc.yaml").read_text())
    assert declared["metrics"] == ["metrics.json"]  # no step, no timestamp: nothing that changes between runs
    assert declared["plots"] == ["plots/images", {"plots/custom/norms/m_sentence_end.json": {
        "template": "simple", "x": "layer", "y": ["anger"], "y_label": "L2 norm"}}]
    try:
        _log_stage(tmp_path / "c", fail=True)
    except RuntimeError:
        pass
    assert list((tmp_path / "c/metrics").iterdir()) == []  # nothing written, no staging or figure folders left


def _real_text_metrics(neutral_recall: float, anger_p: float, judge_ba: float) -> dict:
    """Judges and transfer blocks as the judges and vectors stages write them (values chosen per test)."""
    portion = {"balanced_accuracy": judge_ba, "ci": [judge_ba - 0.05, judge_ba + 0.05], "n": {"neutral": 60},
               "recall": {"gratitude": 0.9, "anger": 0.8, "apology": 0.7, "neutral": 0.65}}
    judges = {"embedding": {"in_domain": {**portion, "balanced_accuracy": 0.95}, "real_text": portion},
              "goal_embedding_real_ba": judge_ba, "goal_embedding_min_recall": 0.65,
              "goals": {"embedding_real_ba": 0.75, "embedding_min_recall": 0.6}}
    cell = {e: {"auroc": 0.7, "null_q95": 0.6, "p": anger_p if e == "anger" else 0.005, "null": "refit"}
            for e in ("gratitude", "anger", "apology")}
    weak = {e: {**v, "null": "eval_labels"} for e, v in cell.items()}
    block = {"probe": {"L15": {"hand_to_real_ba": 0.6, "real_to_real_ba": 0.62, "hand_to_real_null_q95": 0.3,
                               "hand_to_real_p": 0.048}},
             "goal_probe_ratio": {"best_real_layer": 15, "at_best_real_layer": 0.6 / 0.62, "median_over_layers": 0.9},
             "goal_neutral_recall": {"at_best_real_layer": neutral_recall, "median_over_layers": 0.5},
             "own_directions_on_real": {"vector": {"L07": cell, "L15": cell}, "lda": {"L07": cell},
                                        "probe": {"L07": weak}}}
    sweep = {"model": "m1", "primary_metric": "p", "direction": "vector", "grid": {"layers": [7, 15]}}
    return {**readout_metrics(), R.JUDGES: judges, R.VECTORS: {"models": {}, "transfer": {"m1": {"sentence_end": block}},
                                                                "transfer_goals": {"probe_ratio": 0.95, "neutral_recall": 0.6,
                                                                                   "direction_p": 0.05}},
            R.STEERING: sweep}


def test_real_text_sections_follow_the_goals_and_cite_every_number(tmp_path):
    _write(tmp_path / "met", _real_text_metrics(neutral_recall=0.7, anger_p=0.01, judge_ba=0.8))
    md = (tmp_path / "met/results/report/index.md").read_text()
    assert "## Judges on held-out text" in md and "## Real text: cross-source transfer" in md
    assert "the embedding judge holds on real text" in md
    assert "the hand-written data transfers to real text" in md and "ratio 0.97" in md
    assert "every emotion's direction beats its permuted-label null at every sweep layer" in md
    assert "direction method `vector`" in md and "direction method `lda`" in md
    probe = next(p for p in md.split("\n\n") if "direction method `probe`" in p)
    assert "against its own scores under permuted evaluation labels (a weaker null" in probe
    assert "weaker null" not in next(p for p in md.split("\n\n") if "direction method `lda`" in p)
    check_traceable(tmp_path / "met")
    _write(tmp_path / "not", _real_text_metrics(neutral_recall=0.4, anger_p=0.2, judge_ba=0.7))
    md = (tmp_path / "not/results/report/index.md").read_text()
    assert "does not reach the real-text goal" in md and "does not reach the transfer goal" in md
    assert "not specific beyond the null for anger at L07, anger at L15" in md
    check_traceable(tmp_path / "not")
