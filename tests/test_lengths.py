"""Long texts: every model stage rejects a row over min(dataset.max_tokens, the model's context) with one line,
before any forward pass (today's tiny models have a 512-position table: a longer row was an IndexError)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from emotion_circuits.errors import DataError, SteeringError
from emotion_circuits.model.extraction import extract
from emotion_circuits.model.lengths import context_length

from .conftest import ROOT, run_module
from .test_cli import _project

LONG = " ".join(f"word{i}" for i in range(136))  # 136 words: passes the dataset stage, ~1000 byte tokens


def test_context_length_comes_from_the_config(tiny_gpt2, tiny_bert, tiny_llama):
    assert context_length(tiny_gpt2) == 512 and context_length(tiny_bert) == 512
    assert context_length(tiny_llama) == 512


def test_too_long_row_is_one_line_before_any_forward_and_no_outs(tmp_path):
    """The activations stage on tiny-gpt2: exit 2, one line naming row, token count, model, limit and knob."""
    project = _project(tmp_path, models=["tiny-gpt2"], dataset={"profile": "baseline"},
                       activations={"random_init_controls": False}, execution={"chunk_size": 4096})
    rows = [json.loads(line) for line in (ROOT / "data/emotions.jsonl").read_text().splitlines()]
    keep = []
    for emotion in ("gratitude", "anger", "apology", "neutral"):
        keep += [r for r in rows if r["emotion"] == emotion][:8]
    keep.append({"id": "neutral-long", "text": LONG, "emotion": "neutral"})
    (project / "data/emotions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    dataset = run_module("stages.dataset", cwd=project)
    assert dataset.returncode == 0, dataset.stderr  # 136 words <= dataset.max_tokens (256): the dataset accepts it
    out = run_module("stages.activations", "--no-progress", cwd=project)
    assert out.returncode == 2, out.stderr
    n = len(LONG.encode()) + 1  # byte tokens + BOS
    assert out.stderr.strip() == (f"error: activations tiny-gpt2: row 'neutral-long' has {n} tokens on tiny-gpt2, "
                                  "over the limit of 256 (dataset.max_tokens=256; shorten or split the text, or "
                                  "raise dataset.max_tokens)")
    assert not (project / "results/activations").exists() and not (project / "metrics/activations").exists()


def test_the_model_context_binds_when_max_tokens_is_larger(tiny_gpt2, tiny_bert):
    """With dataset.max_tokens above the context, the context is the limit and the error says so (encoders too)."""
    for lm in (tiny_gpt2, tiny_bert):
        with pytest.raises(DataError, match=r"row 'x' has \d+ tokens on tiny-\w+, over the limit of 512 "
                                            r"\(tiny-\w+'s context; .*cannot exceed the context\)"):
            extract(lm, ["ok", LONG], [[], []], ["resid_post"], ["sentence_end"], 2, progress=False,
                    max_tokens=2000, row_ids=["a", "x"])
    short = extract(tiny_gpt2, ["ok", LONG[:400]], [[], []], ["resid_post"], ["sentence_end"], 2, progress=False,
                    max_tokens=2000, row_ids=["a", "x"])
    assert [len(r.input_ids) for r in short.rows] == [3, 401]


def test_steering_prompt_plus_new_tokens_must_fit_the_context(tiny_gpt2):
    from emotion_circuits.steering.engine import Condition, generate, tokenize_prompt

    prompt = LONG[:500]
    n = len(tokenize_prompt(tiny_gpt2, prompt))
    with pytest.raises(SteeringError, match=rf"has {n} tokens; with max_new_tokens=20 that is {n + 20}, over the "
                                            r"model's context of 512 tokens"):
        generate(tiny_gpt2, [Condition("Hello there."), Condition(prompt)], max_new_tokens=20)
    fits = generate(tiny_gpt2, [Condition(prompt)], max_new_tokens=512 - n)  # exactly the context: runs
    assert len(fits[0]) <= 512 - n


def test_heads_sentences_are_checked_before_any_forward():
    from emotion_circuits.heads import runs as head_runs
    from emotion_circuits.model.loading import load_model

    lm = load_model("tiny-llama", use_bridge=False)
    frame = pd.DataFrame({"id": ["s1", "s2"], "text": ["Thanks a lot.", LONG], "emotion": ["gratitude"] * 2,
                          "emotion_words": [["Thanks"], []]})
    with pytest.raises(DataError, match=r"head_patching: row 's2' has \d+ tokens on tiny-llama, over the limit of "
                                        r"256 \(dataset.max_tokens=256"):
        head_runs.check_lengths(lm, frame, 256, True, "head_patching")
    with pytest.raises(DataError, match=r"row 's2' .* over the limit of 512 \(tiny-llama's context"):
        head_runs.make_batches(lm, frame, 2, True)


def test_a_too_long_last_row_fails_before_the_first_chunk_runs(tmp_path, monkeypatch):
    """Rows are cut into chunks; the model's first chunk checks every row, so no forward runs at all."""
    from emotion_circuits.model import extraction as acts
    from emotion_circuits.params import ActivationParams, ExecutionParams

    forwards = []
    monkeypatch.setattr(acts, "run_capture", lambda *a: forwards.append(1))
    texts = ["Thanks a lot.", "The bus leaves at nine.", "Sorry.", LONG]
    sentences = pd.DataFrame({"id": ["a", "b", "c", "long"], "text": texts, "emotion_words": [[], [], [], []]})
    p = ActivationParams(hooks=("resid_post",), positions=("sentence_end",), random_init_controls=False)
    with pytest.raises(DataError, match=r"activations tiny-gpt2: row 'long' has \d+ tokens"):
        acts.extract_models(["tiny-gpt2"], sentences, p, 0, ExecutionParams(chunk_size=2), tmp_path,
                            progress=False, max_tokens=256)
    assert forwards == []
