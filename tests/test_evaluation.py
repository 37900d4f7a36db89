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
    assert EVALUATORS.names() == ["embedding", "hf", "keyword", "vader", "lexicon"]
    assert all(EVALUATORS[n].name == n for n in EVALUATORS)
    assert metric_families() == ("p", "hf", "kw", "vader", "lex")
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
    with pytest.raises(ParamsError, match=r"unknown evaluator 'sentiment' \(registered: embedding, hf, keyword, vader, "
                                          r"lexicon\)"):
        build_evaluators(["lexicon", "sentiment"], LEXICONS, None, 0)
    with pytest.raises(ParamsError, match="'lexicon' and 'vader' both score 'vader_compound'"):
        build_evaluators(["lexicon", "vader"], LEXICONS, None, 0)
    with pytest.raises(ParamsError, match=r"statistics.metric_families: unknown metric family 'nope' "
                                          r"\(allowed: p, hf, kw, vader, lex\)"):
        check_families("statistics.metric_families", ["p", "nope"])
    with pytest.raises(ValueError, match="'<family>_<name>'"):
        Metric("anger_score", "anger", "lex", "anger")
    with pytest.raises(RuntimeError, match="do not match the declared metrics"):
        scores_frame([Metric("lex_anger", "anger", "lex", "anger")], {"lex_anger": [1.0], "lex_extra": [2.0]})


def test_statistics_params_validate_metric_families_against_the_registry():
    from emotion_circuits.params import StatisticsParams

    assert StatisticsParams(metric_families=("hf", "p")).metric_families == ("hf", "p")
    with pytest.raises(ParamsError, match=r"unknown metric family 'sentiment' \(allowed: p, hf, kw, vader, lex\)"):
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
                                     *[f"zz_{e}" for e in EMOTIONS], "nll", "repetition", "degenerate"]
    assert families(table) == ["vader", "lex", "zz"]
    table = add_effects(table, metric_columns(table))
    samples = sweep_effect_samples(table, ["lex", "zz"])
    assert sorted(set(samples["metric"])) == sorted([f"lex_{e}" for e in EMOTIONS] + [f"zz_{e}" for e in EMOTIONS])
    anger = samples[samples["effect"] == "anger/default/blocks.2.hook_resid_pre/alpha=4/zz_anger"]
    emo = table[(table["kind"] == "emotion") & (table["emotion"] == "anger")].sort_values("prompt_id")
    np.testing.assert_allclose(anger[anger["group"] == "effect"]["value"], emo["effect_zz_anger"])
    assert (anger["group"] == "null").sum() == 6  # 3 prompts x 2 random directions


LOOP = "sharing" * 12  # a steered model's loop: one "word" to a space splitter, the same tokens again and again
SENTENCE = "The committee will review the proposal on Thursday and publish its decision early next month."


def test_repetition_counts_repeated_token_ngrams_so_a_spaceless_loop_is_degenerate():
    from emotion_circuits.evaluation.text import DEGENERATE_AT, repetition_rate, text_repetition_rate

    loop_tokens = [5, 7, 9] * 10  # "shar", "ing", ... as ids: the period repeats
    assert repetition_rate(loop_tokens) == pytest.approx(1 - 3 / 28)
    assert repetition_rate(["sh", "aring"] * 6, n=3) == pytest.approx(1 - 2 / 10)
    assert repetition_rate(list(range(30))) == 0.0 and repetition_rate([1, 2]) == 0.0
    assert repetition_rate([1, 2, 3, 1, 2, 4]) == 0.0 and repetition_rate([1, 2, 3, 1, 2, 3]) == pytest.approx(0.25)
    with pytest.raises(TypeError, match="text_repetition_rate"):
        repetition_rate("a str is characters, not tokens")
    # the text fallback (callers without token ids) still sees the loop; prose with recurring words does not
    assert text_repetition_rate(LOOP) >= DEGENERATE_AT > text_repetition_rate(SENTENCE) == 0.0
    assert text_repetition_rate("the cat sat on the mat and the dog sat on the rug") < 0.2
    assert text_repetition_rate("I was in the park. I was in the park. I was in the park. I was") >= DEGENERATE_AT


def test_score_all_uses_the_model_tokens_when_given_and_flags_degenerate_text():
    texts = [LOOP, SENTENCE, ""]
    tokens = [[11, 12] * 15, list(range(16)), []]
    by_tokens, by_text = score_all([], texts, tokens), score_all([], texts)
    assert list(by_tokens.columns) == list(by_text.columns) == ["repetition", "degenerate"]
    assert by_tokens["repetition"].tolist() == pytest.approx([1 - 2 / 28, 0.0, 0.0])
    assert by_tokens["degenerate"].tolist() == by_text["degenerate"].tolist() == [1.0, 0.0, 0.0]
    # the tokens, not the text, decide when given: a loop in ids under innocent text
    flipped = score_all([], [SENTENCE], [[3, 4, 5] * 8])
    assert flipped.loc[0, "degenerate"] == 1.0 and score_all([], [SENTENCE]).loc[0, "degenerate"] == 0.0
    with pytest.raises(ValueError, match="2 token sequences for 3 texts"):
        score_all([], texts, tokens[:2])


def test_keyword_judge_matches_whole_words_and_phrases_only():
    from emotion_circuits.evaluation.keyword import KEYWORDS, keyword_hits

    texts = ["Thanks a lot, really.", "We met at Thanksgiving dinner.", "THANK you", "unthankful weather",
             "I appreciated the view", "That was my\n fault, I admit.", "It was my fault", "a faulty wire, my dear",
             "she got mad", "madness and nomad", "I'm sorry", "sorrowful"]
    assert keyword_hits(texts[:5], "gratitude").tolist() == [True, False, True, False, True]
    assert keyword_hits(texts[5:8], "apology").tolist() == [True, True, False]  # "my fault" across whitespace
    assert keyword_hits(texts[8:10], "anger").tolist() == [True, False]
    assert keyword_hits(texts[10:], "apology").tolist() == [True, False]
    assert keyword_hits([], "anger").shape == (0,)
    # every listed word and phrase hits as itself and inside a sentence, and not glued to letters
    for emotion, words in KEYWORDS.items():
        assert keyword_hits([f"Well, {w}." for w in words], emotion).all()
        assert not keyword_hits([f"x{w}y" for w in words], emotion).any()


def test_keyword_evaluator_scores_its_declared_columns_and_classifies():
    from emotion_circuits.evaluation.keyword import KeywordEvaluator

    (ev,) = build_evaluators(["keyword"], LEXICONS, None, 0)
    assert isinstance(ev, KeywordEvaluator) and ev.trained_on == frozenset()
    texts = ["Thanks, I am sorry about that.", "I am so angry right now!", "My bad, sorry.", "The bus left at noon.",
             "Thanksgiving, maddening, sorrow."]
    scores = ev.score(texts)
    assert list(scores.columns) == [m.column for m in ev.metrics] == ["kw_gratitude", "kw_anger", "kw_apology"]
    assert scores.to_numpy().tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
    # the first emotion (EMOTIONS order) whose word occurs; neutral when none
    assert ev.classify(scores).tolist() == ["gratitude", "anger", "apology", "neutral", "neutral"]
    assert ev.classify(ev.score([])).tolist() == []
    assert [own_metric(e, "kw") for e in EMOTIONS] == ["kw_gratitude", "kw_anger", "kw_apology"]
    table = score_all([ev], texts)
    assert list(table.columns) == ["kw_gratitude", "kw_anger", "kw_apology", "repetition", "degenerate"]
