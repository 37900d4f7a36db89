"""Scaling out (README "Scaling out"): a queued layer/alpha sweep run by `dvc queue start -j 2` workers and
collected with `dvc exp show --csv`, and activations pushed once to a shared remote that a fresh clone pulls
so its downstream stages run without recomputing them.

Scratch git+DVC repo with this repo's own stage definitions, trimmed to the stages the checks need (dataset ->
activations -> vectors -> steering_sweep, steering) on tiny-llama: the file takes 3-4 minutes on a loaded 2-core
box, less on a quiet one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT
from .dvc_project import TINY_SETTINGS
from .test_pipeline import dvc, files, sh

STAGES = ("dataset", "activations", "vectors", "steering_sweep", "steering")
SWEEP = {  # experiment name -> `-S` overrides; the baseline is steering_sweep.layers=[1], alpha=2
    "sweep-layer2": ["steering_sweep.layers=[2]"],  # only the sweep reads its grid: the single-alpha stage stays
    "sweep-alpha4": ["alpha=4"],  # only the single-alpha stage depends on `alpha`
}


def _trimmed_pipeline() -> dict:
    """dvc.yaml restricted to STAGES, keeping the metrics those stages write (exp show reads them)."""
    pipe = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = {name: pipe["stages"][name] for name in STAGES}
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])}
    return {"stages": stages, "metrics": [m for m in pipe.get("metrics", []) if m in outs]}


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    """Clone A of a team project: pipeline reproduced and committed (dvc.lock), a shared remote configured."""
    base = tmp_path_factory.mktemp("scaleout")
    repo = base / "a"
    repo.mkdir()
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("data", "stages", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(_trimmed_pipeline(), sort_keys=False))
    (repo / "metrics").mkdir()
    shutil.copy(ROOT / "metrics/peers.json", repo / "metrics/peers.json")  # a git-tracked dep of the sweep
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = ["tiny-llama"]
    params["dataset"].update(profile="smoke", smoke_per_emotion=40)
    params["activations"]["random_init_controls"] = False
    params["alpha"] = 2
    # unit=norm: alpha x unit direction x residual norm, so the random tiny model's text actually moves
    params["steering_common"].update(model="tiny-llama", unit="norm", max_new_tokens=4)
    params["steering_sweep"].update(layers=[1], alphas=[2], n_prompts=3, n_random=3, random_prompts=3,
                                    settings=TINY_SETTINGS)
    params["steering_confirm"].update(n_prompts=3, n_random=3, random_per_prompt=2, dose=[-1], real_world=False)
    params["steering"].update(layer=1, n_prompts=3, n_random=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "config", "user.name", "t", cwd=repo)  # the queue's workers commit experiments
    sh("git", "config", "user.email", "t@example.com", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "-d", "team", str(base / "team-remote"), cwd=repo)  # committed: every clone has it
    dvc("repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline", cwd=repo)
    return repo


def _wait_for_queue(repo: Path, names: list[str], timeout: float = 600) -> str:
    """Wait until every queued experiment is done; `dvc queue status` then lists each as Success or Failed.

    Polls the cheap `git for-each-ref refs/exps` (a finished experiment is a git ref) and only now and then the
    heavier `dvc queue status` (to stop early on a failure), so the poller does not steal the workers' CPU.
    """
    deadline, last_status = time.monotonic() + timeout, time.monotonic()
    while True:
        refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=repo).split()
        finished = all(any(r.endswith(f"/{name}") for r in refs) for name in names)
        if finished or time.monotonic() - last_status > 30:
            status, last_status = dvc("queue", "status", cwd=repo), time.monotonic()
            done = [line.split()[1] for line in status.splitlines() if line.split()[-1:] in (["Success"], ["Failed"])]
            if set(names) <= set(done) and not any(w in status for w in ("Queued", "Running")):
                return status
        if time.monotonic() > deadline:
            dvc("queue", "stop", "--kill", cwd=repo)
            pytest.fail(f"queue not done after {timeout} s:\n{dvc('queue', 'status', cwd=repo)}")
        time.sleep(2)


def _col(row: dict, key: str, file: str) -> str:
    """A column of `dvc exp show --csv`: `key`, or `<file>:key` where two files share the key (e.g. `alpha`)."""
    return row[f"{file}:{key}"] if f"{file}:{key}" in row else row[key]


def test_queued_sweep_runs_in_workers_and_exp_show_csv_collects_params_and_metrics(team):
    for name, overrides in SWEEP.items():
        out = dvc("exp", "run", "--queue", "-n", name, *[a for o in overrides for a in ("-S", o)], cwd=team)
        assert f"Queued experiment '{name}'" in out
    assert "Queued" in dvc("queue", "status", cwd=team)
    assert "Started '2' new experiments task queue workers" in dvc("queue", "start", "-j", "2", cwd=team)
    status = _wait_for_queue(team, list(SWEEP))
    for name in SWEEP:
        assert any(line.split()[1:2] == [name] and line.endswith("Success") for line in status.splitlines()), status

    # each worker reran only the stages whose params changed; the rest came from the shared cache
    layer_log, alpha_log = (dvc("queue", "logs", name, cwd=team) for name in SWEEP)
    for log in (layer_log, alpha_log):
        assert all(f"Stage '{s}' didn't change, skipping" in log for s in ("dataset", "activations", "vectors"))
    assert "Running stage 'steering_sweep'" in layer_log and "Stage 'steering' didn't change, skipping" in layer_log
    assert "Stage 'steering_sweep' didn't change, skipping" in alpha_log and "Running stage 'steering'" in alpha_log
    assert "nothing to commit" in sh("git", "status", cwd=team)  # the workspace itself is untouched

    rows = {r["Experiment"] or r["rev"]: r for r in csv.DictReader(io.StringIO(dvc("exp", "show", "--csv",
                                                                                    cwd=team)))}
    base, layer2, alpha4 = rows["main"], rows["sweep-layer2"], rows["sweep-alpha4"]
    assert layer2["State"] == alpha4["State"] == "Success"
    p, sweep, single = "params.yaml", "metrics/steering_sweep/metrics.json", "metrics/steering/metrics.json"
    for row, layers, alpha in ((base, "[1]", "2"), (layer2, "[2]", "2"), (alpha4, "[1]", "4")):  # params columns
        assert (_col(row, "steering_sweep.layers", p), _col(row, "alpha", p)) == (layers, alpha)
    # metrics columns: the layer variant's sweep metrics (continuation NLL, random null) moved with the layer
    assert [float(_col(r, "best_by_setting.seeds.anger.layer", sweep)) for r in (base, layer2, alpha4)] == [1, 2, 1]
    grid = [{k for k in r if k.startswith("vs_random_band.") and r[k]} for r in (base, layer2)]  # one per cell
    assert grid[0] and grid[1] and not grid[0] & grid[1]  # the sweep's grid columns follow the layer
    # the alpha variant: the single-alpha stage's numbers moved, the (not rerun) sweep's did not
    assert [float(_col(r, "alpha", single)) for r in (base, layer2, alpha4)] == [2, 2, 4]
    effect = "neutral.anger|prompt_only.nll_delta"  # fluency moves with alpha (the keyword judge reads 0 here)
    assert float(_col(alpha4, effect, single)) != float(_col(base, effect, single))
    assert all(base[k] == alpha4[k] for k in base if k.startswith(("best_by_setting.", "vs_random_band.")))
    truth = json.loads((team / single).read_text())["neutral"]["anger|prompt_only"]
    assert float(_col(base, effect, single)) == pytest.approx(truth["nll_delta"])

    # a chosen experiment becomes a git branch (or `dvc exp apply` puts it into the workspace)
    dvc("exp", "branch", "sweep-layer2", "layer2", cwd=team)
    assert yaml.safe_load(sh("git", "show", "layer2:params.yaml", cwd=team))["steering_sweep"]["layers"] == [2]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_activations_pushed_once_and_pulled_by_a_teammate_are_not_recomputed(team, tmp_path):
    remote = Path(dvc("config", "remote.team.url", cwd=team).strip())
    dvc("push", "--with-deps", "activations", cwd=team)
    # remote layout: content-addressed files/md5/<2 hex>/<30 hex>, one object per file (+ a .dir listing per out)
    stored = {p.parent.name + p.name for p in (remote / "files/md5").glob("*/*")}
    pushed = {**files(team / "results/dataset"), **files(team / "results/activations")}
    assert {_md5(p) for p in pushed.values()} <= stored
    assert not {_md5(p) for p in files(team / "results/vectors").values()} & stored  # downstream is not shared
    assert len([h for h in stored if h.endswith(".dir")]) == 2

    clone = tmp_path / "b"
    sh("git", "clone", "-q", str(team), str(clone), cwd=tmp_path)
    assert not (clone / "results").exists()
    dvc("pull", "--with-deps", "activations", cwd=clone)
    assert not (clone / "results/vectors").exists()
    ours, theirs = files(team / "results/activations"), files(clone / "results/activations")
    assert ours.keys() == theirs.keys() and all(_md5(ours[k]) == _md5(theirs[k]) for k in ours)
    assert "up to date" in dvc("status", "--with-deps", "activations", cwd=clone)
    stamp = {k: (p.stat().st_mtime_ns, _md5(p)) for k, p in theirs.items()}

    out = dvc("repro", "vectors", cwd=clone)
    assert "Stage 'dataset' didn't change, skipping" in out
    assert "Stage 'activations' didn't change, skipping" in out and "Running stage 'activations'" not in out
    assert "Running stage 'vectors'" in out
    assert {k: (p.stat().st_mtime_ns, _md5(p)) for k, p in files(clone / "results/activations").items()} == stamp
    ours, theirs = files(team / "results/vectors"), files(clone / "results/vectors")
    assert ours.keys() == theirs.keys() and all(_md5(ours[k]) == _md5(theirs[k]) for k in ours)
