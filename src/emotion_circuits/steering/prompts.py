"""Selection and confirmation prompts: the confirmatory steering design chooses a setting on one set of neutral
openings and tests it on a disjoint one, so the confirmed effect carries no winner's curse.

Prompts are ranked by sha256 of their id (not file order, so appending openings to the file reshuffles nothing
already assigned ahead of them by chance of writing order); the first `n_select` are the selection split, the
next `n_confirm` the confirmation split. A prompt is in at most one split, by construction and by test.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from emotion_circuits.errors import ParamsError

SPLITS = ("selection", "confirmation")


def hash_rank(ids: pd.Series) -> pd.Series:
    """sha256 of each id, the order both splits draw from (stable across files, platforms and pandas)."""
    return ids.map(lambda i: hashlib.sha256(str(i).encode()).hexdigest())


def split_prompts(prompts: pd.DataFrame, n_select: int, n_confirm: int) -> dict[str, pd.DataFrame]:
    """{"selection": ..., "confirmation": ...}: disjoint prompt sets (id, text, split), each sorted by id."""
    need = n_select + n_confirm
    if need > len(prompts):
        raise ParamsError(f"steering prompts: {n_select} selection + {n_confirm} confirmation prompts requested, "
                          f"but the prompt file has {len(prompts)} (add openings or lower the counts)")
    ranked = prompts.assign(_rank=hash_rank(prompts["id"])).sort_values("_rank", kind="stable")
    parts = {"selection": ranked.iloc[:n_select], "confirmation": ranked.iloc[n_select:need]}
    return {name: part.drop(columns="_rank").assign(split=name).sort_values("id", kind="stable")
            .reset_index(drop=True) for name, part in parts.items()}
