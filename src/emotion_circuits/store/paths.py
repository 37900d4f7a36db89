"""Where each stage reads and writes, relative to the repository root.

dvc.yaml declares the same paths as each stage's outs (a test checks that both agree), so a path is changed in
one place here and in dvc.yaml, never in the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = Path("results")   # DVC-cached outs (pushed to the remote)
METRICS = Path("metrics")   # small JSON, git-tracked
PLOTS = METRICS / "plots"   # CSVs `dvc plots` renders, plus heatmap PNGs


@dataclass(frozen=True)
class StageOuts:
    """A stage's outs: its results folder, its metrics JSON and its plots folder (where it has them)."""

    out: Path
    metrics: Path | None = None
    plots: Path | None = None

    def targets(self) -> list[Path]:
        """The outs in the order stages unpack them from `io.staged_outputs`: out, metrics, plots."""
        return [p for p in (self.out, self.metrics, self.plots) if p is not None]


def _outs(name: str, metrics: str | None = None, plots: str | None = None) -> StageOuts:
    return StageOuts(RESULTS / name, METRICS / f"{metrics}.json" if metrics else None,
                     PLOTS / plots if plots else None)


STAGES: dict[str, StageOuts] = {
    "dataset": _outs("dataset", "dataset"),
    "activations": _outs("activations", "activations"),
    "vectors": _outs("vectors", "vectors", "vectors"),
    "alignment": _outs("alignment", "alignment", "alignment"),
    "steering_sweep": _outs("steering_sweep", "steering", "steering"),
    "steering": _outs("steering", "steering_alpha"),
    "cross_steering": _outs("cross_steering", "cross_steering"),
    "head_screening": _outs("head_screening", "heads", "heads"),
    "head_patching": _outs("head_patching", "heads_patching"),
    "circuits": _outs("circuits", "circuits"),
    "statistics": _outs("statistics", "statistics", "statistics"),
    "report": _outs("report"),
}

# the upstream folders stages read from
DATASET = STAGES["dataset"].out
ACTIVATIONS = STAGES["activations"].out
VECTORS = STAGES["vectors"].out
ALIGNMENT = STAGES["alignment"].out
STEERING_SWEEP = STAGES["steering_sweep"].out
STEERING = STAGES["steering"].out
SCREENING = STAGES["head_screening"].out
