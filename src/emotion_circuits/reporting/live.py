"""Every stage logs its summary metrics, plot tables and figures through one `dvclive.Live` per stage.

Layout (one folder per stage, `metrics/<stage>/`, written whole through `store.io.staged_outputs`):
`metrics.json` (the summary, what `dvc metrics diff` / `dvc exp show` read), `plots/custom/<name>.json` (tables
with their x/y declared), `plots/images/<name>.png` (figures), and `dvc.yaml` (dvclive's declaration of the
three; DVC reads dvc.yaml files in subfolders, so the top-level dvc.yaml wires no plots by hand). The stage's outs
are `metrics.json` and `plots/`; dvc.yaml itself cannot be an out (DVC refuses it).
No steps and no timestamps are logged (`make_summary` adds `step` only after `next_step`), no experiment is saved
and `Live.end` is never called (it would `git add` the staging path inside `dvc exp run`): reruns stay
byte-identical.
Wall/CPU seconds, throughput, peak memory and the machine's load average go to `timing.json` in the same folder
(`StageLive.log_timing`): written with the rest (all or nothing) but neither a DVC out nor in git (.gitignore), so
`dvc repro -f` leaves every metrics.json, and so every md5 in dvc.lock, unchanged. Nothing deterministic (the
report, the statistics) reads it; measured figures that the report quotes live in `metrics/measurements.md`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from emotion_circuits.store.io import dumps_json, write_json

TIMING_FILE = "timing.json"  # per stage, next to metrics.json; not a DVC out, git-ignored


def rounded(value: Any) -> Any:
    """6 significant digits (the precision of the former CSVs), NaN/inf as null: small, stable plot files."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, int):
        return value
    return float(f"{value:.6g}") if math.isfinite(value) else None


def repo_free_live(directory: Path):
    """A `dvclive.Live` that does not open the DVC/git repo: stages run inside `dvc repro` / `dvc exp run`, which
    track their outs, so dvclive's repo integration (experiment names, `dvc exp save`, Studio) has nothing to do,
    and it fails on a git repo without commits (`scmrepo` "Empty git repo", raised past dvclive's own guard)."""
    from dvclive import Live

    class RepoFreeLive(Live):
        def _init_dvc(self) -> None:  # only what the repo-free path needs: where dvc.yaml goes
            self._dvc_file = self._init_dvc_file()

    return RepoFreeLive(str(directory), dvcyaml=str(Path(directory) / "dvc.yaml"), save_dvc_exp=False, report=None)


class Stopwatch:
    """Wall (`perf_counter`) and CPU (`process_time`: this process, user + system) seconds since it started. Both,
    because on a shared machine wall time alone mixes our work with the load: a low CPU/wall ratio says we waited
    (for other processes, Ray actors or child workers, whose CPU is `children_cpu_seconds` once they exit)."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.children = time.perf_counter(), time.process_time(), _children_cpu()

    def elapsed(self) -> dict[str, float]:
        return {"wall_seconds": round(time.perf_counter() - self.wall, 3),
                "cpu_seconds": round(time.process_time() - self.cpu, 3),
                "children_cpu_seconds": round(_children_cpu() - self.children, 3)}


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB; ru_maxrss is KiB on Linux, bytes on macOS). Stdlib only, so
    model-free stages do not import torch through `runtime.resources`."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _load_average() -> list[float] | None:
    """1/5/15-minute load average (what a timing needs stated next to it); None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class StageLive:
    """A stage's dvclive logger: `log_metrics`, `log_table`, `log_timing`, and `figures` (where plot writers save
    PNGs)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.live = repo_free_live(self.directory)
        self.figures = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.figures.", dir=self.directory.parent))
        self.stopwatch, self.load_at_start, self.timing = Stopwatch(), _load_average(), {}

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """The stage's summary metrics, sorted and with NaN as null exactly as `store.io.dumps_json` writes them."""
        self.live.summary = json.loads(dumps_json(metrics))

    def log_table(self, name: str, frame: pd.DataFrame, x: str, y: str | Sequence[str], y_label: str | None = None,
                  title: str | None = None, template: str = "simple") -> None:
        """One plot table (`plots/custom/<name>.json`) whose x and y fields dvclive declares for `dvc plots`."""
        rows = [{k: rounded(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
        self.live.log_plot(name, rows, x=x, y=list(y) if not isinstance(y, str) else y, template=template,
                           title=title, y_label=y_label)

    def log_timing(self, timing: Mapping[str, Any]) -> None:
        """Stage-specific timing/memory figures for `timing.json` (merged; written at `close` with the stage's
        total wall/CPU seconds, peak RSS and load average). Never put such figures in `log_metrics`."""
        self.timing.update(timing)

    def write_timing(self) -> None:
        """`timing.json`: the logged figures plus the whole stage's clock and the machine's state."""
        write_json(self.directory / TIMING_FILE, {
            **self.timing, "stage": self.stopwatch.elapsed(), "peak_rss_mb": _peak_rss_mb(),
            "machine": {"cpu_count": os.cpu_count(), "load_average_1_5_15_start": self.load_at_start,
                        "load_average_1_5_15_end": _load_average()}})

    def close(self) -> None:
        """Log the PNGs saved under `figures` as images, then write metrics.json, dvc.yaml and timing.json."""
        for png in sorted(self.figures.rglob("*.png")):
            self.live.log_image(png.relative_to(self.figures).as_posix(), png)
        self.live.make_summary()
        self.live.make_dvcyaml()
        self.write_timing()
        shutil.rmtree(self.figures, ignore_errors=True)


@contextlib.contextmanager
def stage_live(directory: Path) -> Iterator[StageLive]:
    """A `StageLive` on a (staged) `metrics/<stage>` folder; written out only if the block succeeds."""
    live = StageLive(directory)
    try:
        yield live
        live.close()
    finally:
        shutil.rmtree(live.figures, ignore_errors=True)
