"""Damaged shared artefacts never go unnoticed: the writer's manifest, shard coverage, unreadable files, and DVC's
`verify = true` on the default remote (issue 15, item 3)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from emotion_circuits.errors import ArtefactError
from emotion_circuits.store.activations import load_activations, model_dirname
from emotion_circuits.store.integrity import MANIFEST, build_manifest
from emotion_circuits.store.io import read_json, read_parquet, read_tensors, write_parquet, write_tensors

from .conftest import ROOT, run_module
from .dvc_project import dvc, make_dvc_project, run, tiny_params

MODEL = "tiny-gpt2"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """A scratch project with real dataset + activations outs (one tiny model, smoke profile), made by the stages."""
    project = tmp_path_factory.mktemp("upstream")
    shutil.copytree(ROOT / "data", project / "data")
    params = tiny_params()
    params["models"] = [MODEL]
    params["dataset"]["smoke_per_emotion"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("dataset", "activations"):
        out = run_module(f"stages.{stage}", "--no-progress", cwd=project)
        assert out.returncode == 0, out.stderr
    return project


@pytest.fixture
def project(upstream, tmp_path) -> Path:
    copy = tmp_path / "p"
    shutil.copytree(upstream, copy)
    return copy


def _shards(project: Path) -> list[Path]:
    return sorted((project / "results/activations" / model_dirname(MODEL) / "sentence_end").glob("shard-*"))


def _vectors_error(project: Path) -> str:
    """The vectors stage's one-line error (exit 2, no outs) on the project's damaged activations."""
    out = run_module("stages.vectors", "--no-progress", cwd=project)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert not (project / "results/vectors").exists()
    return lines[0]


def test_writer_records_a_deterministic_manifest_that_readers_accept(upstream):
    for stage in ("dataset", "activations"):
        out_dir = upstream / "results" / stage
        text = (out_dir / MANIFEST).read_text()
        assert build_manifest(out_dir)["files"] == yaml.safe_load(text)["files"]  # every file, hashed
        assert str(upstream) not in text and "time" not in text  # no absolute paths, no times: reruns identical
    recorded = yaml.safe_load((upstream / "results/activations" / MANIFEST).read_text())["files"]
    assert f"{model_dirname(MODEL)}/index.parquet" in recorded and len(recorded) >= 3


def test_clean_upstream_is_used(project):
    out = run_module("stages.vectors", "--no-progress", cwd=project)
    assert out.returncode == 0, out.stderr
    assert (project / "results/vectors" / MANIFEST).exists()


def test_deleted_shard_is_an_error_not_zeros(project):
    shard = _shards(project)[0]
    shard.unlink()
    line = _vectors_error(project)
    assert str(shard.relative_to(project)) in line and "missing" in line and "dvc pull" in line


def test_shards_must_cover_every_row_exactly_once(tmp_path):
    """Even without a manifest (a folder outside results/): a lost shard is reported, never read as zeros."""
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    write_parquet(model_dir / "index.parquet", pd.DataFrame({"id": ["a", "b", "c", "d"]}))
    for n, rows in enumerate(([0, 1], [2, 3])):
        write_tensors(model_dir / "sentence_end" / f"shard-{n:05d}.safetensors",
                      {"blocks.0.hook_resid_post": np.ones((2, 3), np.float32),
                       "row_index": np.array(rows, np.int64)}, {})
    assert load_activations(model_dir, "sentence_end")[1]["blocks.0.hook_resid_post"].shape == (4, 3)
    (model_dir / "sentence_end" / "shard-00001.safetensors").unlink()
    with pytest.raises(ArtefactError, match=r"2 of 4 rows missing"):
        load_activations(model_dir, "sentence_end")
    write_tensors(model_dir / "sentence_end" / "shard-00001.safetensors",
                  {"blocks.0.hook_resid_post": np.ones((2, 5), np.float32), "row_index": np.array([2, 3])}, {})
    with pytest.raises(ArtefactError, match=r"shard-00001.safetensors is damaged \(blocks.0.hook_resid_post has shape"):
        load_activations(model_dir, "sentence_end")


def test_truncated_shard_names_the_file(project, tmp_path):
    shard = _shards(project)[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    line = _vectors_error(project)
    assert str(shard.relative_to(project)) in line and "damaged" in line
    # the reader itself, on a file no manifest covers: one line naming the file instead of a SafetensorError
    loose = tmp_path / "loose.safetensors"
    loose.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtefactError, match=r"loose.safetensors is not a readable safetensors file"):
        read_tensors(loose)


def test_corrupt_header_names_the_file(project, tmp_path):
    shard = _shards(project)[0]
    data = bytearray(shard.read_bytes())
    data[8:16] = b"\xff" * 8  # the header's first bytes: no longer JSON
    shard.write_bytes(bytes(data))
    line = _vectors_error(project)
    assert str(shard.relative_to(project)) in line and "sha256 differs" in line and "dvc repro -f activations" in line
    loose = tmp_path / "loose.safetensors"
    loose.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=r"loose.safetensors is not a readable safetensors file"):
        read_tensors(loose)
    bad_parquet, bad_json = tmp_path / "t.parquet", tmp_path / "t.json"
    bad_parquet.write_bytes(b"PAR1 not really")
    bad_json.write_text("{\"a\": ")
    with pytest.raises(ArtefactError, match=r"t.parquet is not a readable parquet file"):
        read_parquet(bad_parquet)
    with pytest.raises(ArtefactError, match=r"t.json is not a readable JSON file"):
        read_json(bad_json)


def test_flipped_byte_is_a_hash_mismatch(project):
    """Same size, readable, wrong numbers: only the writer's hash can tell."""
    shard = _shards(project)[-1]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's float data
    shard.write_bytes(bytes(data))
    read_tensors(shard)  # still a valid safetensors file (outside a stage folder relative to this cwd)
    line = _vectors_error(project)
    assert line == (f"error: {shard.relative_to(project)} is damaged (sha256 differs from what the activations stage "
                    f"wrote): run `dvc pull results/activations` or `dvc repro -f activations`")


