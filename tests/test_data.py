"""Phase 1: the bundled data meets its spec; every kind of bad input is one clear error naming file:line."""

from __future__ import annotations

import codecs
import re
from collections import Counter

import pandas as pd
import pytest
import yaml

from emotion_circuits import LABELS
from emotion_circuits.data import (
    build_dataset,
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
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.params import DatasetParams, load_params

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


# --- issue 15: encodings, CSV streams, dataset-level errors, dataset.max_tokens -------------------------------------

_CSV_HEAD = "id,text,emotion,emotion_words\r\n"
_CSV_BASE = "".join(f"{label[:2]}{i},{text} {i},{label},{words}\r\n" for i in (1, 2) for label, text, words in [
    ("gratitude", "Thank you for the lovely gift number", "Thank you"),
    ("anger", "I am furious about delay number", "furious"),
    ("apology", "I am sorry for mess number", "sorry"),
    ("neutral", "The train leaves at platform", "")])


def test_csv_saved_with_a_bom_is_read(tmp_path):
    """Spreadsheet programs write a UTF-8 BOM; the header's first column is still `id`."""
    (tmp_path / "bom.csv").write_bytes(codecs.BOM_UTF8 + (_CSV_HEAD + _CSV_BASE).encode())
    df, _ = validate_sentences(read_records(tmp_path / "bom.csv"))
    assert len(df) == 8 and df["id"].iloc[0] == "an1"
    write_jsonl(tmp_path / "bom.jsonl", [GOOD])
    (tmp_path / "bom.jsonl").write_bytes(codecs.BOM_UTF8 + (tmp_path / "bom.jsonl").read_bytes())
    assert read_records(tmp_path / "bom.jsonl")[0].fields["id"] == "g1"


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
@pytest.mark.parametrize("name", ["latin1.csv", "latin1.jsonl", "lex.json"])
def test_non_utf8_bytes_are_one_error_naming_file_line_and_byte(tmp_path, name, bom):
    first = b'{"gratitude": ["thanks"],\n' if name.endswith(".json") else b'id,text,emotion\n'
    body = bom + first + "x,Caf\u00e9 au lait,neutral\n".encode("latin-1")
    (tmp_path / name).write_bytes(body)
    offset = body.index(b"\xe9")
    expected = f"{name}:2: not valid UTF-8 (byte 0xe9 at byte offset {offset}); save the file as UTF-8"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_lexicons(tmp_path / name) if name.endswith(".json") else read_records(tmp_path / name)


def test_quoted_csv_newline_stays_in_one_field_as_a_space(tmp_path):
    rows = 'm1,"The meeting is at ten.\r\nBring the slides.",neutral,\r\nm2,"Lunch is at noon.\nThe room is 4B.",neutral,\r\n'
    (tmp_path / "multi.csv").write_text(_CSV_HEAD + _CSV_BASE + rows, encoding="utf-8", newline="")
    df, _ = validate_sentences(read_records(tmp_path / "multi.csv"))
    texts = df.set_index("id")["text"]
    assert texts["m1"] == "The meeting is at ten. Bring the slides."
    assert texts["m2"] == "Lunch is at noon. The room is 4B."
    (tmp_path / "prompts.csv").write_text('id,text\np1,"Dear team,\nplease"\n', encoding="utf-8")
    assert build_prompts(tmp_path / "prompts.csv")["text"].tolist() == ["Dear team, please"]


def test_csv_errors_name_the_first_line_of_a_multiline_row(tmp_path):
    rows = 'm1,"Line two\nline three",neutral,\n\nb1,"Line five\nline six\nline seven",joy,\n'
    (tmp_path / "bad.csv").write_text("id,text,emotion,emotion_words\n" + rows, encoding="utf-8")
    records = read_records(tmp_path / "bad.csv")
    assert [r.line for r in records] == [2, 5]
    with pytest.raises(DataError, match=re.escape("bad.csv:5: unknown emotion 'joy'")):
        validate_sentences(records)


def test_jsonl_lines_split_only_at_newlines(tmp_path):
    """A raw U+2028 inside a JSON string is legal JSON; str.splitlines() would cut the row in two."""
    (tmp_path / "p.jsonl").write_text('{"id": "p1", "text": "Dear team,\u2028please"}\n{"id": "p2", "text": "Hi"}\n',
                                      encoding="utf-8")
    assert [r.line for r in read_records(tmp_path / "p.jsonl")] == [1, 2]
    (tmp_path / "cr.jsonl").write_bytes(b'{"id": "p1", "text": "Hi"}\r\n{"id": "p2", "text": "Yo"}\r{"id": "p3"}\r')
    assert [r.line for r in read_records(tmp_path / "cr.jsonl")] == [1, 2, 3]
    (tmp_path / "cr.jsonl").write_bytes(b'{"id": "p1", "text": "Hi"}\r{"id": "p2", "text": "Caf\xe9"}\r')
    with pytest.raises(DataError, match=re.escape("cr.jsonl:2: not valid UTF-8 (byte 0xe9 at byte offset 52)")):
        read_records(tmp_path / "cr.jsonl")


def test_dataset_level_errors_name_the_file(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", [GOOD, {"id": "n1", "text": "The bus leaves at nine.",
                                                       "emotion": "neutral", "emotion_words": []}])
    with pytest.raises(DataError, match=re.escape(f"{path}: dataset has no rows for emotion(s): anger, apology")):
        validate_sentences(read_records(path))
    (tmp_path / "one.csv").write_text(_CSV_HEAD + _CSV_BASE.split("\r\n", 1)[1], encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'one.csv'}: each emotion needs >= 2 rows")):
        build_sentences(tmp_path / "one.csv", 0.25, 0, "baseline", 8)
    (tmp_path / "eight.csv").write_text(_CSV_HEAD + _CSV_BASE, encoding="utf-8")  # 2 test rows < 4 emotions
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'eight.csv'}: cannot split 8 rows with "
                                                  f"dataset.test_size=0.25")):
        build_sentences(tmp_path / "eight.csv", 0.25, 0, "baseline", 8)
    assert build_sentences(tmp_path / "eight.csv", 0.5, 0, "baseline", 8)[1]["n_rows"] == 8


