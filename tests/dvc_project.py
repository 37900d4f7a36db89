"""A throwaway git+DVC copy of this repo's pipeline on tiny models, for tests that drive `dvc` itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from .conftest import ROOT

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com", "DVC_NO_ANALYTICS": "1"}


def run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)


def sh(*cmd: str, cwd: Path) -> str:
    out = run(*cmd, cwd=cwd)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def dvc(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


# the sweep's settings on a 3-layer model: the seeds' and the old default, plus one norm-preserving band
TINY_SETTINGS = {"seeds": {"vector_position": "emotion_tokens", "window": "all"},
                 "last3": {"vector_position": "sentence_end", "window": "last", "window_n": 3},
                 "tokens_norm_band": {"vector_position": "emotion_tokens", "window": "all", "mode": "norm", "band": 2,
                                      "layers": [0]}}


def tiny_params() -> dict:
    """This repo's params.yaml on tiny models and the smoke profile: every stage in seconds."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = ["tiny-llama", "tiny-gpt2", "tiny-bert"]
    params["dataset"]["profile"] = "smoke"
    params["dataset"]["smoke_per_emotion"] = 20  # per source (hand-written and GoEmotions) and emotion
    params["alignment"].update(reduce_dim=8, ks=[2, 4], k_report=2, n_random=50, n_perm=5, n_noise=3,
                               n_cka_perm=5, n_layer_pairs=2)
    params["steering_common"].update(model="tiny-llama", max_new_tokens=4)
    params["steering_sweep"].update(layers=[1], alphas=[2], n_prompts=3, n_random=2, random_prompts=2,
                                    settings=TINY_SETTINGS)
    params["steering_confirm"].update(n_prompts=3, n_random=3, random_per_prompt=2, dose=[-1], n_examples=2)
    params["steering"].update(layer=1, n_prompts=3, n_random=2)
    params["cross_steering"].update(n_prompts=3, n_random=3)  # auto: the two causal tiny models
    params["statistics"].update(n_boot=200, n_perm=200)
    params["execution"].update(chunk_size=8)  # several chunks per stage, so the Ray test really splits the work
    params["heads"].update(model="tiny-llama", n_sentences=4, batch_size=4)
    params["head_screening"].update(evaluate_top_n=1, n_generate=2, max_new_tokens=3)
    params["head_patching"].update(top_k=2, n_random_sets=3)
    params["circuits"].update(n_neurons=4, n_random_sets=3, n_tokens=3)
    return params


def make_dvc_project(base: Path, edit: Callable[[dict], None] | None = None,
                     targets: tuple[str, ...] = ()) -> Path:
    """`base/a`: a git+DVC repo with this repo's code, data and dvc.yaml, tiny params (changed by `edit`), a local
    remote at `base/storage`, reproduced (only `targets` and their upstream if given) and committed."""
    repo = base / "a"
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("data", "stages", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "metrics").mkdir()
    for name in ("measurements.md", "peers.json"):  # git-tracked inputs of the report / the sweep's frontier plot
        shutil.copy(ROOT / "metrics" / name, repo / "metrics" / name)
    params = tiny_params()
    if edit is not None:
        edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.autostage", "true", cwd=repo)
    dvc("remote", "add", "-d", "shared", str(base / "storage"), cwd=repo)
    dvc("repro", *targets, cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline", cwd=repo)
    return repo
