"""The `effect_samples` table every effect-producing stage writes and the statistics stage reads: per (family,
effect) the per-unit values of the intervention (`group == "effect"`) and, where the stage ran one, of its matching
control (`group == "null"`: equal-norm random directions, random heads, random neurons). Schema, builders,
validation, and the dvc.yaml-declared files the statistics stage joins."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_circuits.errors import DataError


SAMPLE_COLUMNS = {"family": "str", "effect": "str", "emotion": "str", "metric": "str", "group": "str", "unit": "int",
                  "value": "float"}


GROUPS = ("effect", "null")
# Optional typed labels of an effect (the same on all its rows), carried into the effects table: where it acted
# (layer, hook site name) and at which alpha. Stages write them; nothing parses them back out of the effect id.
LABEL_COLUMNS = {"layer": "int", "hook": "str", "alpha": "float"}


def validate_samples(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check the effect_samples schema; one clear DataError naming the file otherwise."""
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (see the effect_samples schema)")
    bad = sorted(set(df["group"].astype(str)) - set(GROUPS))
    if bad:
        raise DataError(f"{source}: column group must be 'effect' or 'null', found {', '.join(bad)}")
    out = df[list(SAMPLE_COLUMNS) + [c for c in LABEL_COLUMNS if c in df.columns]].copy()
    for col in ("family", "effect", "emotion", "metric", "group"):
        out[col] = out[col].astype(str)
    out["unit"] = pd.to_numeric(out["unit"], errors="raise").astype(np.int64)
    out["value"] = pd.to_numeric(out["value"], errors="raise").astype(float)
    if not np.all(np.isfinite(out["value"].to_numpy())):
        raise DataError(f"{source}: non-finite values in column value")
    no_effect = set(out.groupby(["family", "effect"]).groups) - set(
        out[out["group"] == "effect"].groupby(["family", "effect"]).groups)
    if no_effect:
        raise DataError(f"{source}: effect(s) with only null rows: {sorted(no_effect)[:3]}")
    return out


def sample_rows(family: str, effect, emotion, metric: str, group: str, units, values) -> pd.DataFrame:
    """effect_samples rows (columns in `SAMPLE_COLUMNS` order); `effect`/`emotion` a value or one per row."""
    return pd.DataFrame({"family": family, "effect": effect, "emotion": emotion, "metric": metric, "group": group,
                         "unit": np.asarray(units, dtype=np.int64), "value": np.asarray(values, dtype=float)})


def effect_and_set_null(family: str, effect: str, emotion: str, metric: str, effect_rows: pd.DataFrame,
                        null_rows: pd.DataFrame) -> list[pd.DataFrame]:
    """An intervention's per-unit values and its matching null: per unit, the mean over the random control
    sets (random heads, random neurons) run on that unit."""
    null = null_rows.groupby("unit", sort=True)[metric].mean()
    return [sample_rows(family, effect, emotion, metric, "effect", effect_rows["unit"], effect_rows[metric]),
            sample_rows(family, effect, emotion, metric, "null", null.index, null)]


def declared_effect_samples(dvc_yaml: Path, stage: str = "statistics") -> list[Path]:
    """The `effect_samples.parquet` files among `stage`'s deps in dvc.yaml (a dep may be the file or the stage
    folder holding it): a new effect-producing stage joins the statistics by one deps line, and nothing the
    pipeline does not declare is read."""
    import yaml

    if not Path(dvc_yaml).exists():
        return []
    spec = (yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage) or {}
    found = []
    for dep in spec.get("deps", []) or []:
        path = Path(str(dep))
        if path.name == "effect_samples.parquet":
            found.append(path)
        elif path.suffix == "" and (path / "effect_samples.parquet").exists():
            found.append(path / "effect_samples.parquet")
    return sorted(set(found))


def load_effect_samples(paths: Sequence[Path]) -> pd.DataFrame:
    """Read and validate effect_samples files. Rows whose value is not finite (an undefined metric on some unit)
    are dropped with a warning; their count per file is in `dropped_non_finite` of the returned frame's attrs."""
    import logging

    parts, dropped = [], {}
    for path in paths:
        if not Path(path).exists():
            raise DataError(f"{path}: declared in dvc.yaml but missing: run its stage first")
        df = pd.read_parquet(path)
        if "value" in df:
            values = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(values)
            if bad.any():
                logging.getLogger(__name__).warning("%s: dropping %d non-finite values", path, int(bad.sum()))
                dropped[str(path)] = int(bad.sum())
                df = df[~bad]
        parts.append(validate_samples(df, str(path)))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    out.attrs["dropped_non_finite"] = dropped
    return out


def combine_samples(sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate effect_samples from several sources; the same (family, effect) in two sources is an error."""
    seen: dict[tuple[str, str], str] = {}
    for name, df in sources.items():
        for key in df[["family", "effect"]].drop_duplicates().itertuples(index=False, name=None):
            if key in seen:
                raise DataError(f"effect {key[0]}/{key[1]} comes from both {seen[key]} and {name}")
            seen[key] = name
    frames = [validate_samples(df, name) for name, df in sources.items() if len(df)]
    if not frames:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["family", "effect", "group", "unit", "value"], kind="mergesort").reset_index(drop=True)
