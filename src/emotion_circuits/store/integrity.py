"""Content hashes of every stage's results folder, recorded by the writer and checked by each reader.

DVC checks what it transfers (`verify = true` on the remote), but not what a later reader finds: a shard deleted
or truncated in the workspace, a flipped byte, or outs from an older run. `staged_outputs` writes
`results/<stage>/manifest.json` (sha256 and size of every file, relative paths, sorted: deterministic bytes, so
`dvc repro -f` stays byte-identical), and `checked(path)` verifies the folder a path lies in before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from emotion_circuits.errors import ArtefactError
from emotion_circuits.store import paths

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20
_verified: dict[Path, tuple] = {}  # resolved out folder -> the (file, size, mtime) snapshot it was verified at


def stage_of(path: Path) -> tuple[str, Path] | None:
    """(stage, its results folder) for a path inside a registered stage's results folder, else None."""
    target = Path(os.path.abspath(path))
    for name, outs in paths.STAGES.items():
        out = Path(os.path.abspath(outs.out))
        if target == out or out in target.parents:
            return name, outs.out
    return None


def is_stage_out(path: Path) -> bool:
    """Whether `path` is a registered stage's results folder (the folders that get a manifest)."""
    found = stage_of(path)
    return found is not None and Path(os.path.abspath(found[1])) == Path(os.path.abspath(path))


def advice(stage: str, out_dir: Path) -> str:
    return f"run `dvc pull {out_dir}` or `dvc repro -f {stage}`"


def advice_for(path: Path, otherwise: str) -> str:
    """What to run about a bad file: `advice` for its stage's results folder, `otherwise` outside any."""
    found = stage_of(path)
    return advice(*found) if found else otherwise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(out_dir: Path) -> list[Path]:
    top = Path(out_dir) / MANIFEST
    return sorted(p for p in Path(out_dir).rglob("*") if p.is_file() and p != top)


def build_manifest(out_dir: Path) -> dict:
    """{format, files: {relative posix path: {sha256, size}}} of everything under `out_dir` but the manifest."""
    out_dir = Path(out_dir)
    return {"format": FORMAT,
            "files": {p.relative_to(out_dir).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
                      for p in _files(out_dir)}}


def write_manifest(out_dir: Path) -> None:
    Path(out_dir, MANIFEST).write_text(json.dumps(build_manifest(out_dir), indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")


def _snapshot(out_dir: Path) -> tuple:
    return tuple((p.as_posix(), st.st_size, st.st_mtime_ns) for p in sorted(Path(out_dir).rglob("*"))
                 if p.is_file() and (st := p.stat()))


def verify(out_dir: Path, stage: str) -> None:
    """Raise ArtefactError (naming the file and what to run) unless `out_dir` holds exactly what `stage` wrote.

    Hashes each folder once per process (again only if a file's size or mtime changed since).
    """
    out_dir = Path(out_dir)
    key, snapshot = Path(os.path.abspath(out_dir)), _snapshot(out_dir)
    if _verified.get(key) == snapshot:
        return
    manifest_path = out_dir / MANIFEST
    if not out_dir.is_dir():
        raise ArtefactError(f"{out_dir} is missing: {advice(stage, out_dir)}")
    if not manifest_path.is_file():
        raise ArtefactError(f"{manifest_path} is missing (outs from an older or interrupted run): "
                            f"run `dvc repro -f {stage}`")
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ArtefactError(f"{manifest_path} is damaged: {advice(stage, out_dir)}") from None
    present = {p.relative_to(out_dir).as_posix() for p in _files(out_dir)}
    for rel in sorted(recorded):
        path = out_dir / rel
        if rel not in present:
            raise ArtefactError(f"{path} is missing: {advice(stage, out_dir)}")
        entry = recorded[rel]
        if path.stat().st_size != entry.get("size"):
            raise ArtefactError(f"{path} is damaged ({path.stat().st_size} bytes, the {stage} stage wrote "
                                f"{entry.get('size')}): {advice(stage, out_dir)}")
        if sha256_file(path) != entry.get("sha256"):
            raise ArtefactError(f"{path} is damaged (sha256 differs from what the {stage} stage wrote): "
                                f"{advice(stage, out_dir)}")
    extra = sorted(present - set(recorded))
    if extra:
        raise ArtefactError(f"{out_dir / extra[0]} was not written by the {stage} stage (remove it): "
                            f"{advice(stage, out_dir)}")
    _verified[key] = snapshot


def checked(path: Path) -> Path:
    """`path`, after verifying the stage results folder it lies in (paths outside results/<stage> pass as is)."""
    found = stage_of(path)
    if found is not None:
        verify(found[1], found[0])
    return path
