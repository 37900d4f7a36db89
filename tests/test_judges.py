"""Judges validated on held-out text: each evaluator's decision rule, the per-class figures against sklearn, the
training-row guard (no accuracy measured on a judge's own training rows) and the judges stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from emotion_circuits import LABELS
from emotion_circuits.errors import DataError
from emotion_circuits.evaluation import validation
from emotion_circuits.evaluation.embedding import EmbeddingEvaluator
from emotion_circuits.evaluation.hf import HFEvaluator
from emotion_circuits.evaluation.lexicon import LexiconEvaluator
from emotion_circuits.evaluation.vader import VaderEvaluator

from .conftest import ROOT

LEXICONS = {"gratitude": ["thank you", "thanks"], "anger": ["outrageous", "furious"], "apology": ["sorry"]}
REAL = [  # stand-ins for GoEmotions comments (ids "ge-"), two per class
    ("ge-g1", "Thanks man, this helped me a lot.", "gratitude"), ("ge-g2", "Thank you for posting this!", "gratitude"),
    ("ge-a1", "This is so outrageous, I am furious.", "anger"), ("ge-a2", "Stop lying, you idiot.", "anger"),
    ("ge-p1", "Sorry, I was wrong about that.", "apology"), ("ge-p2", "My bad, I misread your post.", "apology"),
    ("ge-n1", "The game starts at eight tonight.", "neutral"), ("ge-n2", "He moved to Ohio last year.", "neutral"),
]


@pytest.fixture(scope="module")
def frames():
    """A small sentences.parquet (hand-written smoke profile + a real-text test portion) and its judge_train."""
    from emotion_circuits.data import build_sentences

    hand, _ = build_sentences(ROOT / "data/emotions.jsonl", 0.25, 0, "smoke", 24)
    hand = hand.assign(source="handwritten")[["id", "text", "emotion", "split", "source"]]
    real = pd.DataFrame(REAL, columns=["id", "text", "emotion"]).assign(source="goemotions")
    real["split"] = ["fit", "test"] * 4
    sentences = pd.concat([hand, real], ignore_index=True)
    train = sentences[sentences["split"] == "fit"].drop(columns="split").reset_index(drop=True)
    return sentences, train


@pytest.fixture(scope="module")
def judge(frames):
    return EmbeddingEvaluator(frames[1])


def test_decision_rules_on_hand_made_scores():
    lex = pd.DataFrame({"vader_compound": [0.9, -0.9, 0.0, 0.0], "lex_gratitude": [0, 10, 5, 0.0],
                        "lex_anger": [2, 20, 5, 0.0], "lex_apology": [0, 0, 1, 0.0]})
    assert list(LexiconEvaluator.classify(lex)) == ["anger", "anger", "gratitude", "neutral"]  # ties: first
    vader = pd.DataFrame({"vader_compound": [0.05, 0.0499, -0.0499, -0.05, 0.8]})
    assert list(VaderEvaluator.classify(vader)) == ["gratitude", "neutral", "neutral", "anger", "gratitude"]
    p = pd.DataFrame(np.eye(4)[[3, 0, 2, 1]] * 0.6 + 0.1, columns=[f"p_{x}" for x in LABELS])
    assert list(EmbeddingEvaluator.classify(p)) == ["neutral", "gratitude", "apology", "anger"]
    hf = pd.DataFrame({"hf_roberta-base-go_emotions_gratitude": [0.1, 0.2], "hf_roberta-base-go_emotions_anger":
                       [0.1, 0.1], "hf_roberta-base-go_emotions_remorse": [0.7, 0.1],
                       "hf_roberta-base-go_emotions_neutral": [0.1, 0.6], "hf_roberta-base-go_emotions_joy": [0.9, 0.9]})
    assert list(HFEvaluator.classify(hf)) == ["apology", "neutral"]  # labels outside the four are not classes
    assert "ge-123" in HFEvaluator.trained_on and "hw-1" not in HFEvaluator.trained_on
    assert len(LexiconEvaluator.classify(lex.iloc[:0])) == 0


class Fixed:
    """An evaluator whose decisions are given (to check the arithmetic against sklearn)."""

    name, trained_on = "fixed", frozenset({"t0"})

    def __init__(self, pred):
        self.pred = pred

    def score(self, texts):
        return pd.DataFrame({"x": range(len(texts))})

    def classify(self, scores):
        return np.asarray(self.pred, dtype=object)[scores["x"].to_numpy()]


def test_balanced_accuracy_recall_and_confusion_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score

    rng = np.random.default_rng(0)
    truth = rng.choice(LABELS, 80, p=[0.4, 0.3, 0.2, 0.1])
    pred = np.where(rng.random(80) < 0.6, truth, rng.choice(LABELS, 80))
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(80)], "text": "x", "emotion": truth})
    r = validation.validate(Fixed(pred), rows, n_boot=500, seed=1)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, pred))
    assert [r["recall"][x] for x in LABELS] == pytest.approx(recall_score(truth, pred, labels=list(LABELS),
                                                                          average=None))
    cm = confusion_matrix(truth, pred, labels=list(LABELS))
    assert [[r["confusion"][t][p] for p in LABELS] for t in LABELS] == cm.tolist()
    assert r["n"] == {x: int((truth == x).sum()) for x in LABELS} and r["chance"] == 0.25
    lo, hi = r["ci"]
    assert lo < r["balanced_accuracy"] < hi and hi - lo < 0.3
    assert validation.validate(Fixed(pred), rows, n_boot=500, seed=1)["ci"] == r["ci"]  # seeded


def test_validate_refuses_a_training_row(frames, judge):
    sentences, train = frames
    with pytest.raises(DataError, match="among its training rows"):
        validation.validate(Fixed(["neutral"]), pd.DataFrame({"id": ["t0"], "text": ["x"], "emotion": ["neutral"]}))
    with pytest.raises(DataError, match="'embedding': 1 validation rows are among its training rows"):
        validation.validate(judge, pd.concat([sentences[sentences["split"] == "test"].head(3), train.head(1)]))


def test_embedding_judge_is_trained_on_exactly_its_training_rows(frames, judge):
    sentences, train = frames
    assert judge.trained_on == frozenset(train["id"])
    assert judge.trained_on.isdisjoint(sentences.loc[sentences["split"] == "test", "id"])
    scores = judge.score(["Thank you so much, I really appreciate it!", "This is outrageous, I am furious."])
    assert list(scores.columns) == [f"p_{x}" for x in LABELS]
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    assert list(judge.classify(scores)) == ["gratitude", "anger"]
    with pytest.raises(DataError, match="never sentences.parquet"):
        EmbeddingEvaluator(sentences)


def test_judges_stage_end_to_end(frames, tmp_path, monkeypatch):
    from emotion_circuits import cli
    from emotion_circuits.store import paths
    from emotion_circuits.store.io import staged_outputs, write_json, write_parquet
    from stages import judges

    sentences, train = frames
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["judges"] = {"evaluators": ["lexicon", "vader", "embedding"], "n_boot": 50}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with staged_outputs(paths.DATASET) as (out,):  # as the dataset stage writes them (manifest)
        out.mkdir()
        write_parquet(out / "sentences.parquet", sentences)
        write_parquet(out / "judge_train.parquet", train)
        write_json(out / "lexicons.json", LEXICONS)
    assert cli.run_stage("judges", "", judges.run, ["--no-progress"]) == 0
    table = pd.read_parquet(tmp_path / "results/judges/validation.parquet")
    metrics = json.loads((tmp_path / "metrics/judges/metrics.json").read_text())
    assert set(table["evaluator"]) == {"lexicon", "vader", "embedding"}
    assert set(table["portion"]) == {"in_domain", "real_text"} and len(table) == 3 * 2 * 4
    real = metrics["embedding"]["real_text"]
    assert real["n"] == {x: 1 for x in LABELS} and set(real["recall"]) == set(LABELS)
    assert metrics["goal_embedding_real_ba"] == pytest.approx(real["balanced_accuracy"])
    assert metrics["goal_embedding_min_recall"] == pytest.approx(min(real["recall"].values()))
    assert metrics["vader"]["in_domain"]["recall"]["apology"] == 0.0  # one polarity axis: no apology
    assert metrics["lexicon"]["in_domain"]["n"] == metrics["embedding"]["in_domain"]["n"]
    assert {"folds", "handwritten", "goemotions"} <= set(metrics["embedding"]["cross_validation"])
    lines = validation.summary_lines({k: metrics[k] for k in ("lexicon", "vader", "embedding")})
    assert metrics["goals"] == validation.GOALS
    assert sorted(line.split(":")[0] for line in lines) == ["embedding", "lexicon", "vader"]
    assert all("in_domain BA" in line and "real_text BA" in line for line in lines)
