"""Where heavy work runs: in this process (`executor: local`) or on Ray actors (`executor: ray`).

Work is cut into the same fixed chunks under both executors and results are merged in chunk order, so the
outs are byte-identical whichever executor ran them (tested on a local Ray cluster). A worker is built from a
picklable factory and loads its model once; under Ray there is one actor per GPU where GPUs exist, otherwise
`execution.ray_workers` CPU actors. Ray moves chunks and results between processes with its own in-memory serialisation;
nothing it transports is ever written to disk, so the no-pickle rule for artefacts still holds.

On a real cluster: start Ray on the machines (`ray start --head`, `ray start --address=<head>:6379`), then
`dvc exp run -S executor=ray -S execution.ray_address=auto` (or set RAY_ADDRESS). DVC still runs and tracks the
stage on the machine where `dvc repro` runs; the actors only compute chunks and send results back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from emotion_circuits.errors import UserError
from emotion_circuits.params import ExecutionParams

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def _threads_for_workers() -> int:
    """Workers use this process's torch thread count: float reductions, and so the bytes, stay the same."""
    return torch.get_num_threads()


class _Actor:
    """Holds one worker (one loaded model) inside a Ray actor process."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]], threads: int):
        torch.set_num_threads(threads)
        self.worker = factory()

    def run(self, chunk):
        return self.worker(chunk)


def map_chunks(factory: Callable[[], Callable[[list[T]], R]], items: Sequence[T], config: ExecutionParams,
               what: str = "work", local_factory: Callable[[], Callable[[list[T]], R]] | None = None) -> list[R]:
    """Apply a worker (built once per process by `factory`) to each chunk of `items`; results in chunk order.

    `local_factory` lets the local executor reuse a model the stage has already loaded.
    """
    return list(imap_chunks(factory, chunked(items, config.chunk_size), config, what, local_factory))


def imap_chunks(factory: Callable[[], Callable[[Any], R]], chunks: Sequence[Any], config: ExecutionParams,
                what: str = "work", local_factory: Callable[[], Callable[[Any], R]] | None = None) -> Iterator[R]:
    """Yield the worker's result for each (pre-cut) chunk, in chunk order, as soon as it is ready.

    Streaming callers (activation shards) consume one result at a time, so memory stays bounded by a chunk.
    """
    if config.executor == "local":
        worker = (local_factory or factory)()
        for chunk in chunks:
            yield worker(chunk)
        return
    if config.executor != "ray":
        raise ValueError(f"unknown executor {config.executor!r} (allowed: {', '.join(EXECUTORS)})")
    yield from _imap_ray(factory, list(chunks), config, what)


def _imap_ray(factory, chunks: list, config: ExecutionParams, what: str) -> Iterator:
    import ray
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:
        address = config.ray_address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_roots())}})
    actors = []
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n_actors = max(1, min(len(chunks), gpus or config.ray_workers))
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        remote = ray.remote(**options)(_Actor)
        actors = [remote.remote(factory, _threads_for_workers()) for _ in range(n_actors)]
        log.info("%s: %d chunks on %d Ray actors (%s)", what, len(chunks), n_actors, "GPU" if gpus else "CPU")
        pool = ActorPool(actors)
        try:
            yield from pool.map(lambda actor, chunk: actor.run.remote(chunk), chunks)  # ordered like `chunks`
        except ray.exceptions.RayTaskError as exc:  # a user error inside an actor stays one clear line
            if isinstance(getattr(exc, "cause", None), UserError):
                raise exc.cause from None
            raise
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _import_roots() -> list[str]:
    """Make this package and the stage modules importable in Ray worker processes."""
    import emotion_circuits

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(emotion_circuits.__file__)))
    return [package_root, os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
