"""Selection and confirmation prompts (`steering.prompts.split_prompts`): a setting chosen on one split and
confirmed on the other only escapes the winner's curse if the splits are disjoint, of the asked sizes, and the
same on every run and every order the file happens to list its rows in."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from emotion_circuits.data import build_prompts
from emotion_circuits.errors import ParamsError
from emotion_circuits.steering.prompts import SPLITS, split_prompts

from .conftest import ROOT


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"p-{i:03d}" for i in range(n)], "text": [f"Opening number {i}" for i in range(n)]})


def test_splits_are_disjoint_sized_and_labelled():
    parts = split_prompts(frame(50), 20, 25)
    assert tuple(parts) == SPLITS
    sel, conf = parts["selection"], parts["confirmation"]
    assert (len(sel), len(conf)) == (20, 25)
    assert not set(sel["id"]) & set(conf["id"])
    assert set(sel["split"]) == {"selection"} and set(conf["split"]) == {"confirmation"}
    assert list(sel.columns) == ["id", "text", "split"]
    texts = dict(zip(frame(50)["id"], frame(50)["text"]))
    for part in parts.values():
        assert part["id"].is_monotonic_increasing and part.index.tolist() == list(range(len(part)))
        assert all(texts[i] == t for i, t in zip(part["id"], part["text"]))  # rows stay whole


def test_splits_take_every_prompt_when_asked_for_all_and_none_twice():
    parts = split_prompts(frame(30), 12, 18)
    ids = [*parts["selection"]["id"], *parts["confirmation"]["id"]]
    assert sorted(ids) == sorted(frame(30)["id"]) and len(set(ids)) == 30


def test_splits_are_deterministic_and_independent_of_row_order():
    base = split_prompts(frame(40), 15, 15)
    again = split_prompts(frame(40), 15, 15)
    shuffled = split_prompts(frame(40).sample(frac=1, random_state=3).reset_index(drop=True), 15, 15)
    reversed_ = split_prompts(frame(40).iloc[::-1], 15, 15)
    for name in SPLITS:
        pd.testing.assert_frame_equal(base[name], again[name])
        pd.testing.assert_frame_equal(base[name], shuffled[name])
        pd.testing.assert_frame_equal(base[name], reversed_[name])


def test_split_is_by_id_hash_not_file_position():
    """Ranked by sha256(id), not by file position: appending an opening to the file moves at most one prompt
    across each boundary, and never changes the text of the ones already in a split."""
    ids = frame(40)["id"]
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    parts = split_prompts(frame(40), 10, 10)
    assert set(parts["selection"]["id"]) == set(ranked[:10]) != set(ids[:10])
    assert set(parts["confirmation"]["id"]) == set(ranked[10:20])
    grown = pd.concat([frame(40), pd.DataFrame({"id": ["p-new"], "text": ["An appended opening"]})])
    after = split_prompts(grown, 10, 10)
    for name in SPLITS:
        assert len(set(after[name]["id"]) - set(parts[name]["id"])) <= 1


@pytest.mark.parametrize("n_select, n_confirm", [(30, 21), (51, 0), (0, 51)])
def test_too_few_prompts_is_one_clear_params_error(n_select, n_confirm):
    with pytest.raises(ParamsError, match=rf"{n_select} selection \+ {n_confirm} confirmation .* has 50") as info:
        split_prompts(frame(50), n_select, n_confirm)
    assert "\n" not in str(info.value)


def test_the_shipped_file_holds_two_disjoint_splits_of_96():
    prompts = build_prompts(ROOT / "data/steering_prompts.jsonl")
    parts = split_prompts(prompts, 96, 96)
    assert not set(parts["selection"]["id"]) & set(parts["confirmation"]["id"])
    assert len(parts["selection"]) == len(parts["confirmation"]) == 96
