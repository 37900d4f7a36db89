"""The shipped real-text subset: a deterministic, attributed selection from the GoEmotions TRAIN split.

GoEmotions (Demszky et al., ACL 2020; CC BY 4.0) labels Reddit comments with 27 emotions or neutral. We keep the
single-label rows of anger, gratitude, remorse (-> apology) and neutral, ranked by a hash of the comment id, so the
selection depends on nothing but the file's content and "the first N of a class" is a fixed, reproducible subset.
Dev/test splits are never read (they are not shipped, and the project must not tune on them).

    python -m emotion_circuits.goemotions --source ../shared/external/goemotions --out data/goemotions/goemotions.jsonl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from emotion_circuits import LABELS
from emotion_circuits.data import GOEMOTIONS_CLASSES as CLASS_MAP  # GE label -> ours; the dataset stage checks it
from emotion_circuits.data import GOEMOTIONS_FIELDS as FIELDS  # the shipped file's fields, as the stage reads them
from emotion_circuits.data import normalise_text
from emotion_circuits.errors import DataError, UserError

# sha256 of the source files, copied from ../shared/external/goemotions/README.md: a different file (another mirror,
# another split, a re-encoded copy) would silently give a different subset, so it is refused.
TRAIN_SHA256 = "1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5"
LABELS_SHA256 = "45c3ef86782d2a4d7fedcd6d8c111aa0d0e94720689bd164fac94fefb4495a89"

MIN_WORDS, MAX_WORDS = 3, 64
PER_CLASS = 1000


def rank_key(comment_id: str) -> str:
    """The within-class order: a hash, so no property of the text or of the file's row order picks the subset."""
    return hashlib.sha256(comment_id.encode()).hexdigest()


def _parse_rows(tsv_text: str, label_names: Sequence[str], where: str) -> list[tuple[int, str, list[int], str]]:
    """(line, text, label ids, comment_id) per row. The file is tab-separated with CSV-style quoting of texts that
    contain quotes (a doubled quote inside a quoted field), which csv undoes; a malformed row is one error naming
    file:line."""
    reader = csv.reader(io.StringIO(tsv_text, newline=""), delimiter="\t", quotechar='"')
    rows = []
    try:
        while True:
            lineno = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row:
                continue
            if len(row) != 3:
                raise DataError(f"{where}:{lineno}: expected 3 tab-separated fields (text, label ids, comment_id), "
                                f"got {len(row)}")
            text, ids, comment_id = row
            try:
                labels = [int(x) for x in ids.split(",")]
            except ValueError:
                raise DataError(f"{where}:{lineno}: label ids must be comma-separated integers, got {ids!r}") from None
            if any(not 0 <= x < len(label_names) for x in labels):
                raise DataError(f"{where}:{lineno}: label id out of range 0..{len(label_names) - 1} in {ids!r}")
            if not comment_id.strip():
                raise DataError(f"{where}:{lineno}: empty comment_id")
            rows.append((lineno, text, labels, comment_id.strip()))
    except csv.Error as exc:
        raise DataError(f"{where}:{reader.line_num}: malformed TSV ({exc})") from None
    return rows


def select_goemotions(tsv_text: str, label_names: list[str], per_class: int = PER_CLASS,
                      where: str = "train.tsv") -> pd.DataFrame:
    """The selection rule (data/goemotions/README.md): exactly one label among anger/gratitude/remorse/neutral;
    text normalised; MIN_WORDS..MAX_WORDS words; case-folded duplicate texts dropped keeping the lowest rank (across
    classes, so no text carries two labels); at most `per_class` lowest-rank rows per class; sorted by
    (LABELS order, rank). Columns: FIELDS."""
    missing = sorted(set(CLASS_MAP) - set(label_names))
    if missing:
        raise DataError(f"{where}: label names lack {', '.join(missing)}")
    keep = {label_names.index(name): name for name in CLASS_MAP}
    candidates, seen_ids = [], {}
    for lineno, raw, labels, comment_id in _parse_rows(tsv_text, label_names, where):
        if len(labels) != 1 or labels[0] not in keep:
            continue
        if comment_id in seen_ids:
            raise DataError(f"{where}:{lineno}: duplicate comment_id {comment_id!r} (first at line "
                            f"{seen_ids[comment_id]})")
        seen_ids[comment_id] = lineno
        text = normalise_text(raw)
        if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            continue
        name = keep[labels[0]]
        candidates.append((rank_key(comment_id), comment_id, text, name))
    candidates.sort()
    taken: set[str] = set()
    per: dict[str, list[dict[str, str]]] = {label: [] for label in LABELS}
    for _, comment_id, text, name in candidates:  # lowest rank first, so the first of duplicates is kept
        key = text.casefold()
        if key in taken:
            continue
        taken.add(key)
        emotion = CLASS_MAP[name]
        if len(per[emotion]) < per_class:
            per[emotion].append({"id": f"ge-{comment_id}", "text": text, "emotion": emotion,
                                 "goemotions_label": name, "comment_id": comment_id})
    rows = [row for label in LABELS for row in per[label]]
    return pd.DataFrame(rows, columns=list(FIELDS))


def to_jsonl(df: pd.DataFrame) -> str:
    """One object per line, sorted keys, raw UTF-8, "\\n" line ends: the same selection is the same bytes."""
    return "".join(json.dumps({k: row[k] for k in FIELDS}, sort_keys=True, ensure_ascii=False) + "\n"
                   for row in df.to_dict("records"))


def _verified(path: Path, expected: str) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise DataError(f"{path}: sha256 {got} does not match the expected {expected} (not the GoEmotions train "
                        f"split this subset is defined on)")
    return raw.decode("utf-8")


def build(source: str | Path, out: str | Path, per_class: int = PER_CLASS) -> pd.DataFrame:
    """Verify the source files, select, and write `out` atomically (no half-written file on failure)."""
    source, out = Path(source), Path(out)
    tsv = _verified(source / "train.tsv", TRAIN_SHA256)
    names = [n.strip() for n in _verified(source / "labels.txt", LABELS_SHA256).splitlines() if n.strip()]
    df = select_goemotions(tsv, names, per_class, where=str(source / "train.tsv"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(to_jsonl(df).encode("utf-8"))
    os.replace(tmp, out)
    return df


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotion_circuits.goemotions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder holding GoEmotions train.tsv and labels.txt")
    parser.add_argument("--out", required=True, help="JSONL file to write (e.g. data/goemotions/goemotions.jsonl)")
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="most rows per class (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.per_class < 1:
            raise UserError(f"--per-class must be a positive integer, got {args.per_class}")
        df = build(args.source, args.out, args.per_class)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    counts = df["emotion"].value_counts()
    print(f"wrote {len(df)} rows to {args.out}: " + ", ".join(f"{k} {int(counts.get(k, 0))}" for k in LABELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
