"""Stage `report`: results/report/index.md and a self-contained index.html (PNGs embedded) built only from the
metrics JSON and plots among this stage's deps in dvc.yaml; every number in a verdict cites its metrics key."""

from pathlib import Path

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.reporting import report as R
from emotion_circuits.errors import DataError
from emotion_circuits.store.io import read_json, staged_outputs

DEFAULT_DEPS = [R.DATASET, R.ACTIVATIONS, R.VECTORS, R.ALIGNMENT, R.STEERING, R.SINGLE, R.STATS,
                *(str(paths.STAGES[name].plots) for name in ("vectors", "alignment", "steering_sweep", "statistics",
                                                              "head_screening"))]


def run(params, args) -> None:
    deps = R.stage_deps(Path("dvc.yaml"), "report") or DEFAULT_DEPS
    metrics, figures, notes = {}, {}, ""
    for dep in deps:
        path = Path(dep)
        if dep == R.MEASUREMENTS:
            notes = path.read_text(encoding="utf-8") if path.exists() else ""
        elif dep.startswith("metrics/") and path.suffix == ".json":
            if not path.exists():
                raise DataError(f"{dep} not found: run the stage that writes it first (`dvc repro`)")
            metrics[dep] = read_json(path)
        elif path.suffix == ".png" and path.exists():
            figures[R.figure_name(path)] = path
        elif path.is_dir():
            for png in sorted(path.rglob("*.png")):
                figures[R.figure_name(png)] = png
    if R.STATS not in metrics:
        raise DataError(f"the report needs {R.STATS} among its deps (run the statistics stage)")
    doc = R.build(metrics, figures, R.reproducibility(Path("dvc.lock"), Path("dvc.yaml"), "report"), R.versions(),
                  notes)
    with staged_outputs(*paths.STAGES["report"].targets()) as (out,):
        R.write(doc, figures, out)


if __name__ == "__main__":
    cli.main("report", __doc__, run)
