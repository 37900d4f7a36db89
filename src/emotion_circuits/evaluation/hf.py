"""The seeds' hub classifiers (sentiment, politeness, GoEmotions): every label's probability, `hf_<model>_<label>`.
Hub-only: offline without a warm cache it is one clear `ModelLoadError`, never a traceback."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from emotion_circuits.errors import ModelLoadError
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EvaluatorInputs, Metric, scores_frame

HF_CLASSIFIERS = ("cardiffnlp/twitter-roberta-base-sentiment-latest", "NOVA-vision-language/polite_bert",
                  "SamLowe/roberta-base-go_emotions")
EMOTION_LABELS = {"gratitude": "gratitude", "anger": "anger", "remorse": "apology"}  # classifier label -> emotion
_OWN_MODEL = "roberta-base-go_emotions"  # the default classifier whose labels are the emotions' own hf metrics


def label_metric(model_id: str, label: str) -> Metric:
    short = model_id.rstrip("/").split("/")[-1]
    return Metric(f"hf_{short}_{label.lower()}", EMOTION_LABELS.get(label.lower()), "hf",
                  f"{label} ({short} probability)")


@EVALUATORS.register("hf")
class HFEvaluator:
    name = "hf"
    # known before any model loads (statistics reads them): the GoEmotions labels that name our emotions
    metrics = tuple(label_metric(f"SamLowe/{_OWN_MODEL}", label) for label in EMOTION_LABELS)

    def __init__(self, model_ids: Sequence[str] = HF_CLASSIFIERS, batch_size: int = 32):
        from transformers import pipeline

        self.batch_size = batch_size
        self.pipes = {}
        for model_id in model_ids:
            try:
                self.pipes[model_id] = pipeline("text-classification", model=model_id, top_k=None)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(
                    f"evaluator backend 'hf' needs {model_id!r}, which is not cached and the hub is unreachable "
                    f"({type(exc).__name__}). Use the offline backends (evaluators: [lexicon, embedding]).") from None
        self.labels = {m: [p.model.config.id2label[i] for i in sorted(p.model.config.id2label)]
                       for m, p in self.pipes.items()}
        self.metrics = tuple(label_metric(m, label) for m, labels in self.labels.items() for label in labels)

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> HFEvaluator:
        return cls()

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        columns: dict[str, list[float]] = {}
        for model_id, pipe in self.pipes.items():
            # every label's probability for every text (top_k=None sorts by score: re-keyed by label), in input
            # order, one batched pass per model
            rows = [{item["label"]: float(item["score"]) for item in scores}
                    for scores in pipe(list(texts), batch_size=self.batch_size, truncation=True)]
            for label in self.labels[model_id]:
                columns[label_metric(model_id, label).column] = [row[label] for row in rows]
        return scores_frame(self.metrics, columns)
