"""Phase 1: the bundled data meets its spec; every kind of bad input is one clear error naming file:line."""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd
import pytest

from emotion_circuits import LABELS
from emotion_circuits.data import (
    build_prompts,
    build_real_world,
    build_sentences,
    find_word_spans,
    load_lexicons,
    normalise_text,
    read_records,
    select_profile,
    stratified_split,
    validate_sentences,
)
from emotion_circuits.errors import DataError

from .conftest import ROOT, write_jsonl

GOOD = {"id": "g1", "text": "Thank you so much for the help.", "emotion": "gratitude", "emotion_words": ["Thank you"]}


def test_bundled_dataset_meets_the_spec():
    df, duplicates = validate_sentences(read_records(ROOT / "data/emotions.jsonl"))
    assert duplicates == 0
    counts = df["emotion"].value_counts()
    assert all(counts[label] >= 225 for label in LABELS)
    assert df["n_words"].between(5, 30).all()
    assert df["register"].nunique() >= 4
    for label, group in df.groupby("emotion"):
        openings = Counter(" ".join(t.lower().split()[:4]) for t in group["text"])
        assert openings.most_common(1)[0][1] == 1, f"templated openings in {label}"
        if label != "neutral":
            assert all(len(w) > 0 for w in group["emotion_words"])


def test_bundled_auxiliary_files_are_valid():
    assert 35 <= len(build_real_world(ROOT / "data/real_world.jsonl")) <= 60
    assert len(build_prompts(ROOT / "data/steering_prompts.jsonl")) >= 50
    lex = load_lexicons(ROOT / "data/lexicons.json")
    assert set(lex) == {"gratitude", "anger", "apology"} and all(len(v) >= 30 for v in lex.values())


@pytest.mark.parametrize("lines, expected", [
    (['{"id": "a", "text": "ok fine"', ], r"bad\.jsonl:1: malformed JSON"),
    ([GOOD, {**GOOD, "id": "g2", "text": "We are joyful today.", "emotion": "joy", "emotion_words": []}],
     r"bad\.jsonl:2: unknown emotion 'joy'"),
    ([GOOD, {"id": "g2", "emotion": "anger"}], r"bad\.jsonl:2: missing required field 'text'"),
    ([{**GOOD, "text": "   "}], r"bad\.jsonl:1: field 'text' is empty"),
    ([{**GOOD, "emotion_words": ["grateful"]}], r"bad\.jsonl:1: emotion word 'grateful' does not occur"),
    ([GOOD, {**GOOD, "text": "Another sentence here, thank you."}], r"bad\.jsonl:2: duplicate id 'g1'"),
    ([GOOD, {**GOOD, "id": "g2", "emotion": "anger"}], r"bad\.jsonl:2: same text as .*bad\.jsonl:1"),
    (["[1, 2]"], r"bad\.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_is_one_clear_error_naming_file_and_line(tmp_path, lines, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=expected):
        validate_sentences(read_records(path))


def test_empty_and_missing_files_are_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(DataError, match=r"empty\.jsonl: file is empty"):
        read_records(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported format"):
        read_records(tmp_path / "x.txt")


def test_csv_missing_column_and_ragged_rows(tmp_path):
    (tmp_path / "bad.csv").write_text("id,text\na,Hello there friend\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: missing required field 'emotion'"):
        validate_sentences(read_records(tmp_path / "bad.csv"))
    (tmp_path / "ragged.csv").write_text("id,text,emotion\na,Hello there friend,neutral,extra\n")
    with pytest.raises(DataError, match=r"ragged\.csv:2: malformed CSV row"):
        read_records(tmp_path / "ragged.csv")


def test_csv_and_jsonl_give_the_same_frame(tmp_path):
    records = read_records(ROOT / "data/emotions.jsonl")
    frame = pd.DataFrame([r.fields for r in records])
    frame["emotion_words"] = frame["emotion_words"].map(";".join)
    frame.to_csv(tmp_path / "full.csv", index=False)
    from_jsonl, _ = validate_sentences(records)
    from_csv, _ = validate_sentences(read_records(tmp_path / "full.csv"))
    pd.testing.assert_frame_equal(from_jsonl, from_csv)


def test_missing_emotion_class_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", [GOOD, {"id": "n1", "text": "The bus leaves at nine.",
                                                       "emotion": "neutral", "emotion_words": []}])
    with pytest.raises(DataError, match="no rows for emotion"):
        validate_sentences(read_records(path))


def test_exact_duplicates_are_dropped_and_counted():
    df, _ = validate_sentences(read_records(ROOT / "data/emotions.jsonl"))
    records = read_records(ROOT / "data/emotions.jsonl")
    dup = records[0].__class__({**records[0].fields, "id": "dup-1", "text": records[0].fields["text"].upper()},
                               "x.jsonl", 999)
    deduped, n = validate_sentences([*records, dup])
    assert n == 1 and len(deduped) == len(df)


def test_normalisation_straightens_quotes_and_spaces():
    assert normalise_text("  I\u2019m  \u201cfine\u201d\n now ") == "I'm \"fine\" now"
    assert find_word_spans("Thanks, THANKS and thanksgiving", "thanks") == [(0, 6), (8, 14)]


def test_split_is_deterministic_stratified_and_seed_dependent():
    df, _ = validate_sentences(read_records(ROOT / "data/emotions.jsonl"))
    a, b = stratified_split(df, 0.25, seed=0), stratified_split(df, 0.25, seed=0)
    assert a.equals(b)
    assert not a.equals(stratified_split(df, 0.25, seed=1))
    share = df.assign(split=a).groupby("emotion")["split"].apply(lambda s: (s == "test").mean())
    assert share.between(0.24, 0.26).all()


def test_smoke_profile_keeps_every_emotion_and_both_splits():
    df, metrics = build_sentences(ROOT / "data/emotions.jsonl", 0.25, 0, "smoke", 8)
    assert metrics["n_rows"] == len(df) == 32
    assert (df.groupby(["emotion", "split"]).size() >= 1).all() and df.groupby("emotion").size().eq(8).all()
    again, _ = build_sentences(ROOT / "data/emotions.jsonl", 0.25, 0, "smoke", 8)
    pd.testing.assert_frame_equal(df, again)
    assert select_profile(df, "baseline", 8, 0) is df


def test_lexicon_errors(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text('{"gratitude": ["thanks"], "anger": ["thanks"], "apology": ["sorry"]}')
    with pytest.raises(DataError, match="listed under both"):
        load_lexicons(path)
    path.write_text('{"gratitude": ["thanks"]}')
    with pytest.raises(DataError, match="exactly the keys"):
        load_lexicons(path)
    path.write_text('{"gratitude": ')
    with pytest.raises(DataError, match=r"lex\.json:1: malformed JSON"):
        load_lexicons(path)


def test_real_world_unknown_label_names_line(tmp_path):
    path = write_jsonl(tmp_path / "rw.jsonl", [{"id": "1", "text": "fine", "label": "neutral"},
                                               {"id": "2", "text": "meh", "label": "boredom"}])
    with pytest.raises(DataError, match=re.escape("rw.jsonl:2: unknown label 'boredom'")):
        build_real_world(path)
