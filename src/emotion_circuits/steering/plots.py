"""Figures of the steering sweep and the confirmatory test (PNG under `live.figures`, plot tables through
`live.log_table` of a `reporting.live.StageLive`).

Why these figures: a cell is only worth reading where it beats equal-norm random directions (the seeds' "random
band as mask", hatched in the heatmaps), and only at a fluency cost we accept (the NLL budget line and the Pareto
frontier, beside the peer systems' points). The confirmation figures show the dose-response, each random
direction against the emotion run, and the real-world texts before and after steering.
Figures whose data are missing (no multi-layer setting, no real-world texts, an empty frame) are not written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS
from emotion_circuits.reporting import plots as P
from emotion_circuits.steering.selection import PICKS

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
PEER_MARKERS = ("x", "+", "1", "d", "4", "|", "_", "3")
HATCH = "////"


def _ordered(values, known: Sequence[str]) -> list[str]:
    """`known` order first (emotions, picks), anything else after it, sorted: fixed panel order."""
    present = {str(v) for v in values}
    return [k for k in known if k in present] + sorted(present - set(known))


def within_random_band(summary: pd.DataFrame, primary: str) -> pd.Series:
    """True where the cell ran random controls and its effect on the random directions' prompts is no larger
    than the random directions' 95th percentile (indistinguishable from random: masked); False elsewhere,
    including cells without a random band (nothing known, nothing masked)."""
    effect, q95 = f"{primary}_effect_on_random_prompts", f"{primary}_random_q95"
    if effect not in summary or q95 not in summary:
        return pd.Series(False, index=summary.index, dtype=bool)
    e, q = summary[effect].astype(float), summary[q95].astype(float)
    return (e.notna() & q.notna() & (e <= q)).astype(bool)


def pareto(points: pd.DataFrame, x: str = "nll_delta", y: str = "effect") -> pd.DataFrame:
    """The frontier of `points`: the rows no other row beats (higher `y` at the same or lower `x`), sorted by `x`;
    the best `y` at or below any NLL is the `y` of the last frontier row at or left of it. NaN rows dropped."""
    p = points.dropna(subset=[x, y])
    p = p.iloc[np.lexsort((-p[y].to_numpy(float), p[x].to_numpy(float)))]  # x up, ties: best y first
    best, keep = -np.inf, []
    for value in p[y].to_numpy(float):
        keep.append(value > best)
        best = max(best, value)
    return p.iloc[np.flatnonzero(keep)]


def write_sweep_plots(summary: pd.DataFrame, live, primary: str, peers: list[dict] | None,
                      nll_budget: float) -> None:
    """Heatmaps per multi-layer setting (random band hatched), the effect-NLL frontier with the peers, effect vs
    alpha with the random bands, and one plot table per emotion, setting and layer."""
    if summary.empty or f"{primary}_effect" not in summary:
        return
    summary = summary.sort_values(["emotion", "setting", "layer", "alpha"], kind="mergesort")
    emotions = _ordered(summary["emotion"].unique(), EMOTIONS)
    for setting in sorted(summary["setting"].unique()):
        part = summary[summary["setting"] == setting]
        if part["layer"].nunique() > 1:
            _heatmap(part, emotions, setting, primary, live)
    _frontier(summary, emotions, primary, peers or [], nll_budget, live)
    _effect_vs_alpha(summary, emotions, primary, live)
    col = f"{primary}_effect"
    for (emotion, setting, layer), g in summary.groupby(["emotion", "setting", "layer"], sort=True):
        frame = g[["alpha", col, "nll_delta"]].rename(columns={col: "effect"}).reset_index(drop=True)
        live.log_table(f"{emotion}_{setting}_L{layer}", frame, "alpha", ["effect", "nll_delta"],
                       y_label=f"effect on {primary}_{emotion} vs unsteered; NLL increase (nats/token)")


def _heatmap(part: pd.DataFrame, emotions: list[str], setting: str, primary: str, live) -> None:
    """One panel per emotion: layer x alpha of the primary effect, cells inside the random band hatched."""
    from matplotlib.colors import CenteredNorm
    from matplotlib.patches import Rectangle

    col = f"{primary}_effect"
    part = part.assign(_masked=within_random_band(part, primary).astype(int))
    layers, alphas = sorted(part["layer"].unique()), sorted(part["alpha"].unique())
    half = P.robust_limit(part[col].to_numpy(float))
    fig, axes = P.panels(len(emotions), width=max(3.5, 0.55 * len(alphas) + 2.0),
                         height=max(3.0, 0.35 * len(layers) + 1.8))
    for ax, emotion in zip(axes, emotions):
        g = part[part["emotion"] == emotion]
        grid = g.pivot_table(index="layer", columns="alpha", values=col, aggfunc="mean")
        grid = grid.reindex(index=layers, columns=alphas)
        mask = g.pivot_table(index="layer", columns="alpha", values="_masked", aggfunc="max")
        mask = mask.reindex(index=layers, columns=alphas).fillna(0) > 0
        matrix = grid.to_numpy(float)
        im = ax.imshow(matrix, aspect="auto", cmap="RdBu_r", norm=CenteredNorm(0.0, half))
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
            if mask.iat[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch=HATCH, lw=0, color="0.3"))
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas], fontsize=7)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
        P.label(ax, "alpha", "layer", f"{setting} — {emotion}: {col}\nhatched: within random 95% (not above random)",
                fontsize=8, legend=False)
        fig.colorbar(im, ax=ax, extend=P.colour_extend(matrix, -half, half))
    P.save_figure(fig, live.figures / f"heatmap_{setting}.png")


def _peer_points(peers: list[dict], emotion: str) -> list[tuple[str, pd.DataFrame, bool]]:
    """Per peer system (sorted) its points for `emotion`: y = rate - baseline_rate where the baseline is given
    (comparable with the project's effect), else the raw rate; and whether every point had a baseline."""
    rows = []
    for p in peers:
        if p.get("emotion") != emotion or p.get("nll_delta") is None or p.get("rate") is None:
            continue
        base = p.get("baseline_rate")
        rows.append({"system": str(p.get("system", "peer")), "x": float(p["nll_delta"]),
                     "y": float(p["rate"]) - (float(base) if base is not None else 0.0), "has_base": base is not None})
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    return [(system, g, bool(g["has_base"].all())) for system, g in frame.groupby("system", sort=True)]


def _frontier(summary: pd.DataFrame, emotions: list[str], primary: str, peers: list[dict], nll_budget: float,
              live) -> None:
    """Per emotion: every cell's effect against its NLL increase, one marker per setting, the Pareto frontier,
    the NLL budget and the peer systems' points."""
    col = f"{primary}_effect"
    settings = sorted(summary["setting"].unique())
    fig, axes = P.panels(len(emotions), width=5.5, height=4.2)
    for ax, emotion in zip(axes, emotions):
        g = summary[summary["emotion"] == emotion]
        for k, setting in enumerate(settings):
            s = g[g["setting"] == setting]
            if len(s):
                ax.scatter(s["nll_delta"], s[col], s=16, marker=MARKERS[k % len(MARKERS)], color=f"C{k % 10}",
                           alpha=0.8, label=setting)
        front = pareto(g.rename(columns={col: "effect"})[["nll_delta", "effect"]])
        if len(front):
            ax.step(front["nll_delta"], front["effect"], where="post", color="C3", lw=1.2, label="Pareto frontier")
        for k, (system, pts, has_base) in enumerate(_peer_points(peers, emotion)):
            what = "rate - baseline" if has_base else "rate"
            ax.scatter(pts["x"], pts["y"], s=40, marker=PEER_MARKERS[k % len(PEER_MARKERS)], color="k",
                       label=f"{system} ({what})")
        ax.axvline(nll_budget, color="grey", ls="--", lw=0.9, label=f"NLL budget {nll_budget:g}")
        P.label(ax, "NLL increase (nats/token, unsteered model)", f"effect on {primary}_{emotion}",
                f"{emotion}: effect vs fluency", hline=0)
    P.save_figure(fig, live.figures / "frontier.png")


def _effect_vs_alpha(summary: pd.DataFrame, emotions: list[str], primary: str, live) -> None:
    """Per emotion: effect against alpha, one line per setting and layer, with the random 5-95% bars."""
    col, q05, q95 = f"{primary}_effect", f"{primary}_random_q05", f"{primary}_random_q95"
    alphas = summary["alpha"].to_numpy(float)
    step = 0.01 * (np.ptp(alphas) or max(abs(float(alphas.max())), 1.0))
    fig, axes = P.panels(len(emotions))
    for ax, emotion in zip(axes, emotions):
        g = summary[summary["emotion"] == emotion]
        for k, ((setting, layer), lg) in enumerate(g.groupby(["setting", "layer"], sort=True)):
            (line,) = ax.plot(lg["alpha"], lg[col], marker="o", ms=3, label=f"{setting} L{layer}")
            if q05 in lg and q95 in lg:
                r = lg.dropna(subset=[q05, q95])
                if len(r):
                    ax.vlines(r["alpha"] + step * k, r[q05], r[q95], color=line.get_color(), alpha=0.5, lw=4)
        P.label(ax, "alpha", "effect vs unsteered", f"{emotion}: effect on {primary}_{emotion} (bars: random 5-95%)",
                hline=0)
    P.save_figure(fig, live.figures / "effect_vs_alpha.png")


def _frame(res: Mapping, key: str) -> pd.DataFrame:
    value = res.get(key)
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame()


def write_confirm_plots(res: Mapping, live, primary: str) -> None:
    """Dose-response, random directions vs the emotion run and the real-world texts before/after, from
    `steering.confirm.analyse`; plus one plot table per emotion and pick of the dose-response."""
    dose = _frame(res, "dose")
    if len(dose):
        dose = dose[dose["family"] == primary].sort_values(["emotion", "pick", "alpha"], kind="mergesort")
    if len(dose):
        _dose_response(dose, live, primary)
    _random_vs_emotion(res, live, primary)
    _real_world(res, live, primary)


def _dose_response(dose: pd.DataFrame, live, primary: str) -> None:
    emotions = _ordered(dose["emotion"].unique(), EMOTIONS)
    fig, axes = P.panels(len(emotions))
    for ax, emotion in zip(axes, emotions):
        g = dose[dose["emotion"] == emotion]
        for k, pick in enumerate(_ordered(g["pick"].unique(), PICKS)):
            d = g[g["pick"] == pick]
            ax.errorbar(d["alpha"], d["effect"], yerr=1.96 * d["sem"].fillna(0.0), marker="o", ms=3, capsize=2,
                        color=f"C{k % 10}", label=f"{pick} ({d['metric'].iloc[0]})")
            live.log_table(f"dose_{emotion}_{pick}", d[["alpha", "effect"]].reset_index(drop=True), "alpha",
                           "effect", y_label=f"mean effect on {d['metric'].iloc[0]} vs unsteered")
        P.label(ax, "alpha", "effect vs unsteered (±1.96 sem)", f"{emotion}: dose-response ({primary})", hline=0)
    P.save_figure(fig, live.figures / "dose_response.png")


def _metric_of(res: Mapping, emotion: str, pick: str, primary: str) -> str | None:
    """The emotion's primary metric column: from the verdict, else the dose rows, else the catalog."""
    verdict = (res.get("verdicts") or {}).get(emotion, {}).get(pick)
    if verdict and verdict.get("metric"):
        return verdict["metric"]
    dose = _frame(res, "dose")
    if len(dose):
        d = dose[(dose["emotion"] == emotion) & (dose["family"] == primary)]
        if len(d):
            return str(d["metric"].iloc[0])
    from emotion_circuits.evaluation.catalog import own_metric

    return own_metric(emotion, primary)


def _random_vs_emotion(res: Mapping, live, primary: str) -> None:
    """Per emotion and pick: each random direction's mean effect over its neutral prompts (dots) against the
    emotion run's mean effect (red bar)."""
    table = _frame(res, "table")
    need = {"kind", "prompt_set", "emotion", "pick", "random_id"}
    if table.empty or not need <= set(table.columns):
        return
    neutral = table[(table["prompt_set"] == "neutral") & table["kind"].isin(["emotion", "random"])]
    emotions = _ordered(neutral["emotion"].unique(), EMOTIONS)
    if not emotions:
        return
    fig, axes = P.panels(len(emotions))
    for ax, emotion in zip(axes, emotions):
        g = neutral[neutral["emotion"] == emotion]
        picks = _ordered(g["pick"].unique(), PICKS)
        for k, pick in enumerate(picks):
            metric = _metric_of(res, emotion, pick, primary)
            col = f"effect_{metric}"
            gp = g[g["pick"] == pick]
            if metric is None or col not in gp:
                continue
            means = gp[gp["kind"] == "random"].groupby("random_id", sort=True)[col].mean().to_numpy(float)
            jitter = np.linspace(-0.15, 0.15, len(means)) if len(means) > 1 else np.zeros(len(means))
            ax.scatter(means, k + jitter, s=10, color="0.5", alpha=0.7,
                       label="random directions (mean each)" if k == 0 else None)
            emo = gp[gp["kind"] == "emotion"][col]
            if len(emo):
                ax.plot([emo.mean()] * 2, [k - 0.3, k + 0.3], color="C3", lw=2.5,
                        label="emotion direction" if k == 0 else None)
        ax.set_yticks(range(len(picks)), picks, fontsize=8)
        ax.set_ylim(-0.6, len(picks) - 0.4)
        P.label(ax, f"mean effect on {primary} metric (neutral prompts)", "pick",
                f"{emotion}: emotion vs equal-norm random directions", legend=True)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
    P.save_figure(fig, live.figures / "random_vs_emotion.png")


def _real_world(res: Mapping, live, primary: str) -> None:
    """Per emotion: every real-world text's score before -> after (thin grey), the means (bold), per pick, with
    the paired Wilcoxon p. A continuous family (`p`) where present: a 0/1 keyword metric hides the shifts."""
    real = _frame(res, "real_world")
    if real.empty:
        return
    family = "p" if "p" in set(real["family"]) else primary
    real = real[real["family"] == family]
    if real.empty:
        return
    tests = res.get("real_world_tests") or {}
    emotions = _ordered(real["emotion"].unique(), EMOTIONS)
    fig, axes = P.panels(len(emotions))
    for ax, emotion in zip(axes, emotions):
        g = real[real["emotion"] == emotion]
        picks = _ordered(g["pick"].unique(), PICKS)
        notes = []
        for k, pick in enumerate(picks):
            d = g[g["pick"] == pick].sort_values("prompt_id", kind="mergesort")
            x = [2 * k, 2 * k + 1]
            for b, a in zip(d["before"], d["after"]):
                ax.plot(x, [b, a], color="0.6", lw=0.5, alpha=0.6)
            ax.plot(x, [d["before"].mean(), d["after"].mean()], color=f"C{k % 10}", lw=2.5, marker="o",
                    label=f"{pick} mean")
            p = tests.get(emotion, {}).get(pick, {}).get(family, {}).get("p_wilcoxon")
            notes.append(f"{pick} p={p:.3g}" if p is not None else f"{pick} p=n/a")
        ticks = [t for k in range(len(picks)) for t in (2 * k, 2 * k + 1)]
        ax.set_xticks(ticks, [f"{pick}\n{w}" for pick in picks for w in ("before", "after")], fontsize=7)
        metric = g["metric"].iloc[0]
        P.label(ax, "", metric, f"{emotion}: real-world texts ({family}); Wilcoxon " + ", ".join(notes))
    P.save_figure(fig, live.figures / "real_world.png")
