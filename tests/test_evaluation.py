"""Evaluators as a registry: each scores exactly the metrics it declares, and whatever is registered reaches the
steering tables and the statistics samples (nothing registered can be silently dropped)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emotion_circuits import EMOTIONS
from emotion_circuits.errors import ModelLoadError, ParamsError
from emotion_circuits.evaluation import EVALUATORS
from emotion_circuits.evaluation.base import Metric, scores_frame
from emotion_circuits.evaluation.catalog import build_evaluators, check_families, metric_families, own_metric
from emotion_circuits.evaluation.text import score_all

LEXICONS = {"gratitude": ["thank you", "thanks"], "anger": ["outrageous", "furious"], "apology": ["sorry"]}
TEXTS = ["Thank you so much!", "This is outrageous.", "I am so sorry.", "The bus left at noon."]


def test_registered_evaluators_and_their_families_keep_the_column_names():
    assert EVALUATORS.names() == ["embedding", "hf", "vader", "lexicon"]
    assert all(EVALUATORS[n].name == n for n in EVALUATORS)
    assert metric_families() == ("p", "hf", "vader", "lex")
    assert [own_metric("anger", f) for f in ("p", "lex", "vader")] == ["p_anger", "lex_anger", "vader_compound"]
    # the bug: `hf_<emotion>` matched no column; the hf family's own metrics are the GoEmotions label columns
    assert own_metric("apology", "hf") == "hf_roberta-base-go_emotions_remorse"
    assert own_metric("neutral", "lex") is None  # the keyword lexicons do not measure the reference


@pytest.mark.parametrize("names", [["lexicon"], ["vader"]])
def test_offline_evaluators_score_exactly_their_declared_columns(names):
    (ev,) = build_evaluators(names, LEXICONS, None, 0)
    scores = ev.score(TEXTS)
    assert list(scores.columns) == [m.column for m in ev.metrics] == [m.column for m in EVALUATORS[names[0]].metrics]
    assert len(scores) == len(TEXTS) and scores.notna().all().all()
    assert scores.loc[0, "vader_compound"] > scores.loc[1, "vader_compound"]
    assert list(ev.score([]).columns) == list(scores.columns)


def test_embedding_evaluator_scores_exactly_its_declared_columns():
    from emotion_circuits.data import build_sentences

    from .conftest import ROOT

    sentences, _ = build_sentences(ROOT / "data/emotions.jsonl", 0.25, 0, "smoke", 40)
    train = sentences[sentences["split"] == "fit"].drop(columns="split")  # judge_train holds fit rows only
    (ev,) = build_evaluators(["embedding"], LEXICONS, train, 0)
    assert ev.trained_on == frozenset(train["id"])
    scores = ev.score(TEXTS)
    assert list(scores.columns) == [m.column for m in ev.metrics] == ["p_gratitude", "p_anger", "p_apology",
                                                                     "p_neutral"]
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    assert scores.loc[0, "p_gratitude"] > scores.loc[1, "p_gratitude"]


def tiny_classifier(path, labels):
    from transformers import BertConfig, BertForSequenceClassification

    from emotion_circuits.model.loading import byte_tokenizer

    torch.manual_seed(len(labels))
    config = BertConfig(vocab_size=len(byte_tokenizer(True)), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(path)
    byte_tokenizer(True).save_pretrained(path)
    return str(path)


def test_hf_scores_reach_the_statistics_samples(tmp_path):
    """A local GoEmotions stand-in: every label is a declared column, and the emotions' own hf metrics (which
    `statistics` looks up without loading anything) are among them and become effect samples."""
    from emotion_circuits.evaluation.hf import HFEvaluator
    from emotion_circuits.stats.effects import metric_samples
    from emotion_circuits.evaluation.catalog import families_in as families, metric_columns

    ev = HFEvaluator([tiny_classifier(tmp_path / "roberta-base-go_emotions", ["anger", "gratitude", "joy",
                                                                              "remorse"])], batch_size=3)
    scores = ev.score(TEXTS)
    assert list(scores.columns) == [m.column for m in ev.metrics]
    assert {m.column for m in EVALUATORS["hf"].metrics} <= set(scores.columns)
    table = scores.assign(nll=0.0, repetition=0.0, prompt_id=range(len(TEXTS)))
    assert families(table) == ["hf"] and metric_columns(table)[:4] == list(scores.columns)
    g = table.assign(**{f"effect_{c}": table[c] for c in scores.columns})
    parts = metric_samples("steering", lambda m: f"x/{m}", "apology", ["hf"], g, None, dict(enumerate(range(4))))
    assert [p["metric"].iloc[0] for p in parts] == ["hf_roberta-base-go_emotions_remorse"]


def test_hf_offline_is_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="evaluator backend 'hf' needs 'cardiffnlp/.*hub is unreachable"):
        build_evaluators(["lexicon", "hf"], LEXICONS, None, 0)


def test_unknown_names_and_families_are_params_errors_listing_the_registered_ones():
    with pytest.raises(ParamsError, match=r"unknown evaluator 'sentiment' \(registered: embedding, hf, vader, "
                                          r"lexicon\)"):
        build_evaluators(["lexicon", "sentiment"], LEXICONS, None, 0)
    with pytest.raises(ParamsError, match="'lexicon' and 'vader' both score 'vader_compound'"):
        build_evaluators(["lexicon", "vader"], LEXICONS, None, 0)
    with pytest.raises(ParamsError, match=r"statistics.metric_families: unknown metric family 'nope' "
                                          r"\(allowed: p, hf, vader, lex\)"):
        check_families("statistics.metric_families", ["p", "nope"])
    with pytest.raises(ValueError, match="'<family>_<name>'"):
        Metric("anger_score", "anger", "lex", "anger")
    with pytest.raises(RuntimeError, match="do not match the declared metrics"):
        scores_frame([Metric("lex_anger", "anger", "lex", "anger")], {"lex_anger": [1.0], "lex_extra": [2.0]})


def test_statistics_params_validate_metric_families_against_the_registry():
    from emotion_circuits.params import StatisticsParams

    assert StatisticsParams(metric_families=("hf", "p")).metric_families == ("hf", "p")
    with pytest.raises(ParamsError, match=r"unknown metric family 'sentiment' \(allowed: p, hf, vader, lex\)"):
        StatisticsParams(metric_families=("p", "sentiment"))


class Throwaway:
    """A new evaluator as a user would add it: one class, one new family, no other file touched."""

    name = "throwaway"
    metrics = tuple(Metric(f"zz_{e}", e, "zz", f"letters of '{e[0]}'") for e in EMOTIONS)

    @classmethod
    def build(cls, inputs):
        return cls()

    def score(self, texts):
        return scores_frame(self.metrics, {f"zz_{e}": [float(t.lower().count(e[0])) for t in texts]
                                           for e in EMOTIONS})


@pytest.fixture
def throwaway(monkeypatch):
    monkeypatch.setattr(EVALUATORS, "_items", dict(EVALUATORS.items()))  # the registration ends with the test
    EVALUATORS.register("throwaway")(Throwaway)
    return Throwaway


def sweep_table(evaluators) -> pd.DataFrame:
    """A steering_sweep generations table: 3 prompts x (baseline, each emotion, 2 random directions) at one
    layer and alpha, scored by `evaluators`."""
    rows = []
    for p in range(3):
        rows.append({"prompt_id": f"q{p}", "kind": "baseline", "emotion": "", "random_id": -1})
        rows += [{"prompt_id": f"q{p}", "kind": "emotion", "emotion": e, "random_id": -1} for e in EMOTIONS]
        rows += [{"prompt_id": f"q{p}", "kind": "random", "emotion": e, "random_id": r} for e in EMOTIONS
                 for r in range(2)]
    meta = pd.DataFrame(rows).assign(layer=2, alpha=4.0)
    texts = [f"{r.kind} {r.emotion} " * (1 + i % 4) + "thanks" * (i % 2) for i, r in enumerate(meta.itertuples())]
    return pd.concat([meta, score_all(evaluators, texts)], axis=1).assign(nll=np.linspace(1.0, 2.0, len(meta)))


def test_a_registered_evaluator_flows_into_tables_and_statistics(throwaway):
    from emotion_circuits.stats.effects import sweep_effect_samples
    from emotion_circuits.steering.sweep import add_effects
    from emotion_circuits.evaluation.catalog import families_in as families, metric_columns

    assert "zz" in metric_families() and own_metric("anger", "zz") == "zz_anger"
    check_families("statistics.metric_families", ["zz"])
    table = sweep_table(build_evaluators(["lexicon", "throwaway"], LEXICONS, None, 0))
    assert metric_columns(table) == ["vader_compound", *[f"lex_{e}" for e in EMOTIONS],
                                     *[f"zz_{e}" for e in EMOTIONS], "nll", "repetition"]
    assert families(table) == ["vader", "lex", "zz"]
    table = add_effects(table, metric_columns(table))
    samples = sweep_effect_samples(table, ["lex", "zz"])
    assert sorted(set(samples["metric"])) == sorted([f"lex_{e}" for e in EMOTIONS] + [f"zz_{e}" for e in EMOTIONS])
    anger = samples[samples["effect"] == "anger/blocks.2.hook_resid_pre/alpha=4/zz_anger"]
    emo = table[(table["kind"] == "emotion") & (table["emotion"] == "anger")].sort_values("prompt_id")
    np.testing.assert_allclose(anger[anger["group"] == "effect"]["value"], emo["effect_zz_anger"])
    assert (anger["group"] == "null").sum() == 6  # 3 prompts x 2 random directions
