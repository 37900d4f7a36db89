"""The DVC experiment repo end to end on tiny models: repro, no-op, determinism, params, push/pull."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT
from emotion_circuits.store.io import read_parquet

from .dvc_project import ENV, TINY_SETTINGS, dvc, files, make_dvc_project, sh

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of this repo's pipeline with tiny models and the smoke profile, as its own git+DVC repo."""
    return make_dvc_project(tmp_path_factory.mktemp("pipeline"))


def test_repro_produces_outs_and_metrics(project):
    for model in ("tiny-llama", "tiny-gpt2", "tiny-bert"):
        model_dir = project / "results/activations" / model
        assert {"index.parquet", "sentence_end", "emotion_tokens"} <= {p.name for p in model_dir.iterdir()}
        assert sorted(p.name for p in (model_dir / "sentence_end").iterdir()) == ["shard-00000.safetensors"]
    metrics = json.loads((project / "metrics/activations/metrics.json").read_text())
    assert metrics["models"]["tiny-llama"]["backend"] == "bridge" and metrics["models"]["tiny-bert"]["n_rows"] == 160
    assert "tiny-gpt2__random-init" in metrics["models"]  # the alignment stage's null model
    timing = json.loads((project / "metrics/activations/timing.json").read_text())  # git-ignored, not a DVC out
    assert timing["models"]["tiny-llama"]["peak_rss_mb"] > 0 and "timing" not in metrics
    lock = (project / "dvc.lock").read_text()
    assert all(f"results/{stage}" in lock for stage in ("activations", "vectors", "alignment"))
    vectors = json.loads((project / "metrics/vectors/metrics.json").read_text())
    assert "best_layer" in vectors["models"]["tiny-llama"]["sentence_end"]
    geometry = vectors["cross_model_cosine"]["tiny-llama|tiny-gpt2|sentence_end"]  # widths 64 vs 48: width-free
    first = next(v for k, v in geometry.items() if k != "method")
    assert set(first["a"]) == set(first["b"]) == {"gratitude|anger", "gratitude|apology", "anger|apology"}
    assert 0 <= first["mean_abs_difference"] <= 2
    alignment = json.loads((project / "metrics/alignment/metrics.json").read_text())
    assert len(alignment["pairs"]) == 9
    assert "(ok)" in alignment["pairs"]["tiny-gpt2->tiny-gpt2"]["verdict"]
    assert (project / "results/alignment/scores.parquet").exists()
    assert (project / "metrics/alignment/plots/images/ksweep.png").exists()
    steering = json.loads((project / "metrics/steering_sweep/metrics.json").read_text())
    assert set(steering["picks"]) == {"gratitude", "anger", "apology"}
    assert set(steering["best_by_setting"]) == set(TINY_SETTINGS)
    assert steering["best_by_setting"]["seeds"]["anger"]["random_q95"] is not None  # the seeds' random band
    assert steering["best_by_setting"]["last3"]["anger"]["random_q95"] is None
    confirm = json.loads((project / "metrics/steering_confirm/metrics.json").read_text())
    assert confirm["design"]["splits_disjoint"] and confirm["design"]["n_prompts"] == 3
    for emotion in ("gratitude", "anger", "apology"):
        for pick in ("seeds", "frontier"):
            v = confirm["verdicts"][emotion][pick]
            assert v["verdict"] in ("steers", "does not steer") and v["n"] == 3 and v["n_random"] == 3
            assert v["p"] is not None and v["q"] >= v["p"] - 1e-12
        assert confirm["dose_response"][emotion]["seeds"]["kw"]["alphas"][0] < 0  # negative alphas included
        assert len(confirm["examples"][emotion]["seeds"]) == 2
    # split discipline, read off the generations themselves: no confirmation prompt was seen by the selection
    selected = set(read_parquet(project / "results/steering_sweep/generations.parquet")["prompt_id"])
    confirmed = read_parquet(project / "results/steering_confirm/generations.parquet")
    confirmed = set(confirmed[confirmed["prompt_set"] == "neutral"]["prompt_id"])
    assert len(selected) == len(confirmed) == 3 and not selected & confirmed
    chosen = json.loads((project / "results/steering_sweep/selection.json").read_text())
    assert set(chosen["prompts"]) == selected
    single = json.loads((project / "metrics/steering/metrics.json").read_text())
    assert single["alpha"] == 0.8
    cross = json.loads((project / "metrics/cross_steering/metrics.json").read_text())
    assert set(cross["pairs"]) == {"tiny-llama->tiny-gpt2", "tiny-gpt2->tiny-llama"}
    to_gpt2 = cross["pairs"]["tiny-llama->tiny-gpt2"]
    assert to_gpt2["steer_site"] == f"blocks.{int(to_gpt2['target_layer'].split('.')[1]) + 1}.hook_resid_pre"
    assert to_gpt2["map"]["source"] == "tiny-llama" and to_gpt2["map"]["target"] == "tiny-gpt2"
    for emotion in ("gratitude", "anger", "apology"):
        assert to_gpt2["effects"][emotion]["mapped"]["p_vs_random"] is not None  # against mapped random dirs
        assert to_gpt2["effects"][emotion]["native"]["random_q95"] is None       # native: against 0
        assert -1 <= to_gpt2["geometry"][emotion]["cosine_mapped_native"] <= 1
    assert {"anger|prompt_only", "anger|iterative", "anger|vector_emotion_tokens",
            "anger|direction_pca1"} <= set(single["neutral"])
    assert "anger->gratitude" in single["swap"] and "gratitude|prompt_only" in single["real_world"]
    assert single["neutral"]["anger|prompt_only"]["random_q95"] is not None


