"""VADER compound sentiment (offline, rule-based): one score that is every emotion's own metric in the `vader`
family (gratitude and apology read positive, anger negative; the sign of an effect says which way it moved).

As a classifier (validation only) it can say gratitude / anger / neutral and never apology: one polarity axis
has no place for remorse, which reads negative or positive depending on wording."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EVERY_EMOTION, EvaluatorInputs, Metric, scores_frame


@EVALUATORS.register("vader")
class VaderEvaluator:
    name = "vader"
    metrics = (Metric("vader_compound", EVERY_EMOTION, "vader", "positive sentiment (VADER compound, -1..1)"),)
    trained_on: frozenset[str] = frozenset()  # rule-based

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> VaderEvaluator:
        return cls()

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        return scores_frame(self.metrics, {"vader_compound": [self.analyzer.polarity_scores(t)["compound"]
                                                              for t in texts]})

    @staticmethod
    def classify(scores: pd.DataFrame) -> np.ndarray:
        """VADER's documented thresholds: compound >= 0.05 positive (-> gratitude), <= -0.05 negative (-> anger),
        else neutral. Apology cannot be represented."""
        return vader_labels(scores["vader_compound"].to_numpy(dtype=float))


POSITIVE, NEGATIVE = 0.05, -0.05  # VADER's README thresholds on the compound score


def vader_labels(compound: np.ndarray) -> np.ndarray:
    return np.where(compound >= POSITIVE, "gratitude", np.where(compound <= NEGATIVE, "anger", "neutral")).astype(object)
