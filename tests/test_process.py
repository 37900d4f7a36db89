"""Killed, interrupted and concurrent stages (issue 15, items 6 and 7): real stage processes, real signals, real DVC."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emotion_circuits.runtime.process import LOCKS, stage_lock

from .conftest import ROOT, run_module
from .dvc_project import ENV, dvc, files, make_dvc_project, run, sh

TINY = ["tiny-gpt2", "tiny-llama"]


def _wait(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _staging(project: Path, stage: str = "activations") -> list[Path]:
    """`store.io.staged_outputs`' folders: `.<target>.XXXXXXXX` beside results/<stage> and metrics/<stage>."""
    return sorted(p for parent in (project / "results", project / "metrics") if parent.is_dir()
                  for p in parent.glob(f".{stage}.*"))


def _mid_write(project: Path) -> bool:
    """A shard is already on disk inside the staging folder: the stage is writing, not just starting."""
    return any(f.is_file() for root in _staging(project) for f in root.rglob("*.safetensors"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # an orphan's zombie may wait for a PID 1 that never reaps


def _outs(project: Path, stage: str) -> dict[str, bytes]:
    """The stage's outs; metrics.json without `timing`, the one part that differs between identical runs."""
    outs = {f"results/{k}": p.read_bytes() for k, p in files(project / "results" / stage).items()}
    metrics = json.loads((project / "metrics" / stage / "metrics.json").read_text())
    metrics.pop("timing", None)
    outs["metrics.json"] = json.dumps(metrics, sort_keys=True).encode()
    return outs


@pytest.fixture(scope="module")
def with_dataset(tmp_path_factory) -> Path:
    """A scratch project (bundled data, two tiny models, several shards per model) whose dataset stage ran."""
    project = tmp_path_factory.mktemp("proc") / "p"
    shutil.copytree(ROOT / "data", project / "data")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = TINY
    params["dataset"].update(profile="smoke", smoke_per_emotion=8)
    params["activations"].update(random_init_controls=False, shard_rows=8, batch_size=4)
    params["execution"]["chunk_size"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_module("stages.dataset", "--no-progress", cwd=project).returncode == 0
    return project


@pytest.fixture
def project(with_dataset, tmp_path) -> Path:
    shutil.copytree(with_dataset, tmp_path / "p")
    return tmp_path / "p"


def _start(project: Path, stage: str = "activations") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}", "--no-progress"], cwd=project,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_write_leaves_staging_that_the_rerun_removes_and_the_rerun_is_identical(project, tmp_path):
    reference = tmp_path / "ref"
    shutil.copytree(project, reference)
    assert run_module("stages.activations", "--no-progress", cwd=reference).returncode == 0

    proc = _start(project)
    _wait(lambda: _mid_write(project), what="a shard in the staging folder")
    proc.kill()  # SIGKILL, as the OOM killer does: no handler, no finally
    proc.communicate(timeout=30)
    left = _staging(project)
    assert left and not (project / "results/activations").exists()

    rerun = run_module("stages.activations", "--no-progress", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed 2 stale staging folder(s) of an interrupted run" in rerun.stderr
    assert _staging(project) == [] and not any(p.exists() for p in left)
    assert _outs(project, "activations") == _outs(reference, "activations")


def test_sigterm_is_handled_like_ctrl_c(project):
    proc = _start(project)
    _wait(lambda: _mid_write(project), what="a shard in the staging folder")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM); no outputs were written"
    assert "Traceback" not in err
    assert _staging(project) == [] and not (project / "results/activations").exists()


def test_a_second_writer_is_refused_at_once_and_leaves_the_live_writer_s_staging_alone(project, monkeypatch):
    live_staging = project / "results/.activations.abcd1234"
    (live_staging / "activations").mkdir(parents=True)
    monkeypatch.chdir(project)
    with stage_lock("activations"):  # this test process is the live writer
        started = time.monotonic()
        out = run_module("stages.activations", "--no-progress", cwd=project)
        elapsed = time.monotonic() - started
    assert out.returncode == 2 and elapsed < 60  # the refused stage imports torch, nothing more
    assert out.stderr.strip() == (f"error: stage 'activations' is already running (pid {os.getpid()} holds "
                                  f"{LOCKS}/activations.lock); wait for it to finish or stop it, then rerun")
    assert live_staging.is_dir()  # not "stale": its writer holds the lock
    assert not (project / "results/activations").exists()
    assert (project / LOCKS / ".gitignore").read_text() == "*\n"  # the lock folder never shows in `git status`


def test_other_stages_and_foreign_files_are_not_taken_for_stale_staging(project):
    keep = [project / "results/.activations.abcd1234", project / "results/.dataset.notes",
            project / "metrics/.dataset.json.abcd1234"]
    for path in keep:
        path.mkdir(parents=True)
    stale = project / "metrics/.dataset.x_9zzzzz"
    stale.mkdir(parents=True)
    out = run_module("stages.dataset", "--no-progress", cwd=project)
    assert out.returncode == 0, out.stderr
    assert not stale.exists() and all(p.is_dir() for p in keep)
    assert "removed 1 stale staging folder(s) of an interrupted run: metrics/.dataset.x_9zzzzz" in out.stderr


# --- through DVC -------------------------------------------------------------------------------------------------

def _cheap(params: dict) -> None:
    params["models"] = ["tiny-llama"]
    params["dataset"]["smoke_per_emotion"] = 8
    params["activations"]["random_init_controls"] = False


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git+DVC project whose `steering` (and its upstream: dataset, activations, vectors) is reproduced."""
    return make_dvc_project(tmp_path_factory.mktemp("dvcproc"), edit=_cheap, targets=("steering",))


def _snapshot(repo: Path, stage: str) -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in {**files(repo / "results" / stage), **files(repo / "metrics" / stage),
                                            "dvc.lock": repo / "dvc.lock"}.items()}


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_killing_dvc_leaves_no_orphan_stage(repo, shell):
    """DVC runs `$SHELL -c cmd`: bash execs the stage (PR_SET_PDEATHSIG fires), dash stays between (watched)."""
    before = _snapshot(repo, "activations")
    inode = (repo / "results/activations").stat().st_ino  # a stage that ran to the end would replace the folder
    lock = repo / LOCKS / "activations.lock"
    lock.unlink(missing_ok=True)
    dvc_proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "activations"], cwd=repo,
                                env={**ENV, "SHELL": shell}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: _staging(repo) and lock.exists() and lock.read_text().strip(), what="the stage to start")
    stage_pid = int(lock.read_text())
    assert stage_pid != dvc_proc.pid and _alive(stage_pid)
    dvc_proc.kill()
    dvc_proc.wait(timeout=30)
    _wait(lambda: not _alive(stage_pid), timeout=30, what=f"the orphaned stage {stage_pid} to exit")
    _wait(lambda: not _staging(repo), timeout=10, what="the staging folders to be cleaned")  # SIGTERM, not SIGKILL
    assert _snapshot(repo, "activations") == before and (repo / "results/activations").stat().st_ino == inode


def test_a_failing_dvc_repro_keeps_the_last_good_outs(repo):
    """persist: true: DVC does not delete the outs before the stage runs, and the stage fails before replacing them."""
    before = _snapshot(repo, "dataset")
    data = repo / "data/emotions.jsonl"
    good = data.read_bytes()
    data.write_bytes(good + b'{"id": "zz-bad", "text": "Whatever.", "emotion": "boredom"}\n')
    try:
        out = run(sys.executable, "-m", "dvc", "repro", "dataset", cwd=repo)
        assert out.returncode != 0 and "unknown emotion 'boredom'" in out.stdout + out.stderr
        assert _snapshot(repo, "dataset") == before
        assert sh("git", "status", "--porcelain", "metrics", "dvc.lock", cwd=repo) == ""  # git-tracked metrics.json
    finally:
        data.write_bytes(good)
    assert "up to date" in dvc("status", "dataset", cwd=repo)


def test_a_failing_exp_run_keeps_the_steering_outs_and_git_checkout_recovers(repo):
    before = _snapshot(repo, "steering")
    out = run(sys.executable, "-m", "dvc", "exp", "run", "steering", "-S", "alpha=abc", cwd=repo)
    assert out.returncode != 0 and "alpha" in out.stdout + out.stderr
    assert _snapshot(repo, "steering") == before
    assert yaml.safe_load((repo / "params.yaml").read_text())["alpha"] == "abc"  # DVC leaves the bad value
    sh("git", "checkout", "params.yaml", cwd=repo)  # the README's recovery
    assert "up to date" in dvc("status", "steering", cwd=repo)  # the kept outs are exactly what dvc.lock records
