"""The k-selection of the alignment k-sweep: at each subspace dimension k, the overlap against the strictest null
band; k is supported where it exceeds the band and selected where the excess peaks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emotion_circuits.stats.multiple import bh_adjust


NULL_BANDS = ("vs_random_subspace", "vs_permuted_labels")


def select_k(scores: pd.DataFrame, variant: str) -> pd.DataFrame:
    """k-selection of the alignment k-sweep, per ordered model pair and layer pair of `variant`.

    The null band at each k is the strictest 95% quantile of the random-subspace and permuted-label nulls (both
    grow with k: a k-dimensional random subspace already overlaps ~k/d). excess(k) = overlap(k) - band(k); k is
    supported when excess > 0, and the selected k is the elbow where the excess peaks (adding dimensions beyond it
    buys less overlap than the null gains). No supported k -> selected k is -1.
    """
    rows = []
    part = scores[scores["variant"] == variant]
    for (a, b, la, lb), g in part.groupby(["a", "b", "layer_a", "layer_b"], sort=True):
        g = g.sort_values("k")
        band = np.max(np.stack([g[f"{n}.null_q95"].to_numpy(dtype=float) for n in NULL_BANDS]), axis=0)
        overlap = g["overlap_after"].to_numpy(dtype=float)
        excess = overlap - band
        supported = excess > 0
        best = int(g["k"].to_numpy()[int(np.argmax(np.where(supported, excess, -np.inf)))]) if supported.any() else -1
        for i, (k, r) in enumerate(zip(g["k"].to_numpy(), g.itertuples(index=False))):
            rows.append({"a": a, "b": b, "self_pair": a == b, "layer_a": int(la), "layer_b": int(lb),
                         "variant": variant, "k": int(k), "overlap_after": overlap[i], "null_band_q95": band[i],
                         "random_null_q95": float(g[f"{NULL_BANDS[0]}.null_q95"].iloc[i]),
                         "perm_null_q95": float(g[f"{NULL_BANDS[1]}.null_q95"].iloc[i]),
                         "p_random": float(g[f"{NULL_BANDS[0]}.p"].iloc[i]),
                         "p_perm": float(g[f"{NULL_BANDS[1]}.p"].iloc[i]),
                         "excess": excess[i], "supported": bool(supported[i]), "k_selected": best})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # BH over the cross-model tests (self pairs are sanity checks, not hypotheses); the permuted-label null is
    # the emotion-specific one.
    table["p_perm_adj"] = np.nan
    cross = table.index[~table["self_pair"]]
    if len(cross):
        table.loc[cross, "p_perm_adj"] = bh_adjust(table.loc[cross, "p_perm"].to_numpy(), 0.05)[1]
    return table


def summarise_k(table: pd.DataFrame) -> dict:
    """Per ordered pair: the k selected most often over layer pairs (ties: smallest k), how many layer pairs
    support each k, and the largest excess over the null band."""
    out = {}
    for (a, b), g in table.groupby(["a", "b"], sort=True):
        per_layer = g.drop_duplicates(["layer_a", "layer_b"])
        picks = per_layer["k_selected"].to_numpy()
        chosen = picks[picks > 0]
        if len(chosen):
            values, counts = np.unique(chosen, return_counts=True)
            k_sel = int(values[np.argmax(counts)])
            n_sel = int(counts.max())
        else:
            k_sel, n_sel = -1, 0
        by_k = {f"k={int(k)}": {"n_layer_pairs_supported": int(kg["supported"].sum()),
                                "mean_overlap_after": float(kg["overlap_after"].mean()),
                                "mean_null_band_q95": float(kg["null_band_q95"].mean()),
                                "mean_excess": float(kg["excess"].mean())}
                for k, kg in g.groupby("k", sort=True)}
        top = g.loc[g["excess"].idxmax()]
        out[f"{a}->{b}"] = {"a": a, "b": b, "self_pair": bool(a == b), "k_selected": k_sel, "n_layer_pairs": int(len(per_layer)),
                            "n_layer_pairs_selecting": n_sel, "by_k": by_k,
                            "max_excess": float(top["excess"]), "max_excess_k": int(top["k"]),
                            "max_excess_layers": f"L{int(top['layer_a'])}->L{int(top['layer_b'])}"}
    return out
