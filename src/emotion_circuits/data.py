"""Phase 1: read, validate, normalise, deduplicate and split the bundled dataset.

The data is written once by people and committed under data/; nothing here generates sentences.
Every problem is reported as one `DataError` naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from emotion_circuits import EMOTIONS, LABELS, REFERENCE
from emotion_circuits.errors import DataError

SENTENCE_FIELDS = ("id", "text", "emotion")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                         "\u00a0": " "})
_SPACE = re.compile(r"\s+")
_NEWLINE = r"\r\n|\r|\n"  # line ends as csv and editors count them


@dataclass(frozen=True)
class Record:
    """One raw row and where it came from (file, 1-based line) for error messages."""

    fields: dict[str, Any]
    source: str
    line: int

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def normalise_text(text: str) -> str:
    """NFC, straight quotes/dashes, single spaces: the same sentence always tokenises the same way."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text).translate(_QUOTES)).strip()


def find_word_spans(text: str, word: str) -> list[tuple[int, int]]:
    """Character spans of whole-word, case-insensitive occurrences of `word` in `text`."""
    pattern = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


def read_records(path: str | Path) -> list[Record]:
    """Read JSONL or CSV into records; malformed lines and empty files are errors."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"{path}: unsupported format {suffix!r} (use .jsonl or .csv)")
    text = decode_utf8(path, path.read_bytes())
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return _read_jsonl(path, text) if suffix == ".jsonl" else _read_csv(path, text)


def decode_utf8(path: Path, raw: bytes) -> str:
    """UTF-8 with an optional BOM (spreadsheet programs write one); anything else is one error naming the byte."""
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start  # offsets in the file as saved, BOM included
        line = len(re.split(_NEWLINE.encode(), raw[:offset]))
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[offset]:02x} at byte offset {offset}); "
                        f"save the file as UTF-8") from None


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    # not str.splitlines(): it also breaks at U+2028 etc., which a JSON string may hold raw
    for lineno, line in enumerate(re.split(_NEWLINE, text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        records.append(Record(obj, str(path), lineno))
    return records


def _read_csv(path: Path, text: str) -> list[Record]:
    """csv.reader on a real stream, so a quoted field may span lines; each record keeps its row's FIRST line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        if not any(h.strip() for h in header):
            raise DataError(f"{path}:1: missing header row")
        records = []
        while True:
            lineno = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if row:  # csv.reader yields [] for a blank line
                records.append(Record(_csv_fields(path, lineno, header, row), str(path), lineno))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    if not records:
        raise DataError(f"{path}: file has a header but no rows")
    return records


def _csv_fields(path: Path, lineno: int, header: list[str], row: list[str]) -> dict[str, Any]:
    """One CSV row as fields (missing trailing cells are None); emotion_words is a JSON list or `a;b`."""
    if len(row) > len(header):
        raise DataError(f"{path}:{lineno}: malformed CSV row (more cells than columns)")
    fields: dict[str, Any] = dict(zip(header, [*row, *[None] * (len(header) - len(row))]))
    words = fields.get("emotion_words")
    if isinstance(words, str):
        words = words.strip()
        if words.startswith("["):
            try:
                fields["emotion_words"] = json.loads(words)
            except json.JSONDecodeError:
                raise DataError(f"{path}:{lineno}: emotion_words is not a valid JSON list") from None
        else:
            fields["emotion_words"] = [w.strip() for w in words.split(";") if w.strip()]
    return fields


def _require(rec: Record, name: str) -> Any:
    if name not in rec.fields or rec.fields[name] is None:
        raise DataError(f"{rec.where()}: missing required field {name!r}")
    return rec.fields[name]


def _text(rec: Record, name: str = "text") -> str:
    value = _require(rec, name)
    if not isinstance(value, str):
        raise DataError(f"{rec.where()}: field {name!r} must be a string")
    value = normalise_text(value)
    if not value:
        raise DataError(f"{rec.where()}: field {name!r} is empty")
    return value


def _identifier(rec: Record) -> str:
    value = _require(rec, "id")
    if not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(f"{rec.where()}: field 'id' must be a non-empty string")
    return str(value).strip()


