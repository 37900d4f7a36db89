"""The alignment stage's tables and figures: scores.parquet (one row per pair, layer pair, variant and k), the
k-sweep and by-layer CSVs with a column per registered null, CKA grids and their PNGs."""

from __future__ import annotations

from typing import Any

import numpy as np

from emotion_circuits.alignment.nulls import NULLS
from emotion_circuits.alignment.pairs import pair_name


def score_table(results: list[dict[str, Any]]):
    """One row per (pair, layer pair, variant, k); nested null summaries become dotted columns."""
    import pandas as pd

    rows = []
    for res in results:
        base = {k: v for k, v in res.items() if k != "k"}
        base["cca_top5"] = ",".join(f"{c:.4f}" for c in base["cca_top5"])
        base["dropped_dims_a"] = ",".join(map(str, base["dropped_dims_a"]))
        base["dropped_dims_b"] = ",".join(map(str, base["dropped_dims_b"]))
        for k, entry in res["k"].items():
            rows.append({**base, "k": k, **entry})
    return pd.json_normalize(rows, sep=".")


def _middle(group):
    pairs = sorted(set(zip(group["layer_a"], group["layer_b"])))
    return pairs[len(pairs) // 2]


SCORE_COLUMNS = ("cka", "cka_null_q95", "rsa", "rsa_null_q95", "emotion_geometry", "emotion_geometry_null_q95")


def by_layer_columns() -> tuple[str, ...]:
    """The by-layer CSV's columns: position, the overlap, one column per registered null, the width-free scores."""
    return ("layer_pair", "layer_a", "layer_b", "k", "overlap_after", "overlap_before",
            *(null.by_layer for _, null in NULLS.items()), *SCORE_COLUMNS)


def by_layer_series() -> dict[str, str]:
    """The by-layer PNG's series (the CSV holds them all): column -> legend."""
    return {"overlap_after": "after map", "overlap_before": "before map (equal widths)",
            **{n.by_layer: f"{n.label} q95" if n.drawn else n.label for _, n in NULLS.items() if n.plotted}}


def by_layer_table(group):
    """The alignment-by-layer plot data of one ordered model pair at one k: `by_layer_columns()`, one row per
    layer pair in depth order; a score that does not apply (overlap before the map across widths, no
    random-init model) is left empty."""
    import pandas as pd

    g = group.sort_values(["layer_a", "layer_b"]).reset_index(drop=True)
    source = {n.by_layer: n.source() for _, n in NULLS.items()}
    source.update({c: c.replace("_null_q95", ".null_q95") if c.endswith("_null_q95") else f"{c}.raw"
                   for c in SCORE_COLUMNS})
    frame = pd.DataFrame({"layer_pair": range(len(g))})
    for col in by_layer_columns()[1:]:
        name = source.get(col, col)
        frame[col] = g[name].to_numpy() if name in g else np.nan
    return frame


def ksweep_series() -> list[str]:
    """The k-sweep plot's y columns: the overlap and each plotted null (q95 of drawn ones, baselines' values)."""
    return ["overlap_after", *(n.source("null_q95").replace(".", "_") if n.drawn else n.key
                               for _, n in NULLS.items() if n.plotted)]


def sweep_frames(csv, title: str) -> list:
    """The k-sweep PNG's series of one pair: the overlap, each plotted null (drawn: a mean..q95 band)."""
    def series(name: str, lo: str, hi: str, y: str):
        return csv.assign(series=name, pair=title, lo=csv[lo], hi=csv[hi], y=csv[y])

    out = [series("overlap after map", "overlap_after", "overlap_after", "overlap_after")]
    for _, n in NULLS.items():
        if n.plotted and n.drawn:
            mean, q95 = (n.source(f).replace(".", "_") for f in ("null_mean", "null_q95"))
            out.append(series(f"{n.label} (mean..q95)", mean, q95, mean))
        elif n.plotted and n.key in csv:
            out.append(series(n.label, n.key, n.key, n.key))
    return out


def write_ksweeps(primary, p, live) -> None:
    """Per ordered pair, the k-sweep at its middle layer pair: CSV (overlap, every null) and the PNG."""
    import pandas as pd

    from emotion_circuits.reporting import plots

    cols = ["k", "overlap_after"]
    for _, n in NULLS.items():
        cols += [n.source("null_mean"), n.source("null_q95")] if n.drawn else [n.key]
    sweeps = []
    for (a, b), group in primary.groupby(["a", "b"], sort=True):
        la, lb = _middle(group)
        g = group[(group["layer_a"] == la) & (group["layer_b"] == lb)].sort_values("k")
        csv = g[[c for c in cols if c in g]].rename(columns=lambda c: c.replace(".", "_"))
        live.log_table(f"ksweep_{a}__{b}", csv, "k", [c for c in ksweep_series() if c in csv],
                       y_label="overlap (mean cos^2) and its nulls")
        sweeps += sweep_frames(csv, f"{pair_name(a, b)} L{la}->L{lb}")
    plots.lines(pd.concat(sweeps), "k", "y", "series", live.figures / "ksweep.png",
                f"k-sweep ({p.primary_variant})", ylabel="overlap (mean cos^2)", band=("lo", "hi"), facet="pair")


def write_cka_grids(grids, out, png_dir) -> None:
    import pandas as pd

    from emotion_circuits.reporting import plots

    for (a, b), grid in grids.items():
        frame = pd.DataFrame(grid, columns=[f"L{j}" for j in range(grid.shape[1])])
        frame.insert(0, "layer", range(grid.shape[0]))
        frame.to_csv(out / f"cka_grid_{a}__{b}.csv", index=False, float_format="%.6g")
        plots.heatmap(grid, [f"{a} L{i}" for i in range(grid.shape[0])],
                      [f"{b} L{j}" for j in range(grid.shape[1])], png_dir / f"cka_grid_{a}__{b}.png",
                      f"linear CKA (z-scored) {a} x {b}", vmin=0, vmax=1)


def write_by_layer(primary, p, live) -> None:
    """Per ordered pair at k_report: the by-layer CSV and the faceted PNG."""
    import pandas as pd

    from emotion_circuits.reporting import plots

    layer_frames = []
    for (a, b), group in primary[primary["k"] == p.k_report].groupby(["a", "b"], sort=True):
        csv = by_layer_table(group)
        live.log_table(f"by_layer/{a}__{b}", csv, "layer_pair", [c for c in by_layer_series() if c in csv],
                       y_label="overlap at k_report by layer pair (0 = first, in depth order) and each null's q95")
        for col, series in by_layer_series().items():
            layer_frames.append(pd.DataFrame({"layer_pair": csv["layer_pair"], "y": csv[col], "series": series,
                                              "pair": pair_name(a, b)}))
    plots.lines(pd.concat(layer_frames).dropna(subset=["y"]), "layer_pair", "y", "series",
                live.figures / "alignment_by_layer.png", f"overlap by layer pair ({p.primary_variant}, k={p.k_report})",
                ylabel="overlap (mean cos^2)", facet="pair")


def write_outputs(results, grids, massive, p, out, live) -> None:
    """scores.parquet, k-sweep plot tables (dvc plots) and PNGs with null bands, layer x layer CKA heatmaps; plots
    and PNGs through the stage's `reporting.live.StageLive`."""
    from pathlib import Path

    import pandas as pd

    from emotion_circuits.reporting import plots
    from emotion_circuits.store.io import write_parquet

    out, png_dir = Path(out), live.figures
    table = score_table(results)
    write_parquet(out / "scores.parquet", table)
    primary = table[table["variant"] == p.primary_variant]
    write_ksweeps(primary, p, live)
    write_cka_grids(grids, out, png_dir)
    write_by_layer(primary, p, live)
    maxshare = pd.DataFrame([{"model": m, "layer": int(k[1:]), "max_share": v} for m, r in massive.items()
                             for k, v in r["max_share_by_layer"].items()])
    plots.lines(maxshare, "layer", "max_share", "model", png_dir / "massive_dimension_share.png",
                "largest single-dimension variance share", hline=p.massive_share)
