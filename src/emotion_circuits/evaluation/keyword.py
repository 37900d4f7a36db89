"""The keyword judge: does a continuation contain an emotion's word at all (1) or not (0)? Its mean over prompts
is the "gratitude-word rate" the field's steering papers report, and the one judge every system (ours, repeng,
steering-vectors: `benchmarks/peers.py`) is measured by.

The word lists are fixed here, written before any steering run and never tuned on one: a rate that moves under
them moves because the text says the word. Unlike `lexicon` (hits per 100 words, lists extended from training
rows) the score is binary, so one word repeated thirty times counts once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EvaluatorInputs, Metric, scores_frame

# whole words, case-insensitive; a list's stem forms are spelled out (no stemming: "thanksgiving" is no thanks)
KEYWORDS: dict[str, tuple[str, ...]] = {
    "gratitude": ("thank", "thanks", "thankful", "grateful", "gratitude", "appreciate", "appreciated",
                  "appreciation"),
    "anger": ("angry", "anger", "furious", "mad", "rage", "outraged", "annoyed", "irritated", "frustrated",
              "livid", "pissed", "hate", "hated", "infuriating", "infuriated"),
    "apology": ("sorry", "apologize", "apologise", "apologized", "apologised", "apology", "apologies", "regret",
                "forgive", "my fault", "my mistake", "my bad"),
}

METRICS = tuple(Metric(f"kw_{e}", e, "kw", f"continuation contains a {e} word (0/1; mean = rate)")
                for e in EMOTIONS)


def pattern(words: Sequence[str]) -> re.Pattern:
    """Whole-word, case-insensitive alternation (longest first, so phrases win over their first word)."""
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))
    return re.compile(r"(?<![A-Za-z'])(?:" + alternatives + r")(?![A-Za-z'])", re.IGNORECASE)


PATTERNS = {e: pattern(KEYWORDS[e]) for e in EMOTIONS}


def keyword_hits(texts: Sequence[str], emotion: str) -> np.ndarray:
    """Per text, whether it contains one of `emotion`'s keywords (bool array): the rate is its mean."""
    return np.array([PATTERNS[emotion].search(t) is not None for t in texts], dtype=bool)


@EVALUATORS.register("keyword")
class KeywordEvaluator:
    name = "keyword"
    metrics = METRICS
    trained_on: frozenset[str] = frozenset()  # fixed lists, fitted on nothing

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> KeywordEvaluator:
        return cls()

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        return scores_frame(self.metrics, {f"kw_{e}": keyword_hits(texts, e).astype(float) for e in EMOTIONS})

    @staticmethod
    def classify(scores: pd.DataFrame) -> np.ndarray:
        """The first emotion (EMOTIONS order) whose word occurs; neutral when none does."""
        hits = scores[[m.column for m in METRICS]].to_numpy(dtype=float)
        if not len(hits):
            return np.array([], dtype=object)
        best = np.asarray(EMOTIONS, dtype=object)[hits.argmax(axis=1)]
        return np.where(hits.max(axis=1) > 0, best, REFERENCE).astype(object)
