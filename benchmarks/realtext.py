"""Benchmark the real-text machinery (issue 16) in one run, as CPU-time ratios (`time.process_time`: wall time
swings 2x on shared machines):

1. the transfer null: permuted-label directions as one matrix product (`DirectionMethod.fit_permuted` with
   `vectorised_null`) against refitting the method once per permutation, for `vector`, `specific` and `lda`
   (checked equal), on an activation-sized matrix;
2. the embedding judge: building it (embed + fit) and scoring, today's recipe (MiniLM + TF-IDF n-grams) against
   the previous one (MiniLM + logistic), on results/dataset/judge_train.parquet, with both recipes' balanced
   accuracy on the GoEmotions test split (never trained on) so cost and gain sit side by side.

Usage: python benchmarks/realtext.py [--rows 1440] [--dim 576] [--n-perm 50]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from emotion_circuits import LABELS
from emotion_circuits.directions.methods import METHODS


def cpu(fn):
    """(result, CPU seconds of this process) of fn()."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def transfer_null(rows: int, dim: int, n_perm: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = np.asarray(LABELS, dtype=object)[rng.integers(0, len(LABELS), rows)]
    x = rng.normal(size=(rows, dim)) + 0.5 * (labels[:, None] == np.asarray(LABELS)[None, :]).astype(float) @ \
        rng.normal(size=(len(LABELS), dim))
    sets = np.stack([rng.permutation(labels) for _ in range(n_perm)])
    print(f"transfer null: {n_perm} permuted-label refits of an [{rows}, {dim}] fit matrix")
    print(f"{'method':<10}{'vectorised s':>14}{'refit loop s':>14}{'ratio':>8}{'max |diff|':>12}")
    for name in ("vector", "specific", "lda"):
        method = METHODS[name]
        fast, t_fast = cpu(lambda: method.fit_permuted(x, sets))
        slow, t_slow = cpu(lambda: np.stack([method.fit(x, s) for s in sets]))
        diff = float(np.max(np.abs(np.asarray(fast, dtype=np.float64) - slow)) / max(np.abs(slow).max(), 1e-30))
        print(f"{name:<10}{t_fast:>14.3f}{t_slow:>14.3f}{t_slow / max(t_fast, 1e-9):>7.1f}x{diff:>12.1e}")


def judges(dataset_dir: Path, seed: int = 0) -> None:
    from emotion_circuits.evaluation.embedding import RECIPE, EmbeddingEvaluator, Recipe
    from emotion_circuits.evaluation.validation import portions, validate
    from emotion_circuits.store.io import read_parquet

    train = read_parquet(dataset_dir / "judge_train.parquet")
    held = portions(read_parquet(dataset_dir / "sentences.parquet"))
    previous = Recipe(embedding_weight=1.0, word_ngrams=None, char_ngrams=None, C=10.0, class_weight=None)
    print(f"\nembedding judge: {len(train)} training rows; real text = the GoEmotions test split")
    print(f"{'recipe':<24}{'build CPU s':>12}{'score texts/CPU s':>19}{'real-text BA':>14}{'in-domain BA':>14}")
    for label, recipe in (("MiniLM + logistic", previous), ("MiniLM + n-grams (now)", RECIPE)):
        judge, t_build = cpu(lambda: EmbeddingEvaluator(train, seed=seed, recipe=recipe))
        texts = train["text"].tolist()[:1000]
        _, t_score = cpu(lambda: judge.score(texts))
        real = validate(judge, held["real_text"], n_boot=1, seed=seed)["balanced_accuracy"] if "real_text" in held else None
        home = validate(judge, held["in_domain"], n_boot=1, seed=seed)["balanced_accuracy"] if "in_domain" in held else None
        fmt = lambda v: f"{v:>14.3f}" if v is not None else f"{'-':>14}"  # noqa: E731
        print(f"{label:<24}{t_build:>12.1f}{len(texts) / max(t_score, 1e-9):>19.0f}{fmt(real)}{fmt(home)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1440, help="fit rows of the transfer null (default: both sources)")
    ap.add_argument("--dim", type=int, default=576, help="activation width (576 = SmolLM2-135M)")
    ap.add_argument("--n-perm", type=int, default=50, help="permutations timed per method")
    ap.add_argument("--dataset", type=Path, default=Path("results/dataset"), help="the dataset stage's outs")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    transfer_null(args.rows, args.dim, args.n_perm)
    if (args.dataset / "judge_train.parquet").exists():
        judges(args.dataset)
    else:
        print(f"\n{args.dataset}/judge_train.parquet missing: run `dvc repro dataset` for the judge benchmark")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