def test_extra_file_is_refused(project):
    stray = _shards(project)[0].with_name("shard-99999.safetensors")
    shutil.copy(_shards(project)[0], stray)
    assert str(stray.relative_to(project)) in _vectors_error(project)


def test_outs_without_manifest_from_an_older_run_say_rerun(project):
    (project / "results/activations" / MANIFEST).unlink()
    line = _vectors_error(project)
    assert line == ("error: results/activations/manifest.json is missing (outs from an older or interrupted run): "
                    "run `dvc repro -f activations`")


def test_upstream_damage_is_caught_by_every_downstream_reader(project):
    """Parquet inputs too: the dataset's sentences, read by the activations stage."""
    sentences = project / "results/dataset/sentences.parquet"
    data = bytearray(sentences.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sentences.write_bytes(bytes(data))
    out = run_module("stages.activations", "--no-progress", cwd=project)
    assert out.returncode == 2 and "results/dataset/sentences.parquet is damaged" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _default_remote_verify() -> str:
    from configobj import ConfigObj

    config = ConfigObj(str(ROOT / ".dvc/config"))
    remote = config["core"]["remote"]
    return config[f'remote "{remote}"'].get("verify", "false")


def test_a_corrupted_remote_object_is_refused_by_pull(tmp_path):
    """With the repo's `verify` setting on the default remote, `dvc pull` re-hashes what it fetches: a corrupted
    object is dropped from the cache (dvc_data HashFileDB.add -> check) and the checkout fails, exit 1."""
    verify = _default_remote_verify()
    assert verify == "true"  # .dvc/config: otherwise the corrupted object is pulled, exit 0, `dvc status` clean
    repo = make_dvc_project(tmp_path, targets=("dataset",))
    dvc("remote", "modify", "shared", "verify", verify, cwd=repo)
    dvc("push", "-q", cwd=repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    sentences = next(f for f in _dir_entries(repo, lock) if f["relpath"] == "sentences.parquet")
    obj = tmp_path / "storage/files/md5" / sentences["md5"][:2] / sentences["md5"][2:]
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    shutil.rmtree(repo / ".dvc/cache")
    shutil.rmtree(repo / "results/dataset")
    out = run(sys.executable, "-m", "dvc", "pull", "results/dataset", cwd=repo)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Checkout failed" in out.stderr and "results/dataset" in out.stderr
    assert not (repo / "results/dataset/sentences.parquet").exists()  # never the corrupted bytes


def _dir_entries(repo: Path, lock: dict) -> list[dict]:
    """The file list of results/dataset's `.dir` object in the local cache."""
    out = next(o for o in lock["stages"]["dataset"]["outs"] if o["path"] == "results/dataset")
    oid = out["md5"]
    return json.loads((repo / ".dvc/cache/files/md5" / oid[:2] / oid[2:]).read_text())
