"""Choosing what to confirm: per emotion, the best sweep cell within the fluency budget, on the selection split.

Two picks per emotion go on to the confirmation split (`steering.confirm`): `seeds` (the best cell of the seeds'
setting) and `frontier` (the best cell of any setting). "Best" is the largest mean effect on the primary
metric among cells whose NLL rise and degenerate-share rise stay within `steering.nll_budget` /
`steering.degenerate_budget`; ties go to the more fluent cell. Where no cell of a pool is within budget the
pool's most fluent cell is confirmed instead and flagged (`within_budget: false`), so the verdict still says
what steering costs there. The effect measured here is biased upward by the choice (the winner's curse): only
the confirmation split's effect is reported as the result.
"""

from __future__ import annotations

import pandas as pd

from emotion_circuits.steering.settings import SEEDS

PICKS = ("seeds", "frontier")


def within_budget(summary: pd.DataFrame, nll_budget: float, degenerate_budget: float) -> pd.Series:
    """Cells whose fluency cost is within both budgets (a missing degenerate column counts as within)."""
    ok = summary["nll_delta"] <= nll_budget
    if "degenerate_delta" in summary:
        ok &= summary["degenerate_delta"].fillna(0.0) <= degenerate_budget
    return ok


def best_cell(pool: pd.DataFrame, primary: str, nll_budget: float, degenerate_budget: float) -> dict | None:
    """The pool's best cell within budget (or its most fluent cell, flagged), as a plain dict."""
    if pool.empty:
        return None
    ok = within_budget(pool, nll_budget, degenerate_budget)
    col = f"{primary}_effect"
    if ok.any():
        chosen = pool[ok].sort_values([col, "nll_delta", "setting", "layer", "alpha"],
                                      ascending=[False, True, True, True, True]).iloc[0]
    else:
        chosen = pool.sort_values(["nll_delta", col, "setting", "layer", "alpha"],
                                  ascending=[True, False, True, True, True]).iloc[0]
    return {"setting": str(chosen["setting"]), "layer": int(chosen["layer"]), "alpha": float(chosen["alpha"]),
            "selection_effect": float(chosen[col]), "selection_nll_delta": float(chosen["nll_delta"]),
            "selection_degenerate_delta": float(chosen.get("degenerate_delta", 0.0)),
            "within_budget": bool(ok.any()), "n_cells": int(len(pool)), "n_within_budget": int(ok.sum())}


def pick(summary: pd.DataFrame, primary: str, nll_budget: float, degenerate_budget: float,
         seeds: str = SEEDS) -> dict[str, dict[str, dict]]:
    """{emotion: {"seeds": cell, "frontier": cell}} over positive alphas (dose-response tests the negatives);
    `seeds` is absent where no setting of that name ran."""
    out: dict[str, dict[str, dict]] = {}
    positive = summary[summary["alpha"] > 0]
    for emotion, g in positive.groupby("emotion", sort=True):
        picks = {"seeds": best_cell(g[g["setting"] == seeds], primary, nll_budget, degenerate_budget),
                 "frontier": best_cell(g, primary, nll_budget, degenerate_budget)}
        out[str(emotion)] = {k: v for k, v in picks.items() if v is not None}
    return out