def test_statistics_and_report_build_and_every_report_number_is_traceable(project):
    from .test_report import check_traceable

    stats = json.loads((project / "metrics/statistics/metrics.json").read_text())
    assert {"steering_sweep", "steering", "cross_steering", "steering_confirm"} <= set(stats["families"])
    anger = stats["headline"]["steering_sweep"]["anger"]  # random band: 2 prompts x 2 directions
    assert anger["test"] == "two_sample_vs_null" and anger["n"] == 2 and anger["n_null"] == 4
    confirmed = stats["headline"]["steering_confirm"]["anger"]  # paired by prompt: one random mean per prompt
    assert confirmed["test"] == "paired_vs_null" and confirmed["n"] == confirmed["n_null"] == 3
    assert 0 <= anger["p_adj"] <= 1 and stats["power"]["n_per_group_two_sample"]["d=0.5"] == 64
    assert "tiny-llama->tiny-gpt2" in stats["alignment_k"]["pairs"]
    assert (project / "metrics/statistics/plots/images/steering_sweep_d.png").exists()
    for name in ("effects.parquet", "effect_samples.parquet", "k_selection.parquet"):
        assert (project / "results/statistics" / name).exists()
    report = project / "results/report"
    md, html = (report / "index.md").read_text(), (report / "index.html").read_text()
    assert "## Steering sweep" in md and "## Shared subspace across models" in md and "Verdict" in md
    assert "## Steering: confirmed verdicts" in md and "random direction: " in md
    assert "statistics: python -m stages.statistics" in md  # footer: upstream stages from dvc.lock
    assert html.count("data:image/png;base64,") == md.count("](figures/") > 3
    assert check_traceable(project) > 50


def test_second_repro_is_a_noop_and_forced_repro_is_byte_identical(project):
    out = dvc("repro", cwd=project)
    assert "Running stage" not in out
    before = {k: p.read_bytes() for k, p in files(project / "results").items()}
    metrics_before = {p.parent.name: p.read_bytes() for p in (project / "metrics").glob("*/metrics.json")}
    live_before = {k: p.read_bytes() for k, p in files(project / "metrics").items() if not k.endswith("timing.json")}
    lock_before = (project / "dvc.lock").read_text()
    timing_before = {p.parent.name: p.read_bytes() for p in (project / "metrics").glob("*/timing.json")}
    dvc("repro", "-f", cwd=project)
    after = {k: p.read_bytes() for k, p in files(project / "results").items()}
    assert before.keys() == after.keys() and all(before[k] == after[k] for k in before)
    metrics_after = {p.parent.name: p.read_bytes() for p in (project / "metrics").glob("*/metrics.json")}
    live_after = {k: p.read_bytes() for k, p in files(project / "metrics").items() if not k.endswith("timing.json")}
    assert live_before.keys() == live_after.keys() and live_before == live_after  # metrics, plots, images, dvc.yaml
    assert metrics_before == metrics_after  # byte for byte: wall-clock figures live in the ignored timing.json
    assert (project / "dvc.lock").read_text() == lock_before  # so `repro -f` rewrites no md5
    timing_after = {p.parent.name: p.read_bytes() for p in (project / "metrics").glob("*/timing.json")}
    assert timing_before.keys() == timing_after.keys() and timing_before
    assert all(timing_before[k] != timing_after[k] for k in timing_before)  # new measurements, not copies
    assert sh("git", "status", "--porcelain", cwd=project) == ""  # timing.json is ignored: nothing to commit


