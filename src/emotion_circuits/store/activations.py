"""The activations stage's on-disk layout, apart from the code that computes it (`model/extraction.py`), so that
readers (vectors, alignment) depend on the format only, not on models, hooks or executors.

`<activations>/<model_dirname>/index.parquet` (one row per dataset row) and `<position>/shard-NNNNN.safetensors`
(every hook's [rows, d_model] block plus `row_index`, the rows' positions in the dataset).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from emotion_circuits.errors import ArtefactError
from emotion_circuits.store.integrity import advice_for
from emotion_circuits.store.io import read_parquet, read_tensors, write_parquet, write_tensors

Captured = dict[str, dict[str, torch.Tensor]]  # {hook_name: {position: [batch, d_model]}}


def model_dirname(name: str) -> str:
    """Directory name for a model's activations (HF ids contain '/')."""
    return name.replace("/", "__")


class ShardWriter:
    """Streams batches to `<out>/<position>/shard-NNNNN.safetensors`, one file per `shard_rows` rows.

    Shards carry `row_index`, so they can be written in the length-sorted order batches are computed in.
    """

    def __init__(self, out_dir, positions: Sequence[str], metadata: dict, shard_rows: int = 256):
        self.out_dir, self.positions, self.metadata = Path(out_dir), list(positions), dict(metadata)
        self.shard_rows = shard_rows
        self.buffer: dict[str, list[dict[str, torch.Tensor]]] = {p: [] for p in self.positions}
        self.rows: list[list[int]] = []
        self.n_shards = 0

    def add(self, idx: list[int], captured: Captured) -> None:
        for pos in self.positions:
            self.buffer[pos].append({name: by_pos[pos] for name, by_pos in captured.items()})
        self.rows.append(list(idx))
        if sum(len(r) for r in self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        row_index = torch.tensor([i for r in self.rows for i in r], dtype=torch.int64)
        for pos in self.positions:
            parts = self.buffer[pos]
            tensors = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
            tensors["row_index"] = row_index
            write_tensors(self.out_dir / pos / f"shard-{self.n_shards:05d}.safetensors", tensors,
                          {**self.metadata, "position": pos, "shard": self.n_shards})
            self.buffer[pos] = []
        self.rows = []
        self.n_shards += 1

    def close(self) -> None:
        self.flush()


def save_index(out_dir, rows: Sequence[Any], index: pd.DataFrame) -> None:
    """The row index beside the shards: dataset ids, labels, split and where each row was read (`rows`: the
    extraction's tokenised rows, with input_ids, end_pos, emotion_positions and fallback). `source` says which
    dataset source a row came from (hand-written or GoEmotions), for the vectors stage's cross-source transfer."""
    index = index[["id", "emotion", "split"]].assign(
        source=index["source"] if "source" in index else "handwritten").copy()
    index["n_tokens"] = [len(r.input_ids) for r in rows]
    index["sentence_end_pos"] = [r.end_pos for r in rows]
    index["emotion_token_positions"] = [list(r.emotion_positions) for r in rows]
    index["emotion_token_fallback"] = [r.fallback for r in rows]
    write_parquet(Path(out_dir) / "index.parquet", index)


def save_activations(out_dir, result: Any, index: pd.DataFrame, metadata: dict, shard_rows: int = 256) -> None:
    """Write an in-memory extraction (`result.activations[position][hook]`, `result.rows`) in the same sharded
    layout the streaming stage writes."""
    writer = ShardWriter(out_dir, list(result.activations), metadata, shard_rows)
    n_rows = len(result.rows)
    for lo in range(0, n_rows, shard_rows):
        idx = list(range(lo, min(lo + shard_rows, n_rows)))
        writer.add(idx, {name: {pos: torch.from_numpy(result.activations[pos][name][idx])
                                for pos in result.activations}
                         for name in next(iter(result.activations.values()))})
    writer.close()
    save_index(out_dir, result.rows, index)


def load_activations(model_dir, position: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(row index frame, {hook_name: [n_rows, d_model] float32 array}) for one model and position mode.

    The shards must cover every row of the index exactly once, with one width per hook: a lost shard would
    otherwise read back as rows of zeros.
    """
    model_dir = Path(model_dir)
    index = read_parquet(model_dir / "index.parquet")
    shards = sorted((model_dir / position).glob("shard-*.safetensors"))
    if not shards:
        raise ArtefactError(f"no activation shards in {model_dir / position}: {_advice(model_dir)}")
    n_rows = len(index)
    seen = np.zeros(n_rows, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for path in shards:
        tensors = read_tensors(path)
        if "row_index" not in tensors:
            raise _damaged(path, "no row_index tensor")
        rows = tensors.pop("row_index").numpy()
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n_rows)):
            raise _damaged(path, f"row_index outside the {n_rows} rows of {model_dir / 'index.parquet'}")
        if out and set(tensors) != set(out):
            raise _damaged(path, f"hooks differ from {shards[0].name}")
        for name, values in tensors.items():
            if values.ndim != 2 or values.shape[0] != len(rows) or (name in out and values.shape[1] !=
                                                                     out[name].shape[1]):
                raise _damaged(path, f"{name} has shape {tuple(values.shape)} for {len(rows)} rows")
            if name not in out:
                out[name] = np.zeros((n_rows, values.shape[1]), dtype=np.float32)
            out[name][rows] = values.numpy()
        np.add.at(seen, rows, 1)
    if (seen != 1).any():
        bad = int(np.flatnonzero(seen != 1)[0])
        what = "missing from every shard" if seen[bad] == 0 else f"in {int(seen[bad])} shards"
        raise ArtefactError(f"{model_dir / position}: {int((seen == 0).sum())} of {n_rows} rows missing, "
                            f"{int((seen > 1).sum())} duplicated (row {bad} {what}; a shard was lost or is "
                            f"from another run): {_advice(model_dir)}")
    return index, out


def _advice(path: Path) -> str:
    return advice_for(path, "rewrite the activations")


def _damaged(path: Path, why: str) -> ArtefactError:
    return ArtefactError(f"{path} is damaged ({why}): {_advice(path)}")
