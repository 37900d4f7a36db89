"""VADER compound sentiment (offline, rule-based): one score that is every emotion's own metric in the `vader`
family (gratitude and apology read positive, anger negative; the sign of an effect says which way it moved)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EVERY_EMOTION, EvaluatorInputs, Metric, scores_frame


@EVALUATORS.register("vader")
class VaderEvaluator:
    name = "vader"
    metrics = (Metric("vader_compound", EVERY_EMOTION, "vader", "positive sentiment (VADER compound, -1..1)"),)

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> VaderEvaluator:
        return cls()

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        return scores_frame(self.metrics, {"vader_compound": [self.analyzer.polarity_scores(t)["compound"]
                                                              for t in texts]})