def test_no_metrics_json_carries_timing_and_every_stage_writes_timing_json(project):
    """Timing/memory figures go to metrics/<stage>/timing.json (process and wall seconds, load average), which is
    git-ignored and no DVC out; metrics.json keeps only what identical runs reproduce."""
    from .test_timing import timing_keys

    timed = ("activations", "steering_sweep", "steering_confirm", "steering", "cross_steering", "head_screening", "head_patching",
             "circuits")
    for live in sorted(p for p in (project / "metrics").iterdir() if p.is_dir()):
        assert timing_keys(json.loads((live / "metrics.json").read_text())) == [], live.name
        timing = json.loads((live / "timing.json").read_text())
        assert timing["stage"]["cpu_seconds"] >= 0 and timing["stage"]["wall_seconds"] > 0, live.name
        assert len(timing["machine"]["load_average_1_5_15_end"]) == 3, live.name
    assert {p.parent.name for p in (project / "metrics").glob("*/timing.json")} >= set(timed)
    screening = json.loads((project / "metrics/head_screening/timing.json").read_text())
    assert screening["executor"] == "local" and screening["screen"]["cpu_seconds"] > 0
    assert json.loads((project / "metrics/steering_sweep/timing.json").read_text())["generated_tokens_per_s"] > 0
    status = [line for line in sh("git", "status", "--porcelain", "--ignored", "metrics", cwd=project).splitlines()
              if line.endswith("timing.json")]
    assert len(status) == len(list((project / "metrics").glob("*/timing.json")))
    assert all(line.startswith("!! ") for line in status), status  # ignored by git, so never committed


def test_dvc_reads_every_stage_s_dvclive_files(project):
    """No plot wiring in dvc.yaml: DVC finds each stage's metrics and plots through the dvc.yaml dvclive writes."""
    assert "plots" not in yaml.safe_load((ROOT / "dvc.yaml").read_text())
    shown = json.loads(dvc("metrics", "show", "--json", cwd=project))
    files_shown = {f for rev in shown.values() for f in rev.get("data", {})}
    assert {f"metrics/{s}/metrics.json" for s in ("dataset", "vectors", "alignment", "statistics")} <= files_shown
    plots = json.loads(dvc("plots", "show", "--json", cwd=project))["data"]
    assert "metrics/vectors/plots/custom/norms/tiny-llama_sentence_end.json" in plots
    assert any(name.startswith("metrics/head_screening/plots/images/heatmap_") for name in plots)
    assert any(name.startswith("metrics/statistics/plots/custom/steering_d/") for name in plots)


def test_exp_run_sets_any_param_and_params_diff_shows_it(project):
    dvc("exp", "run", "-S", "activations.batch_size=5", cwd=project)
    diff = dvc("params", "diff", cwd=project)
    assert "activations.batch_size" in diff and "5" in diff
    sh("git", "reset", "-q", "--hard", cwd=project)  # back to the committed params and dvc.lock
    dvc("checkout", "-f", cwd=project)
    assert "up to date" in dvc("status", cwd=project)


def test_push_then_pull_in_a_second_clone_restores_without_recomputing(project, tmp_path):
    dvc("push", cwd=project)
    clone = tmp_path / "b"
    sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    assert not (clone / "results").exists()
    dvc("pull", cwd=clone)
    ours, theirs = files(project / "results"), files(clone / "results")
    assert ours.keys() == theirs.keys()
    assert all(filecmp.cmp(ours[k], theirs[k], shallow=False) for k in ours)
    status = dvc("status", cwd=clone)
    assert "up to date" in status
    out = dvc("repro", cwd=clone)
    assert "Running stage" not in out


def test_ray_executor_gives_byte_identical_outs(project, tmp_path):
    """`executor: ray` on a local Ray cluster: the heavy stages' chunks run on actors that load their own models
    and are merged in order; activations (6 models), the steering sweep and head screening give the same bytes
    as local. The single-alpha steering stage runs the sweep's code path (sweep.run_and_score)."""
    ray_repo = tmp_path / "ray"
    shutil.copytree(project, ray_repo, ignore=shutil.ignore_patterns(".dvc", ".git"))
    params = yaml.safe_load((ray_repo / "params.yaml").read_text())
    params["executor"] = "ray"
    params["execution"].update(ray_workers=2)
    (ray_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("activations", "steering_sweep", "head_screening"):
        out_dir, metrics = stage, f"{stage}/metrics.json"
        shutil.rmtree(ray_repo / "results" / out_dir)
        out = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--no-progress"], cwd=ray_repo, env=ENV,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Ray actors" in out.stderr, stage
        local, remote = files(project / "results" / out_dir), files(ray_repo / "results" / out_dir)
        assert sorted(local) == sorted(remote) and local, stage
        for name in local:
            assert filecmp.cmp(local[name], remote[name], shallow=False), f"{stage}: {name} differs under Ray"
        a, b = ((root / "metrics" / metrics).read_bytes() for root in (project, ray_repo))
        assert a == b, stage  # timing (incl. the executor) is in timing.json