def test_rows_longer_than_max_tokens_words_are_rejected(tmp_path):
    long_text = " ".join(["word"] * 12)
    (tmp_path / "s.csv").write_text(_CSV_HEAD + _CSV_BASE + f"n9,{long_text},neutral,\r\n", encoding="utf-8")
    assert len(validate_sentences(read_records(tmp_path / "s.csv"), max_tokens=12)[0]) == 9  # exactly 12: kept
    with pytest.raises(DataError, match=re.escape("s.csv:10: row 'n9' has 12 words, more than dataset.max_tokens=11")):
        validate_sentences(read_records(tmp_path / "s.csv"), max_tokens=11)
    rw = write_jsonl(tmp_path / "rw.jsonl", [{"id": "r1", "text": "fine", "label": "neutral"},
                                             {"id": "r2", "text": long_text, "label": "anger"}])
    with pytest.raises(DataError, match=re.escape("rw.jsonl:2: row 'r2' has 12 words, more than dataset.max_tokens=5")):
        build_real_world(rw, max_tokens=5)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "text": long_text}])
    with pytest.raises(DataError, match=re.escape("p.jsonl:1: row 'p1' has 12 words")):
        build_prompts(prompts, max_tokens=5)
    huge = write_jsonl(tmp_path / "huge.jsonl", [{**GOOD, "text": "Thank you " + "so " * 5000}])
    with pytest.raises(DataError, match=re.escape("huge.jsonl:1: row 'g1' has 5002 words, more than "
                                                  "dataset.max_tokens=256")):
        validate_sentences(read_records(huge))


@pytest.mark.parametrize("key, value, expected", [
    ("test_size", "abc", "dataset.test_size must be a number in (0, 1), got 'abc'"),
    ("test_size", True, "dataset.test_size must be a number in (0, 1), got True"),
    ("test_size", float("nan"), "dataset.test_size must be a number in (0, 1), got nan"),
    ("smoke_per_emotion", "abc", "dataset.smoke_per_emotion must be an integer >= 2, got 'abc'"),
    ("smoke_per_emotion", True, "dataset.smoke_per_emotion must be an integer >= 2, got True"),
    ("smoke_per_emotion", 8.5, "dataset.smoke_per_emotion must be an integer >= 2, got 8.5"),
    ("max_tokens", "abc", "dataset.max_tokens must be a positive integer, got 'abc'"),
    ("max_tokens", True, "dataset.max_tokens must be a positive integer, got True"),
    ("max_tokens", float("nan"), "dataset.max_tokens must be a positive integer, got nan"),
    ("max_tokens", 0, "dataset.max_tokens must be a positive integer, got 0"),
    ("path", 5, "dataset.path must be a file path, got 5"),
])
def test_dataset_params_of_the_wrong_type_are_one_params_error(tmp_path, key, value, expected):
    with pytest.raises(ParamsError) as info:
        DatasetParams(**{key: value})
    assert str(info.value) == expected
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError) as info:  # params.yaml may be checked by a generic type layer first
        load_params(tmp_path / "params.yaml")
    assert str(info.value).startswith(f"dataset.{key} must be ") and str(info.value).endswith(f"got {value!r}")
    assert load_params(ROOT / "params.yaml").dataset.max_tokens == DatasetParams().max_tokens == 256


