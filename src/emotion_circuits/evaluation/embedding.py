"""P(emotion) from one balanced logistic regression on MiniLM sentence embeddings + TF-IDF word and character
n-grams (the packaged all-MiniLM-L6-v2, offline), trained on `judge_train.parquet` (hand-written fit rows + the
real-text GoEmotions rows no validation portion holds).

Why this recipe: MiniLM mean-pooling + logistic alone reached 0.65 balanced accuracy on real comments; the
n-grams carry the surface cues real anger and remorse use ("wtf", "sorry for", swearing) that a sentence
embedding of short Reddit text blurs. Chosen by 5-fold cross-validation within judge_train (see `cross_validate`
and the README), never on a validation portion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emotion_circuits import LABELS
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import EvaluatorInputs, Metric, argmax_labels, scores_frame
from emotion_circuits.evaluation.text import embed_texts


@dataclass(frozen=True)
class Recipe:
    """The judge's features and classifier. `embedding_weight` scales the unit-norm MiniLM vector against the
    unit-norm TF-IDF blocks (one L2 penalty over all of them, so the weight is the embedding's share)."""

    embedding_weight: float = 0.5
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    min_df: int = 2
    C: float = 10.0
    class_weight: str | None = "balanced"


RECIPE = Recipe()


class _Features:
    """TF-IDF vocabularies fit on the training texts only, stacked beside the weighted embedding."""

    def __init__(self, texts: Sequence[str], recipe: Recipe):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.recipe = recipe
        self.vectorizers = [v for v in (
            TfidfVectorizer(ngram_range=recipe.word_ngrams, min_df=recipe.min_df, sublinear_tf=True)
            if recipe.word_ngrams else None,
            TfidfVectorizer(analyzer="char_wb", ngram_range=recipe.char_ngrams, min_df=recipe.min_df,
                            sublinear_tf=True) if recipe.char_ngrams else None) if v is not None]
        for v in self.vectorizers:
            v.fit(list(texts))

    def __call__(self, texts: Sequence[str], embeddings: np.ndarray):
        import scipy.sparse as sp

        blocks = [sp.csr_matrix(embeddings * self.recipe.embedding_weight)] if self.recipe.embedding_weight else []
        blocks += [v.transform(list(texts)) for v in self.vectorizers]
        return sp.hstack(blocks).tocsr()


class _Judge:
    """Features + classifier fit on one set of rows; `proba` in LABELS order."""

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray, labels: Sequence[str], recipe: Recipe,
                 seed: int):
        from sklearn.linear_model import LogisticRegression

        self.features = _Features(texts, recipe)
        self.classifier = LogisticRegression(C=recipe.C, class_weight=recipe.class_weight, max_iter=3000,
                                             random_state=seed)
        self.classifier.fit(self.features(texts, embeddings), list(labels))

    def proba(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        p = self.classifier.predict_proba(self.features(texts, embeddings))
        classes = list(self.classifier.classes_)
        return np.stack([p[:, classes.index(label)] if label in classes else np.zeros(len(texts))
                         for label in LABELS], axis=1)


def _check_train(train: pd.DataFrame | None) -> pd.DataFrame:
    from emotion_circuits.errors import DataError

    if train is None or not {"id", "text", "emotion"} <= set(train.columns) or train.empty:
        raise DataError("embedding evaluator: needs training rows (results/dataset/judge_train.parquet with id, "
                        "text, emotion); run the dataset stage")
    if "split" in train.columns and (train["split"] != "fit").any():
        raise DataError("embedding evaluator: training rows include non-fit rows (a split column with 'test'): "
                        "pass judge_train.parquet, never sentences.parquet")
    return train.reset_index(drop=True)


@EVALUATORS.register("embedding")
class EmbeddingEvaluator:
    name = "embedding"
    metrics = tuple(Metric(f"p_{label}", label, "p", f"{label} (MiniLM + n-gram logistic classifier probability)")
                    for label in LABELS)

    def __init__(self, train: pd.DataFrame, model_name: str = "minilm-l6", seed: int = 0,
                 recipe: Recipe = RECIPE):
        from emotion_circuits.model.loading import load_model

        train = _check_train(train)
        self.lm = load_model(model_name)
        self.recipe, self.seed = recipe, seed
        self.trained_on: frozenset[str] = frozenset(train["id"])
        self.train_embeddings = embed_texts(self.lm, train["text"].tolist())
        self.train = train
        self.judge = _Judge(train["text"].tolist(), self.train_embeddings, train["emotion"].tolist(), recipe, seed)

    @classmethod
    def build(cls, inputs: EvaluatorInputs) -> EmbeddingEvaluator:
        return cls(inputs.train, seed=inputs.seed)

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        proba = self.judge.proba(texts, embed_texts(self.lm, texts))
        return scores_frame(self.metrics, {m.column: proba[:, i] for i, m in enumerate(self.metrics)})

    @staticmethod
    def classify(scores: pd.DataFrame) -> np.ndarray:
        """The most probable label."""
        return argmax_labels(scores, [f"p_{label}" for label in LABELS], list(LABELS))

    def cross_validate(self, folds: int = 5) -> dict:
        """Balanced accuracy of out-of-fold predictions over the training rows (stratified by source x emotion;
        features refit per fold): the figure the recipe was chosen by, per source. Training rows only."""
        from sklearn.metrics import balanced_accuracy_score
        from sklearn.model_selection import StratifiedKFold

        t = self.train
        strata = (t["source"] if "source" in t else "all").astype(str) + "/" + t["emotion"].astype(str)
        if strata.value_counts().min() < folds:  # a source too small to stratify by (tiny test frames)
            strata = t["emotion"].astype(str)
        texts, labels = t["text"].to_numpy(), t["emotion"].to_numpy()
        pred = np.empty(len(t), dtype=object)
        for fit, held in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(texts, strata):
            judge = _Judge(texts[fit].tolist(), self.train_embeddings[fit], labels[fit].tolist(), self.recipe,
                           self.seed)
            pred[held] = np.asarray(LABELS)[judge.proba(texts[held].tolist(), self.train_embeddings[held])
                                            .argmax(1)]
        sources = t["source"].to_numpy() if "source" in t else np.full(len(t), "all")
        return {"folds": folds, **{str(s): round(float(balanced_accuracy_score(labels[sources == s],
                                                                              pred[sources == s])), 4)
                                   for s in sorted(set(sources))}}
