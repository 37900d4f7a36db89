"""`heads.source`: the head stages read one dataset source's sentences (hand-written by default)."""

import pandas as pd
import pytest

from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.heads.runs import for_heads, select_sentences
from emotion_circuits.params import HeadParams

ROWS = pd.DataFrame({
    "id": [f"{s}-{e}-{i}" for s in ("hw", "ge") for e in ("gratitude", "anger", "apology", "neutral") for i in range(3)],
    "emotion": [e for _ in range(2) for e in ("gratitude", "anger", "apology", "neutral") for _ in range(3)],
    "split": "fit",
    "source": ["handwritten"] * 12 + ["goemotions"] * 12,
})


@pytest.mark.parametrize("source", ["handwritten", "goemotions"])
def test_head_sentences_come_from_the_chosen_source(source):
    rows = for_heads(ROWS, HeadParams(source=source))
    assert set(rows["source"]) == {source} and len(rows) == 12
    picked = select_sentences(rows, "fit", 2, 0)
    assert set(picked["source"]) == {source} and len(picked) == 6


def test_both_keeps_every_row_and_a_missing_source_is_one_line():
    assert len(for_heads(ROWS, HeadParams(source="both"))) == len(ROWS)
    with pytest.raises(DataError, match="heads.source='goemotions'"):
        for_heads(ROWS[ROWS["source"] == "handwritten"], HeadParams(source="goemotions"))
    with pytest.raises(ParamsError, match="heads.source must be one of"):
        HeadParams(source="reddit")