# --- dataset.source: hand-written, GoEmotions, both (issue 16) ---

GE_FILE = ROOT / "data/goemotions/goemotions.jsonl"
GE_ORIGINAL = {"gratitude": "gratitude", "anger": "anger", "apology": "remorse", "neutral": "neutral"}


def sources(source: str, profile: str = "baseline", per_class: int = 240):
    return build_dataset(ROOT / "data/emotions.jsonl", 0.25, 0, profile, 8, source=source, goemotions=GE_FILE,
                         goemotions_per_class=per_class)


def ge_first(n: int) -> tuple[set[str], set[str]]:
    """Ids of the first `n` shipped GoEmotions rows of each class, and of the rest (the judges' pool)."""
    rows = read_records(GE_FILE)
    first, rest, seen = set(), set(), Counter()
    for rec in rows:
        seen[rec.fields["emotion"]] += 1
        (first if seen[rec.fields["emotion"]] <= n else rest).add(rec.fields["id"])
    return first, rest


def test_the_source_knob_picks_the_rows_and_splits_each_source_by_emotion():
    hand, hand_judge, _ = sources("handwritten")
    ge, ge_judge, ge_metrics = sources("goemotions")
    both, both_judge, metrics = sources("both")
    n_hand = len(validate_sentences(read_records(ROOT / "data/emotions.jsonl"))[0])
    first, pool = ge_first(240)
    assert len(hand) == n_hand and set(hand["source"]) == {"handwritten"}
    assert set(ge["id"]) == first and set(ge["source"]) == {"goemotions"} and len(ge) == 4 * 240
    assert (ge["emotion_words"].str.len() == 0).all()
    # both = the union, each source split exactly as it is alone (a source's split never depends on the other)
    pd.testing.assert_frame_equal(both[both["source"] == "handwritten"].reset_index(drop=True), hand)
    pd.testing.assert_frame_equal(both[both["source"] == "goemotions"].reset_index(drop=True), ge)
    assert both["id"].is_monotonic_increasing and both["id"].is_unique
    test_share = both.groupby(["source", "emotion"])["split"].apply(lambda s: (s == "test").mean())
    assert len(test_share) == 8 and test_share.between(0.24, 0.26).all()
    assert metrics["counts_by_source"]["goemotions"]["apology"] == {"fit": 180, "test": 60}
    assert metrics["judge_pool"] == ge_metrics["judge_pool"] == {"gratitude": 760, "anger": 748, "apology": 108,
                                                                 "neutral": 760}
    # judge_train: the fit rows + the pool (GoEmotions sources only), never a test-split id
    for frame, judge in ((hand, hand_judge), (ge, ge_judge), (both, both_judge)):
        assert list(judge.columns) == ["id", "text", "emotion", "source"]
        assert not set(judge["id"]) & set(frame.loc[frame["split"] == "test", "id"])
        assert set(frame.loc[frame["split"] == "fit", "id"]) <= set(judge["id"])
    assert not set(hand_judge["id"]) & pool and set(hand_judge["source"]) == {"handwritten"}
    assert pool <= set(ge_judge["id"]) and pool <= set(both_judge["id"])
    assert len(both_judge) == len(hand_judge) + len(ge_judge) == metrics["n_judge_train"]
    again = sources("both")
    pd.testing.assert_frame_equal(again[0], both)
    pd.testing.assert_frame_equal(again[1], both_judge)


def test_smoke_profile_keeps_both_sources_and_both_splits():
    df, judge, metrics = sources("both", "smoke")
    assert len(df) == metrics["n_rows"] == 64
    assert df.groupby(["source", "emotion"]).size().eq(8).all() and len(df.groupby(["source", "emotion"])) == 8
    assert len(df.groupby(["source", "emotion", "split"])) == 16
    assert not set(judge["id"]) & set(df.loc[df["split"] == "test", "id"])
    assert metrics["judge_pool"] == {label: 8 for label in LABELS}


def small_sources(tmp_path, ge_rows: list) -> tuple:
    """A valid 2-per-class hand-written file and the given GoEmotions rows, so only the GoEmotions rows can fail."""
    hand = [{"id": f"h-{label}-{i}", "text": f"Hand written {label} sentence number {i}.", "emotion": label}
            for label in LABELS for i in range(2)]
    write_jsonl(tmp_path / "hand.jsonl", hand)
    write_jsonl(tmp_path / "ge.jsonl", ge_rows)
    return tmp_path / "hand.jsonl", tmp_path / "ge.jsonl"


