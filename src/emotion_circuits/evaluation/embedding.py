"""P(emotion) from a logistic classifier on all-MiniLM-L6-v2 sentence embeddings (the packaged model, offline),
fit on the dataset's fit split; its test-split accuracy is reported so users know how far to trust it."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from emotion_circuits import LABELS
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EvaluatorInputs, Metric, scores_frame
from emotion_circuits.evaluation.text import embed_texts


@EVALUATORS.register("embedding")
class EmbeddingEvaluator:
    name = "embedding"
    metrics = tuple(Metric(f"p_{label}", label, "p", f"{label} (MiniLM + logistic classifier probability)")
                    for label in LABELS)

    def __init__(self, sentences: pd.DataFrame, model_name: str = "minilm-l6", seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        from emotion_circuits.model.loading import load_model

        self.lm = load_model(model_name)
        fit, test = sentences["split"] == "fit", sentences["split"] == "test"
        x = embed_texts(self.lm, sentences["text"].tolist())
        self.classifier = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
        self.classifier.fit(x[fit.to_numpy()], sentences.loc[fit, "emotion"])
        self.test_accuracy = float(self.classifier.score(x[test.to_numpy()], sentences.loc[test, "emotion"]))

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> EmbeddingEvaluator:
        return cls(inputs.sentences, seed=inputs.seed)

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        proba = self.classifier.predict_proba(embed_texts(self.lm, texts))
        classes = list(self.classifier.classes_)
        return scores_frame(self.metrics, {m.column: proba[:, classes.index(m.emotion)] for m in self.metrics})