def _check_length(rec: Record, ident: str, text: str, max_tokens: int) -> None:
    """Reject, never truncate, a row longer than `dataset.max_tokens` words (each word is >= 1 token), so a
    5,000-word text fails here and not as an out-of-memory kill or a context overflow in a model stage."""
    n_words = len(text.split())
    if n_words > max_tokens:
        raise DataError(f"{rec.where()}: row {ident!r} has {n_words} words, more than dataset.max_tokens={max_tokens} "
                        f"(shorten or split the text, or raise dataset.max_tokens)")


def _claim_id(rec: Record, ident: str, seen_ids: dict[str, str]) -> None:
    """Record where `ident` was first seen; a second use is an error naming both places."""
    if ident in seen_ids:
        raise DataError(f"{rec.where()}: duplicate id {ident!r} (first seen at {seen_ids[ident]})")
    seen_ids[ident] = rec.where()


def _labelled_row(rec: Record, max_tokens: int) -> tuple[str, str, str]:
    """(id, normalised text, emotion) of a labelled row of either source, each checked the same way."""
    ident = _identifier(rec)
    text = _text(rec)
    _check_length(rec, ident, text, max_tokens)
    emotion = _require(rec, "emotion")
    if emotion not in LABELS:
        raise DataError(f"{rec.where()}: unknown emotion {emotion!r} (allowed: {', '.join(LABELS)})")
    return ident, text, emotion


def _sources(records: list[Record]) -> str:
    """The file(s) the records came from, for errors about the whole dataset."""
    return ", ".join(sorted({rec.source for rec in records})) or "dataset"


def validate_sentences(records: Iterable[Record], max_tokens: int = 256) -> tuple[pd.DataFrame, int]:
    """Validate emotion sentences; return the clean frame (sorted by id) and the number of duplicates dropped.

    Exact duplicates (same normalised text, case-insensitive, same label) are dropped and counted; a text
    that appears under two labels, or an id used twice, is an error because it cannot be resolved silently.
    """
    rows: list[dict[str, Any]] = []
    seen_ids: dict[str, str] = {}
    seen_text: dict[str, tuple[str, str]] = {}
    duplicates = 0
    records = list(records)
    for rec in records:
        ident, text, emotion = _labelled_row(rec, max_tokens)
        words = rec.fields.get("emotion_words", [])
        if words is None:
            words = []
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f"{rec.where()}: emotion_words must be a list of strings")
        words = [normalise_text(w) for w in words if normalise_text(w)]
        if emotion == REFERENCE and words:
            raise DataError(f"{rec.where()}: neutral rows must have no emotion_words, got {words}")
        for word in words:
            if not find_word_spans(text, word):
                raise DataError(f"{rec.where()}: emotion word {word!r} does not occur in the text")
        _claim_id(rec, ident, seen_ids)
        key = text.casefold()
        if key in seen_text:
            first_label, first_where = seen_text[key]
            if first_label != emotion:
                raise DataError(f"{rec.where()}: same text as {first_where} but labelled {emotion!r} vs {first_label!r}")
            duplicates += 1
            continue
        seen_text[key] = (emotion, rec.where())
        extra = {k: v for k, v in rec.fields.items() if k == "register" and isinstance(v, str)}
        rows.append({"id": ident, "text": text, "emotion": emotion, "emotion_words": words,
                     "register": extra.get("register", ""), "n_words": len(text.split())})
    if not rows:
        raise DataError(f"{_sources(records)}: dataset has no rows")
    df = pd.DataFrame(rows).sort_values("id", kind="stable").reset_index(drop=True)
    missing = sorted(set(LABELS) - set(df["emotion"]))
    if missing:
        raise DataError(f"{_sources(records)}: dataset has no rows for emotion(s): {', '.join(missing)}")
    return df, duplicates


