"""Scoring generated text: what emotion does it carry, and is it still language?

Backends share one interface, `score(texts) -> DataFrame` (one row per text, one column per metric):
- `lexicon` (offline, always available): VADER sentiment + the project's per-emotion keyword lexicons.
- `embedding` (offline, model-based): all-MiniLM-L6-v2 sentence embeddings (the packaged model) + a logistic
  classifier fit on the dataset's fit split, giving P(gratitude/anger/apology/neutral); its test accuracy is
  reported so users know how far to trust it.
- `hf`: the seeds' hub classifiers, where the hub is reachable (clear error otherwise).
Every metric's direction is in `METRIC_DIRECTIONS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from emotion_circuits import EMOTIONS, LABELS
from emotion_circuits.errors import ModelLoadError
from emotion_circuits.model.padding import pad_with_mask
from emotion_circuits.runtime.resources import run_with_backoff

METRIC_DIRECTIONS = {
    "vader_compound": "higher = more positive sentiment (VADER, -1..1)",
    **{f"lex_{e}": f"higher = more {e} keywords (hits per 100 words)" for e in EMOTIONS},
    **{f"p_{e}": f"higher = more {e} (MiniLM + logistic classifier probability)" for e in LABELS},
    "nll": "higher = less fluent (unsteered model's mean per-token NLL of the continuation, nats)",
    "repetition": "higher = more looping (share of repeated word trigrams)",
}
HF_CLASSIFIERS = ("cardiffnlp/twitter-roberta-base-sentiment-latest", "NOVA-vision-language/polite_bert",
                  "SamLowe/roberta-base-go_emotions")
_WORD = re.compile(r"[A-Za-z']+")


class LexiconEvaluator:
    """VADER compound sentiment and keyword frequency per 100 words for each emotion lexicon."""

    name = "lexicon"

    def __init__(self, lexicons: dict[str, list[str]]):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.vader = SentimentIntensityAnalyzer()
        self.patterns = {e: re.compile(r"(?<![A-Za-z'])(?:" + "|".join(re.escape(w) for w in sorted(
            words, key=len, reverse=True)) + r")(?![A-Za-z'])", re.IGNORECASE) for e, words in lexicons.items()}

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        rows = []
        for text in texts:
            n_words = max(len(_WORD.findall(text)), 1)
            row = {"vader_compound": self.vader.polarity_scores(text)["compound"]}
            row.update({f"lex_{e}": 100.0 * len(p.findall(text)) / n_words for e, p in self.patterns.items()})
            rows.append(row)
        return pd.DataFrame(rows, columns=["vader_compound", *[f"lex_{e}" for e in self.patterns]])


def embed_texts(lm, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings: attention-masked mean of the last hidden state, L2-normalised (MiniLM's recipe)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = lm.tokenizer(list(texts[start: start + batch_size]), padding=True, truncation=True,
                               max_length=256, return_tensors="pt")
            hidden = lm.hf_model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, lm.d_model), dtype=np.float32)


class EmbeddingEvaluator:
    """P(emotion) from a classifier on MiniLM embeddings, trained on the dataset's fit split."""

    name = "embedding"

    def __init__(self, sentences: pd.DataFrame, model_name: str = "minilm-l6", seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        from emotion_circuits.model.loading import load_model

        self.lm = load_model(model_name)
        fit, test = sentences["split"] == "fit", sentences["split"] == "test"
        x = embed_texts(self.lm, sentences["text"].tolist())
        self.classifier = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
        self.classifier.fit(x[fit.to_numpy()], sentences.loc[fit, "emotion"])
        self.test_accuracy = float(self.classifier.score(x[test.to_numpy()], sentences.loc[test, "emotion"]))

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        proba = self.classifier.predict_proba(embed_texts(self.lm, texts))
        columns = {f"p_{label}": proba[:, list(self.classifier.classes_).index(label)] for label in LABELS}
        return pd.DataFrame(columns)


class HFEvaluator:
    """The seeds' three hub classifiers (sentiment, politeness, GoEmotions); needs the hub or a warm cache."""

    name = "hf"

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

    def score(self, texts: Sequence[str]) -> pd.DataFrame:
        columns: dict[str, list[float]] = {}
        for model_id, pipe in self.pipes.items():
            short = model_id.rstrip("/").split("/")[-1]
            labels = [pipe.model.config.id2label[i] for i in sorted(pipe.model.config.id2label)]
            # every label's probability for every text (top_k=None, which sorts by score: re-keyed by label so
            # columns come in the model's label order), in input order, one batched pass per model
            rows = [{item["label"]: float(item["score"]) for item in scores}
                    for scores in pipe(list(texts), batch_size=self.batch_size, truncation=True)]
            for label in labels:
                columns[f"hf_{short}_{label.lower()}"] = [row[label] for row in rows]
        return pd.DataFrame(columns)


def repetition_rate(text: str) -> float:
    """Share of word trigrams that already occurred earlier in the text (loops, 'thank thank thank')."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = list(zip(words, words[1:], words[2:]))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def continuation_nll(lm, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                     batch_size: int = 32) -> np.ndarray:
    """Mean per-token negative log-likelihood of each continuation under the (unsteered) model.

    Teacher-forced with right padding: rows never attend to pads, so batching does not change the value.
    """
    out = np.full(len(prompts), np.nan)
    pad = lm.tokenizer.pad_token_id

    def run(lo: int, hi: int) -> None:
        rows = list(range(lo, hi))
        ids, mask = pad_with_mask([list(prompts[i]) + list(continuations[i]) for i in rows], pad, "right")
        logits = lm.hf_model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        for j, i in enumerate(rows):
            p, c = len(prompts[i]), len(continuations[i])
            if c == 0:
                continue
            targets = torch.tensor(list(continuations[i]))
            out[i] = float(-logp[j, p - 1: p - 1 + c].gather(1, targets[:, None]).mean())

    with torch.inference_mode():
        run_with_backoff(len(prompts), batch_size, run, f"fluency NLL {lm.name}")
    return out


def build_evaluators(names: Sequence[str], lexicons: dict[str, list[str]], sentences: pd.DataFrame, seed: int):
    """Instantiate the requested backends once (models load once per stage)."""
    makers = {"lexicon": lambda: LexiconEvaluator(lexicons),
              "embedding": lambda: EmbeddingEvaluator(sentences, seed=seed),
              "hf": HFEvaluator}
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown evaluator(s) {unknown} (allowed: {', '.join(makers)})")
    return [makers[n]() for n in names]


def score_all(evaluators, texts: Sequence[str]) -> pd.DataFrame:
    frames = [ev.score(texts).reset_index(drop=True) for ev in evaluators]
    out = pd.concat(frames, axis=1) if frames else pd.DataFrame(index=range(len(texts)))
    out["repetition"] = [repetition_rate(t) for t in texts]
    return out
