"""Deterministic, pickle-free, all-or-nothing writing of stage outputs.

Every stage writes its outs into a staging directory next to the target and renames it into place
only after everything succeeded, so a failing stage never leaves half-written outs behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from emotion_circuits.errors import ArtefactError
from emotion_circuits.store.integrity import advice_for, checked, is_stage_out, write_manifest


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    return obj


def dumps_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, fixed indent, trailing newline) so diffs stay meaningful."""
    return json.dumps(_to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_json(obj), encoding="utf-8")


@contextlib.contextmanager
def _readable(path: Path, kind: str) -> Iterator[None]:
    """Turn a damaged file's library error (SafetensorError, ArrowInvalid, JSONDecodeError, ...) into one line
    naming the file and what to run; a missing file stays FileNotFoundError. Readers call it after
    `integrity.checked`: every read of a stage's results first verifies that folder against the writer's
    manifest (once per process), so no reader can use a damaged, partial or stale upstream artefact."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (SafetensorError, pa.ArrowException, OSError, ValueError) as err:
        todo = advice_for(path, "rewrite or restore it")
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ArtefactError(f"{path} is not a readable {kind} file ({reason}): {todo}") from None


def read_json(path: Path) -> Any:
    checked(path)
    with _readable(path, "JSON"):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Parquet without pandas index metadata drift; byte-identical for identical frames."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    pq.write_table(table, Path(path), compression="zstd", write_statistics=False)


def read_parquet(path: Path) -> pd.DataFrame:
    checked(path)
    with _readable(path, "parquet"):
        return pd.read_parquet(Path(path))


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor | np.ndarray], metadata: Mapping[str, str]) -> None:
    """Safetensors (never pickle): a `dvc pull` must not be able to execute code.

    The metadata goes in as one JSON string under a single key: safetensors writes its metadata map in
    arbitrary order, which would break byte-identical outputs.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # copies: safetensors refuses tensors that share memory (e.g. a self-pair map's source and target reductions)
    as_torch = {k: (torch.from_numpy(np.array(v, order="C")) if isinstance(v, np.ndarray) else v.contiguous().clone())
                for k, v in sorted(tensors.items())}
    save_file(as_torch, str(path), metadata={"emotion_circuits": json.dumps(dict(metadata), sort_keys=True)})


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    checked(path)
    with _readable(path, "safetensors"):
        return load_file(str(path))


def read_tensor_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    checked(path)
    with _readable(path, "safetensors"), safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("emotion_circuits", "{}"))


@contextlib.contextmanager
def staged_outputs(*targets: Path) -> Iterator[list[Path]]:
    """Yield staging paths for `targets`; move them into place only if the block succeeds.

    Targets may be files or directories. Existing targets are replaced only at the very end; on any
    exception the staging area is deleted and nothing is written (DVC itself removes stale outs
    before it runs a stage).
    """
    targets = [Path(t) for t in targets]
    staging_roots: list[Path] = []
    staged: list[Path] = []
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        staging_roots.append(root)
        staged.append(root / target.name)
    try:
        yield staged
        for target, path in zip(targets, staged):
            if not path.exists():
                raise RuntimeError(f"stage did not produce its output {target}")
        _write_manifests(targets, staged)
        for target, path in zip(targets, staged):
            _remove(target)
            os.replace(path, target)
    finally:
        for root in staging_roots:
            shutil.rmtree(root, ignore_errors=True)


def _write_manifests(targets: list[Path], staged: list[Path]) -> None:
    """Each stage results folder gets its content hashes (store/integrity.py), checked by every reader."""
    for target, path in zip(targets, staged):
        if path.is_dir() and is_stage_out(target):
            write_manifest(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