def stratified_split(df: pd.DataFrame, test_size: float, seed: int, source: str = "dataset") -> pd.Series:
    """Deterministic emotion-stratified fit/test assignment (depends only on ids, labels and seed).

    `source` names the file in errors: a split that cannot be made is a fault of that file (or of test_size)."""
    counts = df["emotion"].value_counts()
    if (counts < 2).any():
        raise DataError(f"{source}: each emotion needs >= 2 rows to split, got {counts.to_dict()}")
    try:
        fit_idx, test_idx = train_test_split(np.arange(len(df)), test_size=test_size, random_state=seed,
                                             stratify=df["emotion"].to_numpy())
    except ValueError as exc:  # e.g. fewer test rows than emotions
        raise DataError(f"{source}: cannot split {len(df)} rows with dataset.test_size={test_size} stratified "
                        f"by emotion ({exc})") from None
    split = np.empty(len(df), dtype=object)
    split[fit_idx] = "fit"
    split[test_idx] = "test"
    return pd.Series(split, index=df.index, name="split")


def select_profile(df: pd.DataFrame, profile: str, per_emotion: int, seed: int) -> pd.DataFrame:
    """`baseline` = every row; `smoke` = `per_emotion` rows per emotion, keeping both splits represented."""
    if profile == "baseline":
        return df
    rng = np.random.default_rng(seed)
    keys = pd.Series(rng.random(len(df)), index=df.index)
    keep = []
    for (_, split), group in df.groupby(["emotion", "split"], sort=True):
        share = (group.shape[0] / (df["emotion"] == group["emotion"].iloc[0]).sum())
        n = max(1, int(round(per_emotion * share)))
        keep.extend(keys.loc[group.index].sort_values(kind="stable").index[:n])
    return df.loc[sorted(keep)].reset_index(drop=True)


HANDWRITTEN, GOEMOTIONS = "handwritten", "goemotions"
GOEMOTIONS_FIELDS = ("id", "text", "emotion", "goemotions_label", "comment_id")
GOEMOTIONS_CLASSES = {"gratitude": "gratitude", "anger": "anger", "remorse": "apology", "neutral": "neutral"}
JUDGE_TRAIN_FIELDS = ("id", "text", "emotion", "source")


def validate_goemotions(records: Iterable[Record], max_tokens: int = 256) -> pd.DataFrame:
    """Validate the shipped GoEmotions subset; rows stay in FILE order, which is the rank order (the first N of a
    class are its N lowest hashes), and keep `where` (file:line) for cross-source errors.

    The file is generated (`python -m emotion_circuits.goemotions`), so any duplicate or unknown field is an edit
    by hand and an error, not something to fix silently."""
    rows: list[dict[str, Any]] = []
    seen_ids: dict[str, str] = {}
    seen_text: dict[str, str] = {}
    records = list(records)
    for rec in records:
        extra = sorted(set(rec.fields) - set(GOEMOTIONS_FIELDS))
        if extra:
            raise DataError(f"{rec.where()}: unexpected field(s) {', '.join(map(repr, extra))} (GoEmotions rows have "
                            f"{', '.join(GOEMOTIONS_FIELDS)})")
        ident, text, emotion = _labelled_row(rec, max_tokens)
        original = _require(rec, "goemotions_label")
        if GOEMOTIONS_CLASSES.get(original) != emotion:
            raise DataError(f"{rec.where()}: goemotions_label {original!r} does not map to emotion {emotion!r} "
                            f"(allowed: {', '.join(f'{k} -> {v}' for k, v in GOEMOTIONS_CLASSES.items())})")
        comment_id = _require(rec, "comment_id")
        if not isinstance(comment_id, str) or ident != f"ge-{comment_id}":
            raise DataError(f"{rec.where()}: id {ident!r} must be 'ge-' + comment_id ({comment_id!r})")
        _claim_id(rec, ident, seen_ids)
        key = text.casefold()
        if key in seen_text:
            raise DataError(f"{rec.where()}: same text as {seen_text[key]} (the subset has no duplicate texts)")
        seen_text[key] = rec.where()
        rows.append({"id": ident, "text": text, "emotion": emotion, "emotion_words": [], "register": "",
                     "n_words": len(text.split()), "where": rec.where()})
    if not rows:
        raise DataError(f"{_sources(records)}: dataset has no rows")
    return pd.DataFrame(rows)


