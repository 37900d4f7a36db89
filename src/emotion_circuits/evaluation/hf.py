"""The seeds' hub classifiers (sentiment, politeness, GoEmotions): every label's probability, `hf_<model>_<label>`.
Hub-only: offline without a warm cache it is one clear `ModelLoadError`, never a traceback.

As a classifier: the GoEmotions model's argmax over its gratitude / anger / remorse (-> apology) / neutral labels
(the project's classes are GoEmotions classes, so that mapping is the model's own). That model was fine-tuned on
the GoEmotions training split, which every `ge-` row comes from: its real-text figure would be measured on its own
training rows, so `trained_on` holds every `ge-` id and validation refuses them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emotion_circuits.errors import ModelLoadError
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EvaluatorInputs, Metric, argmax_labels, scores_frame

HF_CLASSIFIERS = ("cardiffnlp/twitter-roberta-base-sentiment-latest", "NOVA-vision-language/polite_bert",
                  "SamLowe/roberta-base-go_emotions")
EMOTION_LABELS = {"gratitude": "gratitude", "anger": "anger", "remorse": "apology"}  # classifier label -> emotion
_OWN_MODEL = "roberta-base-go_emotions"  # the default classifier whose labels are the emotions' own hf metrics
DECISION_LABELS = {"gratitude": "gratitude", "anger": "anger", "apology": "remorse", "neutral": "neutral"}


class IdsWithPrefix:
    """Every id starting with `prefix` (a training set known by its source, not enumerated)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __contains__(self, ident: object) -> bool:
        return isinstance(ident, str) and ident.startswith(self.prefix)


def label_metric(model_id: str, label: str) -> Metric:
    short = model_id.rstrip("/").split("/")[-1]
    return Metric(f"hf_{short}_{label.lower()}", EMOTION_LABELS.get(label.lower()), "hf",
                  f"{label} ({short} probability)")


@EVALUATORS.register("hf")
class HFEvaluator:
    name = "hf"
    # known before any model loads (statistics reads them): the GoEmotions labels that name our emotions
    metrics = tuple(label_metric(f"SamLowe/{_OWN_MODEL}", label) for label in EMOTION_LABELS)
    trained_on = IdsWithPrefix("ge-")  # roberta-base-go_emotions was fine-tuned on the GoEmotions training split

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

    @staticmethod
    def classify(scores: pd.DataFrame) -> np.ndarray:
        """The GoEmotions model's most probable of its four labels that are our classes."""
        columns = [f"hf_{_OWN_MODEL}_{DECISION_LABELS[label]}" for label in DECISION_LABELS]
        return argmax_labels(scores, columns, list(DECISION_LABELS))
