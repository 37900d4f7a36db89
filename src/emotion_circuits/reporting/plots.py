"""Static PNG figures (matplotlib, Agg) that stages log as dvclive images (see `reporting.live`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Fixed metadata so identical data gives byte-identical PNGs.
_META = {"Software": None}


def save_figure(fig, path: Path) -> None:
    """Tight layout, fixed dpi and metadata (byte-identical PNGs), and the figure closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)


def panels(n: int, width: float = 5, height: float = 3.6):
    """A figure with one row of n panels: (fig, list of axes)."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def label(ax, xlabel: str, ylabel: str, title: str, fontsize: int = 9, hline: float | None = None,
          legend: bool = True) -> None:
    """Axis labels, title, an optional dashed reference line, and the legend: the same on every panel."""
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=fontsize)
    if legend:
        ax.legend(fontsize=7)


def lines(df: pd.DataFrame, x: str, y: str, hue: str, path: Path, title: str, ylabel: str | None = None,
          band: tuple[str, str] | None = None, facet: str | None = None, hline: float | None = None) -> None:
    """One line per `hue` value, optional shaded null band (lower, upper columns), one panel per `facet`."""
    facets = sorted(df[facet].unique()) if facet else [None]
    fig, axes = panels(len(facets))
    for ax, value in zip(axes, facets):
        part = df if value is None else df[df[facet] == value]
        for key, group in part.groupby(hue, sort=True):
            group = group.sort_values(x)
            (line,) = ax.plot(group[x], group[y], marker="o", ms=3, label=str(key))
            if band:
                ax.fill_between(group[x], group[band[0]], group[band[1]], color=line.get_color(), alpha=0.15)
        label(ax, x, ylabel or y, f"{title}" + (f" — {value}" if value is not None else ""), hline=hline)
    save_figure(fig, path)


def robust_limit(values: np.ndarray, percentile: float = 98.0) -> float:
    """Half-range of a diverging colour scale: the `percentile`-th percentile of |finite values| (never 0), so one
    extreme cell (e.g. head L1H5) saturates instead of flattening every other cell to the centre colour."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 1.0
    limit = float(np.percentile(finite, percentile))
    return limit if limit > 0 else (float(finite.max()) or 1.0)


def colour_extend(values: np.ndarray, low: float, high: float) -> str:
    """The colorbar `extend` that marks values clipped below `low` and/or above `high`."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    below, above = bool((finite < low).any()), bool((finite > high).any())
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(below, above)]


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: Path, title: str,
            xlabel: str = "", ylabel: str = "", vmin: float | None = None, vmax: float | None = None) -> None:
    """Signed data on a diverging scale centred at 0 (half-range `robust_limit` unless vmin/vmax fix it, clipped
    cells marked by the colorbar's arrows); data with vmin >= 0 (e.g. CKA) on a sequential scale."""
    from matplotlib.colors import CenteredNorm, Normalize

    fig, ax = plt.subplots(figsize=(max(3.5, 0.35 * len(cols) + 2), max(3.0, 0.3 * len(rows) + 1.5)))
    if vmin is not None and vmin >= 0:
        norm, cmap, text = Normalize(vmin, vmax), "viridis", "w"
    else:
        half = max(abs(vmin), abs(vmax or 0)) if vmin is not None else robust_limit(matrix)
        norm, cmap, text = CenteredNorm(0.0, half), "RdBu_r", "k"
    im = ax.imshow(matrix, aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=90)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if matrix.size <= 36:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=text)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    low, high = norm.vmin, norm.vmax
    fig.colorbar(im, ax=ax, extend=colour_extend(matrix, low, high))
    save_figure(fig, path)