def drop_cross_source(ge: pd.DataFrame, hand: pd.DataFrame, hand_path: str) -> tuple[pd.DataFrame, int]:
    """The two sources must not share an id, nor a text under different labels (that text would teach both);
    a GoEmotions row repeating a hand-written text with the same label is dropped (hand-written wins), counted."""
    hand_ids = set(hand["id"])
    hand_text = {t.casefold(): (i, e) for i, t, e in zip(hand["id"], hand["text"], hand["emotion"])}
    keep = []
    for ident, text, emotion, where in zip(ge["id"], ge["text"], ge["emotion"], ge["where"]):
        if ident in hand_ids:
            raise DataError(f"{where}: id {ident!r} is also a hand-written row id in {hand_path}")
        other = hand_text.get(text.casefold())
        if other is not None and other[1] != emotion:
            raise DataError(f"{where}: same text as hand-written row {other[0]!r} in {hand_path} but labelled "
                            f"{emotion!r} vs {other[1]!r}")
        keep.append(other is None)
    return ge.loc[keep].reset_index(drop=True), int(len(keep) - sum(keep))


def first_per_class(ge: pd.DataFrame, per_class: int, path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the first `per_class` rows of each class = sentences, the rest = the judges' pool), in file order."""
    heads, pools = [], []
    for label in LABELS:
        rows = ge[ge["emotion"] == label]
        if len(rows) < per_class:
            raise DataError(f"{path}: dataset.goemotions_per_class={per_class} but class {label!r} has only "
                            f"{len(rows)} rows")
        heads.append(rows.iloc[:per_class])
        pools.append(rows.iloc[per_class:])
    return pd.concat(heads, ignore_index=True), pd.concat(pools, ignore_index=True)


def _split_and_profile(df: pd.DataFrame, name: str, path: str, test_size: float, seed: int, profile: str,
                       per_emotion: int) -> pd.DataFrame:
    """One source's split (stratified by emotion within the source, so by (source, emotion) overall) and profile;
    splitting each source on its own keeps the hand-written split identical whatever the other source holds."""
    df = df.sort_values("id", kind="stable").reset_index(drop=True)
    df["split"] = stratified_split(df, test_size, seed, path)
    df["source"] = name
    return select_profile(df, profile, per_emotion, seed)


def build_dataset(path: str | Path, test_size: float, seed: int, profile: str, smoke_per_emotion: int,
                  max_tokens: int = 256, *, source: str = HANDWRITTEN, goemotions: str | Path | None = None,
                  goemotions_per_class: int = 240) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The dataset stage's core: (sentences, judge_train, metrics) for `dataset.source`.

    sentences = hand-written rows and/or the first `goemotions_per_class` GoEmotions rows of each class, split
    fit/test per source; judge_train = its fit rows + the GoEmotions rows beyond those (the pool, which no
    sentence-level result ever scores on). The smoke profile keeps `smoke_per_emotion` per source and emotion and
    as many pool rows per class."""
    parts, duplicates, cross, pool = [], 0, 0, pd.DataFrame(columns=["id", "text", "emotion"])
    hand = None
    if source in (HANDWRITTEN, "both"):
        hand, duplicates = validate_sentences(read_records(path), max_tokens)
        parts.append(_split_and_profile(hand, HANDWRITTEN, str(path), test_size, seed, profile, smoke_per_emotion))
    if source in (GOEMOTIONS, "both"):
        if goemotions is None:
            raise DataError(f"dataset.source={source!r} needs dataset.goemotions (the GoEmotions subset file)")
        ge = validate_goemotions(read_records(goemotions), max_tokens)
        if hand is not None:
            ge, cross = drop_cross_source(ge, hand, str(path))
        head, pool = first_per_class(ge.drop(columns="where"), goemotions_per_class, str(goemotions))
        parts.append(_split_and_profile(head, GOEMOTIONS, str(goemotions), test_size, seed, profile,
                                        smoke_per_emotion))
        if profile == "smoke":
            pool = pool.groupby("emotion", sort=False).head(smoke_per_emotion)
    if not parts:
        raise DataError(f"unknown dataset.source {source!r}")
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    df = df.sort_values("id", kind="stable").reset_index(drop=True)
    fit = df.loc[df["split"] == "fit", ["id", "text", "emotion", "source"]]
    pieces = [fit, pool[["id", "text", "emotion"]].assign(source=GOEMOTIONS)] if len(pool) else [fit]
    judge_train = pd.concat(pieces, ignore_index=True)
    judge_train = judge_train.sort_values("id", kind="stable").reset_index(drop=True)[list(JUDGE_TRAIN_FIELDS)]

    def counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
        return {label: {s: int(((rows["emotion"] == label) & (rows["split"] == s)).sum()) for s in ("fit", "test")}
                for label in LABELS}

    metrics = {
        "n_rows": int(len(df)),
        "duplicates_removed": int(duplicates),
        "profile": profile,
        "counts": counts(df),
        "mean_words": {label: round(float(df.loc[df["emotion"] == label, "n_words"].mean()), 3) for label in LABELS},
        "rows_with_emotion_words": int(sum(len(w) > 0 for w in df["emotion_words"])),
        "source": source,
        "counts_by_source": {name: counts(df[df["source"] == name]) for name in (HANDWRITTEN, GOEMOTIONS)
                             if (df["source"] == name).any()},
        "judge_pool": {label: int((pool["emotion"] == label).sum()) for label in LABELS},
        "n_judge_train": int(len(judge_train)),
        "cross_source_duplicates_removed": int(cross),
    }
    return df, judge_train, metrics


def build_sentences(path: str | Path, test_size: float, seed: int, profile: str,
                    smoke_per_emotion: int, max_tokens: int = 256) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Hand-written sentences only (read -> validate -> dedupe -> split -> profile): frame and metrics."""
    df, _, metrics = build_dataset(path, test_size, seed, profile, smoke_per_emotion, max_tokens)
    return df, metrics


def build_real_world(path: str | Path, max_tokens: int = 256) -> pd.DataFrame:
    """Real-world texts (posts, reviews, e-mails) with a dominant-emotion label, for steering evaluation."""
    rows, seen = [], set()
    for rec in read_records(path):
        ident, text, label = _identifier(rec), _text(rec), _require(rec, "label")
        _check_length(rec, ident, text, max_tokens)
        if label not in LABELS:
            raise DataError(f"{rec.where()}: unknown label {label!r} (allowed: {', '.join(LABELS)})")
        if ident in seen:
            raise DataError(f"{rec.where()}: duplicate id {ident!r}")
        seen.add(ident)
        rows.append({"id": ident, "text": text, "label": label, "source": str(rec.fields.get("source", ""))})
    return pd.DataFrame(rows).sort_values("id", kind="stable").reset_index(drop=True)


def build_prompts(path: str | Path, max_tokens: int = 256) -> pd.DataFrame:
    """Neutral sentence openings that steering continues."""
    rows, seen = [], set()
    for rec in read_records(path):
        ident, text = _identifier(rec), _text(rec)
        _check_length(rec, ident, text, max_tokens)
        if ident in seen:
            raise DataError(f"{rec.where()}: duplicate id {ident!r}")
        seen.add(ident)
        rows.append({"id": ident, "text": text})
    return pd.DataFrame(rows).sort_values("id", kind="stable").reset_index(drop=True)


def load_lexicons(path: str | Path) -> dict[str, list[str]]:
    """Per-emotion keyword lists for the offline evaluator; lower-case, disjoint, one list per emotion."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        raw = json.loads(decode_utf8(path, path.read_bytes()))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    if not isinstance(raw, dict) or set(raw) != set(EMOTIONS):
        raise DataError(f"{path}: expected an object with exactly the keys {', '.join(EMOTIONS)}")
    owner: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for emotion in EMOTIONS:
        words = raw[emotion]
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError(f"{path}: {emotion!r} must be a non-empty list of non-empty strings")
        clean = sorted({normalise_text(w).lower() for w in words})
        for w in clean:
            if w in owner:
                raise DataError(f"{path}: keyword {w!r} is listed under both {owner[w]!r} and {emotion!r}")
            owner[w] = emotion
        out[emotion] = clean
    return out
