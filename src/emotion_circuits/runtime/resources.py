"""Devices, dtypes and memory: what lets the same stage run on a laptop CPU and on a GPU box.

`device: auto` picks cuda > mps > cpu; `dtype: auto` picks bfloat16 on GPUs and float32 on CPUs (CPU half
precision is slow and changes results). Batches back off on out-of-memory: the batch is halved and retried,
and the halving is logged, so a too-large `batch_size` costs time, never the run.
"""

from __future__ import annotations

import logging
import resource
import sys
from collections.abc import Callable

import torch

from emotion_circuits.errors import UserError

log = logging.getLogger(__name__)


class ResourceError(UserError):
    """Even a batch of one does not fit in memory."""


def resolve_device(device: str) -> str:
    """`auto` -> cuda, else mps, else cpu; anything else is passed through (cuda:1, cpu, ...)."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` -> bfloat16 on accelerators, float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float32" if resolve_device(device).startswith("cpu") else "bfloat16"


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_backoff(n_items: int, batch_size: int, run: Callable[[int, int], None], what: str) -> int:
    """Call `run(start, stop)` over consecutive slices of `n_items`; on out-of-memory halve the batch and retry.

    `run` must be safe to repeat for a slice (it writes its results only after succeeding). Returns the batch
    size that finally worked, so callers can report it.
    """
    start = 0
    while start < n_items:
        stop = min(start + batch_size, n_items)
        try:
            run(start, stop)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
            if not is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size == 1:
                raise ResourceError(f"{what}: out of memory even with a batch of 1; use a smaller model, "
                                    "dtype bfloat16, or a device with more memory") from None
            batch_size = max(1, batch_size // 2)
            log.warning("%s: out of memory; batch size halved to %d and the batch retried", what, batch_size)
            continue
        start = stop
    return batch_size


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB); ru_maxrss is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