def ge_row(i: int, label: str, **over) -> dict:
    return {"id": f"ge-c{i}", "comment_id": f"c{i}", "text": f"Real comment {i} for {label} here",
            "emotion": label, "goemotions_label": GE_ORIGINAL[label], **over}


GE_OK = [ge_row(i * 4 + j, label) for j, label in enumerate(LABELS) for i in range(2)]


@pytest.mark.parametrize("bad, per_class, expected", [
    ({"emotion": "joy"}, 2, r"ge\.jsonl:9: unknown emotion 'joy'"),
    ({"goemotions_label": "sadness"}, 2, r"ge\.jsonl:9: goemotions_label 'sadness' does not map to emotion 'anger'"),
    ({"id": "x-c99"}, 2, r"ge\.jsonl:9: id 'x-c99' must be 'ge-' \+ comment_id \('c99'\)"),
    ({"emotion_words": ["mad"]}, 2, r"ge\.jsonl:9: unexpected field\(s\) 'emotion_words'"),
    ({"id": "ge-c0", "comment_id": "c0"}, 2, r"ge\.jsonl:9: duplicate id 'ge-c0' \(first seen at .*ge\.jsonl:1\)"),
    ({"text": "real comment 0 for GRATITUDE here"}, 2, r"ge\.jsonl:9: same text as .*ge\.jsonl:1"),
    ({"id": "ge-x", "comment_id": "x"}, 4, r"ge\.jsonl: dataset\.goemotions_per_class=4 but class 'gratitude' has "
                                          r"only 2 rows"),
    ({"text": "Hand written neutral sentence number 0."}, 2,
     r"ge\.jsonl:9: same text as hand-written row 'h-neutral-0' in .*hand\.jsonl but labelled 'anger' vs 'neutral'"),
])
def test_bad_goemotions_rows_are_one_error_naming_file_and_line(tmp_path, bad, per_class, expected):
    hand, ge = small_sources(tmp_path, [*GE_OK, ge_row(99, "anger", **bad)])
    with pytest.raises(DataError, match=expected) as info:
        build_dataset(hand, 0.5, 0, "baseline", 8, source="both", goemotions=ge, goemotions_per_class=per_class)
    assert "\n" not in str(info.value)


def test_an_id_in_both_sources_is_an_error_and_a_repeated_text_is_dropped(tmp_path):
    hand, ge = small_sources(tmp_path, [*GE_OK, ge_row(99, "anger")])
    rows = read_records(hand)
    write_jsonl(hand, [*(r.fields for r in rows), {"id": "ge-c99", "text": "Another angry line", "emotion": "anger"}])
    with pytest.raises(DataError, match=r"ge\.jsonl:9: id 'ge-c99' is also a hand-written row id in .*hand\.jsonl"):
        build_dataset(hand, 0.5, 0, "baseline", 8, source="both", goemotions=ge, goemotions_per_class=2)
    hand, ge = small_sources(tmp_path, [ge_row(99, "anger", text="Hand written anger sentence number 1."), *GE_OK])
    df, _, metrics = build_dataset(hand, 0.5, 0, "baseline", 8, source="both", goemotions=ge, goemotions_per_class=2)
    assert metrics["cross_source_duplicates_removed"] == 1 and "ge-c99" not in set(df["id"])
    assert df["text"].str.casefold().is_unique and len(df) == 16


def test_shipped_steering_prompts_are_many_unique_and_free_of_emotion_words():
    """The confirmatory design draws two disjoint splits from this file, and a prompt that already says "thanks"
    (or a lexicon word) would make the keyword rate move without any steering."""
    from emotion_circuits.evaluation.keyword import keyword_hits
    from emotion_circuits.evaluation.lexicon import LexiconEvaluator

    prompts = build_prompts(ROOT / "data/steering_prompts.jsonl")
    texts = list(prompts["text"])
    assert len(prompts) >= 192
    assert prompts["id"].is_unique
    assert len({t.casefold() for t in texts}) == len(texts)
    assert all(2 <= len(t.split()) <= 20 for t in texts)
    patterns = LexiconEvaluator(load_lexicons(ROOT / "data/lexicons.json")).patterns
    for emotion, lexicon_pattern in patterns.items():
        hits = keyword_hits(texts, emotion)
        assert not hits.any(), [t for t, h in zip(texts, hits) if h]
        assert not [t for t in texts if lexicon_pattern.search(t)]
    # the judge does fire on emotion words in this frame, so the empty hit lists above mean something
    assert keyword_hits(["Thanks for the help", "The train was late"], "gratitude").tolist() == [True, False]
