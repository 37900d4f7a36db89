"""The offline lexicon scores: VADER sentiment plus keyword hits per 100 words for each emotion's lexicon
(`lexicons.json`). `lexicon` has always carried VADER, so `evaluators: [lexicon]` keeps its meaning; as a
classifier it reads the keywords only (VADER is validated as its own evaluator)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EvaluatorInputs, Metric, scores_frame
from emotion_circuits.evaluation.text import WORD
from emotion_circuits.evaluation.vader import VaderEvaluator

KEYWORD_METRICS = tuple(Metric(f"lex_{e}", e, "lex", f"{e} keywords (hits per 100 words)") for e in EMOTIONS)


@EVALUATORS.register("lexicon")
class LexiconEvaluator:
    name = "lexicon"
    metrics = (*VaderEvaluator.metrics, *KEYWORD_METRICS)
    trained_on: frozenset[str] = frozenset()  # hand-chosen keywords (from judge_train rows only), fitted on none

    def __init__(self, lexicons: Mapping[str, Sequence[str]]):
        missing = [e for e in EMOTIONS if e not in lexicons]
        if missing:
            raise ValueError(f"lexicon evaluator: no keyword list for {missing}")
        self.vader = VaderEvaluator()
        # longest phrase first, so "thank you" is one hit, not "thank" + ...; whole words only
        self.patterns = {e: re.compile(r"(?<![A-Za-z'])(?:" + "|".join(re.escape(w) for w in sorted(
            lexicons[e], key=len, reverse=True)) + r")(?![A-Za-z'])", re.IGNORECASE) for e in EMOTIONS}

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> LexiconEvaluator:
        return cls(inputs.lexicons)

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        n_words = [max(len(WORD.findall(t)), 1) for t in texts]
        hits = {f"lex_{e}": [100.0 * len(p.findall(t)) / n for t, n in zip(texts, n_words)]
                for e, p in self.patterns.items()}
        return scores_frame(self.metrics, {**self.vader.score(texts).to_dict("list"), **hits})

    @staticmethod
    def classify(scores: pd.DataFrame) -> np.ndarray:
        """The emotion with the most keyword hits (ties: the first in EMOTIONS order); neutral when none hit."""
        hits = scores[[m.column for m in KEYWORD_METRICS]].to_numpy(dtype=float)
        best = np.asarray(EMOTIONS, dtype=object)[hits.argmax(axis=1)] if len(hits) else np.array([], dtype=object)
        return np.where(hits.max(axis=1, initial=0.0) > 0, best, REFERENCE).astype(object)
