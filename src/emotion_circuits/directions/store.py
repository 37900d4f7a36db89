"""Reading the vectors stage's directions back: `load_directions` turns one model's vectors file into
`EmotionDirections` per site for a registered direction method, in the unit steering asks for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.directions.methods import METHODS, at_norms
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.store.activations import model_dirname
from emotion_circuits.model.site import Site
from emotion_circuits.store.io import read_parquet, read_tensors

UNITS = ("raw", "norm")  # raw: the method's direction itself; norm: unit direction x typical neutral residual norm


def vectors_file(vectors_dir: Path, model: str, position: str) -> Path:
    """The vectors stage's tensors for one model and position mode (DataError when that run is missing)."""
    path = Path(vectors_dir) / model_dirname(model) / f"{position}.safetensors"
    if not path.exists():
        raise DataError(f"{path} is missing: run the vectors stage with {model!r} in `models`")
    return path


def n_layers_of(vectors_dir: Path, model: str, position: str) -> int:
    """How many layers the vectors stage saw for `model` (from its tensor keys)."""
    keys = read_tensors(vectors_file(vectors_dir, model, position))
    return len({Site.split_key(k)[0].layer for k in keys if Site.is_key(k)})


def residual_norm(norms: pd.DataFrame, model: str, position: str, site: Site) -> float:
    """Mean L2 norm of neutral residuals at `site` (the vectors stage's norms table): the `norm` unit of alpha."""
    row = norms[(norms["model"] == model) & (norms["position"] == position) & (norms["hook"] == site.hook) &
                (norms["layer"] == site.layer)]
    if row.empty:
        raise DataError(f"no residual norm for {model} ({position}) at {site} in the vectors stage's norms table")
    return float(row["mean_residual_l2"].iloc[0])


def load_directions(vectors_dir: Path, model: str, position: str, sites: Sequence[Site], method: str = "vector",
                    unit: str = "raw", norms: pd.DataFrame | None = None) -> dict[Site, EmotionDirections]:
    """{site: EmotionDirections} of `method` (a name in `METHODS`) from the vectors stage's outputs.

    unit `raw`: as the method gives them (vector: mean emotion - mean neutral; pca1/probe: at the vector's norm);
    `norm`: each rescaled to the mean neutral residual norm at its site (`norms` = the stage's norms table, read
    from `vectors_dir` when not given).
    """
    if unit not in UNITS:
        raise ParamsError(f"unknown direction unit {unit!r} (allowed: {', '.join(UNITS)})")
    how = METHODS[method]
    path = vectors_file(vectors_dir, model, position)
    tensors = read_tensors(path)
    if unit == "norm" and norms is None:
        norms = read_parquet(Path(vectors_dir) / "norms.parquet")
    out = {}
    for site in sites:
        try:
            vecs = how.read(tensors, site)
        except KeyError as err:
            raise DataError(f"no {err.args[0]} for {model} ({position}) in {path}: rerun the vectors stage "
                            f"(direction method {method!r} at {site})") from None
        if unit == "norm":
            vecs = at_norms(vecs, [residual_norm(norms, model, position, site)] * len(vecs))
        out[site] = EmotionDirections(model, site, position, method, vecs)
    return out
