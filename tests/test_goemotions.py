"""The shipped GoEmotions subset: the selection rule on synthetic TSVs, and the shipped file obeys it exactly."""

from __future__ import annotations

import csv
import io
import json
import random

import pandas as pd
import pytest

from emotion_circuits import LABELS
from emotion_circuits.data import normalise_text
from emotion_circuits.errors import DataError
from emotion_circuits.goemotions import CLASS_MAP, FIELDS, main, rank_key, select_goemotions, to_jsonl

from .conftest import ROOT

SHIPPED = ROOT / "data/goemotions/goemotions.jsonl"
# GoEmotions' labels.txt order (ids 2 anger, 15 gratitude, 24 remorse, 27 neutral)
NAMES = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity", "desire",
         "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude", "grief", "joy",
         "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness", "surprise",
         "neutral"]
ID = {name: str(i) for i, name in enumerate(NAMES)}


def tsv(rows: list[tuple[str, str, str]]) -> str:
    """Rows as the source writes them: tab-separated, CSV-style quoting of texts holding quotes."""
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(rows)
    return buf.getvalue()


def test_the_selection_rule_on_a_synthetic_tsv():
    words64 = " ".join(["word"] * 64)
    rows = [
        ("Thanks a lot for this mate", f"{ID['gratitude']},{ID['joy']}", "c02"),      # multi-label: dropped
        ("I'm so sorry about that.", ID["remorse"], "c03"),                             # remorse -> apology
        ("This makes me so angry", ID["anger"], "c04"),
        ("Just   a \u201cnormal\u201d day   here", ID["neutral"], "c05"),                # normalised
        ("ok fine", ID["neutral"], "c06"),                                              # 2 words: dropped
        (words64, ID["neutral"], "c07"),                                                # 64 words: kept
        (words64 + " more", ID["neutral"], "c08"),                                      # 65 words: dropped
        ("What a joyful day today", ID["joy"], "c09"),                                  # other class: dropped
        ('He said "stop it" to me', ID["anger"], "c10"),                                # quoted field undone
        ("THANK YOU SO MUCH, FRIEND!", ID["gratitude"], "c11"),                         # case-folded duplicate
        ("thank you so much, friend!", ID["neutral"], "c12"),                           # duplicate across classes
        ("Thank you so much, friend!", ID["gratitude"], "c01"),                         # lowest hash, last line
    ]
    df = select_goemotions(tsv(rows), NAMES)
    assert list(df.columns) == list(FIELDS)
    assert set(df["comment_id"]) >= {"c03", "c04", "c05", "c07", "c10"}
    assert not set(df["comment_id"]) & {"c02", "c06", "c08", "c09"}
    assert min(["c01", "c11", "c12"], key=rank_key) == "c01"  # of the three copies only the lowest hash survives
    assert set(df["comment_id"]) & {"c01", "c11", "c12"} == {"c01"}
    by_id = df.set_index("comment_id")
    assert by_id.loc["c03", "emotion"] == "apology" and by_id.loc["c03", "goemotions_label"] == "remorse"
    assert by_id.loc["c05", "text"] == 'Just a "normal" day here'
    assert by_id.loc["c10", "text"] == 'He said "stop it" to me'
    assert (df["id"] == "ge-" + df["comment_id"]).all()
    # sorted by (LABELS order, sha256 of the comment id)
    order = sorted(range(len(df)), key=lambda i: (LABELS.index(df["emotion"][i]), rank_key(df["comment_id"][i])))
    assert order == list(range(len(df)))


def test_per_class_keeps_the_lowest_hashes_and_ignores_file_order():
    rows = [(f"Thanks so much number {i}", ID["gratitude"], f"g{i}") for i in range(30)]
    rows += [(f"Plain statement number {i}", ID["neutral"], f"n{i}") for i in range(30)]
    full = select_goemotions(tsv(rows), NAMES)
    five = select_goemotions(tsv(rows), NAMES, per_class=5)
    assert five["comment_id"].tolist() == [*sorted((f"g{i}" for i in range(30)), key=rank_key)[:5],
                                           *sorted((f"n{i}" for i in range(30)), key=rank_key)[:5]]
    pd.testing.assert_frame_equal(five, full.groupby("emotion", sort=False).head(5).reset_index(drop=True))
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert to_jsonl(select_goemotions(tsv(shuffled), NAMES)) == to_jsonl(full)  # same bytes whatever the order


@pytest.mark.parametrize("text, expected", [
    ("Thank you all\t15\n", r"t\.tsv:1: expected 3 tab-separated fields"),
    ("Thank you all\t15\tc1\nThanks again friends\tx\tc2\n", r"t\.tsv:2: label ids must be comma-separated integers"),
    ("Thank you all\t15,99\tc1\n", r"t\.tsv:1: label id out of range 0\.\.27"),
    ("Thank you all\t15\tc1\nThanks again friends\t15\tc1\n", r"t\.tsv:2: duplicate comment_id 'c1'"),
])
def test_a_malformed_tsv_row_is_one_error_naming_file_and_line(text, expected):
    with pytest.raises(DataError, match=expected) as info:
        select_goemotions(text, NAMES, where="t.tsv")
    assert "\n" not in str(info.value)


def shipped() -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()])


def test_the_shipped_file_obeys_the_rule():
    raw = SHIPPED.read_bytes()
    df = shipped()
    assert to_jsonl(df).encode("utf-8") == raw  # sorted keys, raw UTF-8, "\n" line ends, nothing else
    assert list(df.columns) == sorted(FIELDS)
    assert df["emotion"].value_counts().to_dict() == {"gratitude": 1000, "anger": 988, "apology": 348,
                                                      "neutral": 1000}
    assert df["emotion"].tolist() == sorted(df["emotion"], key=LABELS.index)
    for _, group in df.groupby("emotion"):
        assert group["comment_id"].tolist() == sorted(group["comment_id"], key=rank_key)
    assert (df["goemotions_label"].map(CLASS_MAP) == df["emotion"]).all()
    assert (df["id"] == "ge-" + df["comment_id"]).all() and df["id"].is_unique
    assert df["text"].str.casefold().is_unique
    assert (df["text"].map(normalise_text) == df["text"]).all()
    assert df["text"].str.split().str.len().between(3, 64).all()


def test_selecting_over_the_shipped_rows_returns_exactly_them():
    df = shipped()
    rebuilt = tsv([(t, ID[g], c) for t, g, c in zip(df["text"], df["goemotions_label"], df["comment_id"])])
    again = select_goemotions(rebuilt, NAMES)
    assert to_jsonl(again).encode("utf-8") == SHIPPED.read_bytes()


def test_a_checksum_mismatch_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/train.tsv").write_text("Thank you all\t15\tc1\n")
    (tmp_path / "src/labels.txt").write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "out/ge.jsonl"
    assert main(["--source", str(tmp_path / "src"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "train.tsv: sha256 " in err and "does not match" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--source" in capsys.readouterr().out
