"""The statistics stage's figures (for the report) and plot tables (for `dvc plots`), logged through dvclive."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emotion_circuits.stats.summary import emotions_in


def write_plots(effects: pd.DataFrame, ktable: pd.DataFrame, live, primary: str) -> None:
    """PNGs (for the report) and plot tables (for `dvc plots`), through the stage's `reporting.live.StageLive`:
    Cohen's d vs alpha with bootstrap CIs per emotion and layer
    (steering sweep, primary metric), the alignment k-selection (overlap minus null band), p-value histograms."""
    from emotion_circuits.reporting import plots as P

    png_dir = live.figures
    sweep = effects[(effects["family"] == "steering_sweep") & effects["metric"].str.startswith(f"{primary}_")]
    # effect ids read emotion/setting/site/alpha/metric: one series per setting and layer
    sweep = sweep.assign(setting=sweep["effect"].str.split("/").str[1])
    if len(sweep):
        emotions = emotions_in(sweep)
        fig, axes = P.panels(len(emotions))
        for ax, emotion in zip(axes, emotions):
            g = sweep[sweep["emotion"] == emotion]
            for i, ((setting, layer), lg) in enumerate(g.groupby(["setting", "layer"], sort=True)):
                lg = lg.sort_values("alpha")
                live.log_table(f"steering_d/{emotion}_{setting}_L{int(layer):02d}",
                               lg[["alpha", "d", "d_ci_low", "d_ci_high"]],
                               "alpha", ["d", "d_ci_low", "d_ci_high"],
                               y_label="Cohen's d with bootstrap CI (steering sweep)")
                x = lg["alpha"].to_numpy() + 0.04 * (i - 1)
                err = np.vstack([lg["d"] - lg["d_ci_low"], lg["d_ci_high"] - lg["d"]]).clip(min=0)
                ax.errorbar(x, lg["d"], yerr=np.nan_to_num(err), marker="o", ms=3, capsize=2,
                            label=f"{setting} L{layer}")
                sig = lg[lg["significant"]]
                ax.scatter(sig["alpha"] + 0.04 * (i - 1), sig["d"], marker="*", s=60, color="k", zorder=3)
            P.label(ax, "alpha", "Cohen's d",
                    f"{emotion}: {primary}_{emotion}; d vs random dirs (alpha with controls) else vs 0; * = BH",
                    fontsize=8, hline=0)
        P.save_figure(fig, png_dir / "steering_sweep_d.png")
    cross = ktable[~ktable["self_pair"]] if len(ktable) else ktable
    if len(cross):
        pairs = sorted(set(zip(cross["a"], cross["b"])))
        fig, axes = P.panels(len(pairs))
        for ax, (a, b) in zip(axes, pairs):
            g = cross[(cross["a"] == a) & (cross["b"] == b)]
            mean = g.groupby("k", sort=True)[["overlap_after", "null_band_q95", "excess"]].mean().reset_index()
            live.log_table(f"k_selection/{a}__{b}", mean, "k", ["overlap_after", "null_band_q95"],
                           y_label="overlap after the map vs the null band q95 (k-selection)")
            for (la, lb), lg in g.groupby(["layer_a", "layer_b"], sort=True):
                ax.plot(lg["k"], lg["excess"], marker="o", ms=3, label=f"L{la}->L{lb}")
            P.label(ax, "k (subspace dimension)", "overlap - null band q95", f"{a}->{b}: k supported where > 0",
                    hline=0)
        P.save_figure(fig, png_dir / "k_selection.png")
    if len(effects):
        fams = sorted(set(effects["family"]))
        fig, axes = P.panels(len(fams), 4, 3.2)
        for ax, fam in zip(axes, fams):
            ax.hist(effects.loc[effects["family"] == fam, "p"].dropna(), bins=np.linspace(0, 1, 21), color="C0")
            P.label(ax, "permutation p (unadjusted)", "effects", f"{fam}: p-values (flat = no effects)", legend=False)
        P.save_figure(fig, png_dir / "pvalues.png")
