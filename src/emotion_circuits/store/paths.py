"""Where each stage reads and writes, relative to the repository root.

dvc.yaml declares the same paths as each stage's outs (a test checks that both agree), so a path is changed in
one place here and in dvc.yaml, never in the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = Path("results")   # DVC-cached outs (pushed to the remote)
METRICS = Path("metrics")   # one dvclive folder per stage: metrics.json, plots/, dvc.yaml (git-tracked)


@dataclass(frozen=True)
class StageOuts:
    """A stage's outs: its results folder and its dvclive folder `metrics/<stage>/` (metrics.json, plots/ where it
    logs plots, and dvclive's dvc.yaml, which DVC reads but refuses as an out)."""

    out: Path
    live: Path | None = None
    has_plots: bool = False

    @property
    def metrics(self) -> Path | None:
        return self.live / "metrics.json" if self.live else None

    @property
    def plots(self) -> Path | None:
        return self.live / "plots" if self.live and self.has_plots else None

    def targets(self) -> list[Path]:
        """What a stage writes, in the order it unpacks them from `io.staged_outputs`: out, dvclive folder."""
        return [p for p in (self.out, self.live) if p is not None]

    def dvc_outs(self) -> list[Path]:
        """The outs dvc.yaml declares: the results folder, metrics.json and plots/."""
        return [p for p in (self.out, self.metrics, self.plots) if p is not None]


def _outs(name: str, live: bool = True, plots: bool = False) -> StageOuts:
    return StageOuts(RESULTS / name, METRICS / name if live else None, plots)


STAGES: dict[str, StageOuts] = {
    "dataset": _outs("dataset"),
    "activations": _outs("activations"),
    "judges": _outs("judges"),
    "vectors": _outs("vectors", plots=True),
    "alignment": _outs("alignment", plots=True),
    "steering_sweep": _outs("steering_sweep", plots=True),
    "steering_confirm": _outs("steering_confirm", plots=True),
    "steering": _outs("steering"),
    "cross_steering": _outs("cross_steering"),
    "head_screening": _outs("head_screening", plots=True),
    "head_patching": _outs("head_patching"),
    "circuits": _outs("circuits"),
    "statistics": _outs("statistics", plots=True),
    "report": _outs("report", live=False),
}

# the upstream folders stages read from
DATASET = STAGES["dataset"].out
ACTIVATIONS = STAGES["activations"].out
VECTORS = STAGES["vectors"].out
ALIGNMENT = STAGES["alignment"].out
STEERING_SWEEP = STAGES["steering_sweep"].out
STEERING = STAGES["steering"].out
STEERING_CONFIRM = STAGES["steering_confirm"].out
SCREENING = STAGES["head_screening"].out
