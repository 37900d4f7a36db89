"""Phase 2: token alignment, exact batching, hook semantics, storage; on tiny models of three architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotion_circuits.model.extraction import activation_metadata, extract, hook_name, run_capture, tokenize_row
from emotion_circuits.store.activations import load_activations, save_activations
from emotion_circuits.store.io import read_tensor_metadata

TEXTS = ["I am so grateful for your help, thanks!", "The bus leaves at nine.",
         "How dare you ignore me again? This is outrageous and I am furious.", "Sorry.",
         "I sincerely apologize for the delay; I am so sorry it took this long."]
WORDS = [["grateful", "thanks"], [], ["How dare", "outrageous", "furious"], ["Sorry"], ["apologize", "sorry"]]
HOOKS, POSITIONS = ("resid_pre", "resid_post"), ("sentence_end", "emotion_tokens")


def test_emotion_word_positions_follow_character_offsets(tiny_llama):
    text = "I am so grateful. Grateful!"
    row = tokenize_row(tiny_llama.tokenizer, text, ["grateful"], prepend_bos=True, causal=True)
    assert row.input_ids[0] == tiny_llama.tokenizer.bos_token_id
    # byte tokenizer: one token per character, shifted by the BOS token; both occurrences, any case
    expected = [1 + i for i in range(text.index("grateful"), text.index("grateful") + 8)]
    expected += [1 + i for i in range(text.index("Grateful"), text.index("Grateful") + 8)]
    assert row.emotion_positions == expected and not row.fallback
    assert row.end_pos == len(text)  # last character, after BOS


def test_neutral_rows_fall_back_to_all_text_tokens(tiny_llama):
    row = tokenize_row(tiny_llama.tokenizer, "The bus.", [], prepend_bos=True, causal=True)
    assert row.fallback and row.emotion_positions == list(range(1, 9))


def test_bos_is_explicit(tiny_llama):
    with_bos = tokenize_row(tiny_llama.tokenizer, "Hi there", [], prepend_bos=True, causal=True)
    without = tokenize_row(tiny_llama.tokenizer, "Hi there", [], prepend_bos=False, causal=True)
    assert with_bos.input_ids[1:] == without.input_ids and with_bos.end_pos == without.end_pos + 1


def test_encoder_rows_exclude_cls_and_sep(tiny_bert):
    row = tokenize_row(tiny_bert.tokenizer, "So sorry", ["sorry"], prepend_bos=True, causal=False)
    tok = tiny_bert.tokenizer
    assert row.input_ids[0] == tok.cls_token_id and row.input_ids[-1] == tok.sep_token_id
    assert row.end_pos == len(row.input_ids) - 2 and row.emotion_positions == [4, 5, 6, 7, 8]


def assert_batched_extraction_equals_one_by_one(lm, batch_size: int, tol: float):
    """Every hook and position of a padded batch equals one-sentence batches, within `tol` of the largest value
    (float32 matmuls of different shapes round differently; real models' massive dims set the scale)."""
    batched = extract(lm, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=batch_size, progress=False)
    single = extract(lm, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=1, progress=False)
    for pos in POSITIONS:
        for name, values in batched.activations[pos].items():
            ref = single.activations[pos][name]
            assert np.abs(values - ref).max() <= tol * np.abs(ref).max() + tol, name
    return batched


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_batched_extraction_matches_one_by_one(request, fixture):
    batched = assert_batched_extraction_equals_one_by_one(request.getfixturevalue(fixture), 4, 1e-5)
    assert batched.n_tokens == sum(len(r.input_ids) for r in batched.rows)


def test_tiny_causal_models_run_through_the_bridge(tiny_llama, tiny_gpt2, tiny_bert):
    assert tiny_llama.backend == "bridge" and tiny_gpt2.backend == "bridge"
    assert tiny_bert.backend == "hf"  # encoders use HF module hooks (see models._boot_bridge)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_hooks_match_hf_hidden_states(request, fixture):
    """resid_pre of layer L is the HF hidden state entering layer L; resid_post(L) == resid_pre(L+1)."""
    lm = request.getfixturevalue(fixture)
    rows = [tokenize_row(lm.tokenizer, t, w, True, lm.causal) for t, w in zip(TEXTS[:1], WORDS[:1])]
    ids = torch.tensor([rows[0].input_ids])
    names = [hook_name(L, h) for L in range(lm.n_layers) for h in HOOKS]
    identity = {"all": lambda x: x[0]}
    got = run_capture(lm, ids, torch.ones_like(ids), names, identity)
    with torch.inference_mode():
        hidden = lm.hf_model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in range(lm.n_layers):
        torch.testing.assert_close(got[hook_name(layer, "resid_pre")]["all"], hidden[layer][0], rtol=1e-5, atol=1e-5)
        if layer + 1 < lm.n_layers:
            torch.testing.assert_close(got[hook_name(layer, "resid_post")]["all"],
                                       got[hook_name(layer + 1, "resid_pre")]["all"])


def test_position_modes_read_the_intended_tokens(tiny_gpt2):
    result = extract(tiny_gpt2, TEXTS[:1], WORDS[:1], ["resid_pre"], POSITIONS, batch_size=1, progress=False)
    row = result.rows[0]
    ids = torch.tensor([row.input_ids])
    full = run_capture(tiny_gpt2, ids, torch.ones_like(ids), ["blocks.1.hook_resid_pre"], {"all": lambda x: x[0]})
    per_token = full["blocks.1.hook_resid_pre"]["all"].numpy()
    np.testing.assert_allclose(result.activations["sentence_end"]["blocks.1.hook_resid_pre"][0],
                               per_token[row.end_pos], rtol=1e-6)
    np.testing.assert_allclose(result.activations["emotion_tokens"]["blocks.1.hook_resid_pre"][0],
                               per_token[row.emotion_positions].mean(0), rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(tmp_path, tiny_llama):
    import pandas as pd

    index = pd.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "emotion": ["gratitude"] * len(TEXTS),
                          "split": ["fit"] * len(TEXTS)})
    result = extract(tiny_llama, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=2, progress=False)
    save_activations(tmp_path / "m", result, index, activation_metadata(tiny_llama, True))
    loaded_index, tensors = load_activations(tmp_path / "m", "emotion_tokens")
    assert sorted(tensors) == sorted(hook_name(L, h) for L in range(3) for h in HOOKS)
    np.testing.assert_array_equal(tensors["blocks.2.hook_resid_post"],
                                  result.activations["emotion_tokens"]["blocks.2.hook_resid_post"])
    assert loaded_index["emotion_token_fallback"].tolist() == [False, True, False, False, False]
    assert tensors["blocks.0.hook_resid_pre"].shape == (len(TEXTS), tiny_llama.d_model)
    meta = read_tensor_metadata(tmp_path / "m" / "sentence_end" / "shard-00000.safetensors")
    assert meta == {"backend": "bridge", "d_model": 64, "dtype": "float32", "model": "tiny-llama", "n_layers": 3,
                    "position": "sentence_end", "prepend_bos": True, "shard": 0}


def test_streamed_shards_equal_in_memory_extraction(tmp_path, tiny_gpt2):
    """The stage's streaming path (a ShardWriter sink, several shards) stores exactly what extract() returns."""
    import pandas as pd

    from emotion_circuits.store.activations import ShardWriter, save_index

    index = pd.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "emotion": ["anger"] * len(TEXTS),
                          "split": ["test"] * len(TEXTS)})
    in_memory = extract(tiny_gpt2, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=2, progress=False)
    writer = ShardWriter(tmp_path / "s", POSITIONS, activation_metadata(tiny_gpt2, True), shard_rows=2)
    streamed = extract(tiny_gpt2, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=2, progress=False, sink=writer.add)
    writer.close()
    save_index(tmp_path / "s", streamed.rows, index)
    assert streamed.activations == {}  # nothing held in memory
    assert len(list((tmp_path / "s" / "sentence_end").glob("shard-*.safetensors"))) == 3
    for position in POSITIONS:
        _, tensors = load_activations(tmp_path / "s", position)
        for name, values in in_memory.activations[position].items():
            np.testing.assert_array_equal(tensors[name], values)


def test_many_models_in_chunks_equal_whole_extraction(tmp_path, monkeypatch):
    """The stage's path: every model's rows cut into chunks (here 2 rows), one worker holding one model at a
    time and loading each model once; the shards equal one extract() call per model (up to batch rounding)."""
    import pandas as pd

    from emotion_circuits.model import extraction as acts
    from emotion_circuits.model.extraction import extract_models
    from emotion_circuits.params import ActivationParams, ExecutionParams

    loads = []
    real_load = acts.load_model
    monkeypatch.setattr(acts, "load_model", lambda name, *a, **k: loads.append(name) or real_load(name, *a, **k))
    sentences = pd.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS, "emotion_words": WORDS,
                              "emotion": ["anger"] * len(TEXTS), "split": ["fit"] * len(TEXTS)})
    p = ActivationParams(hooks=HOOKS, positions=POSITIONS, batch_size=2, shard_rows=3)
    metrics, timing = extract_models(["tiny-llama", "tiny-gpt2"], sentences, p, 0, ExecutionParams(chunk_size=2),
                                     tmp_path, progress=False)
    assert loads == ["tiny-llama", "tiny-gpt2"]
    assert list(metrics) == ["tiny-llama", "tiny-gpt2"] and metrics["tiny-gpt2"]["n_rows"] == len(TEXTS)
    assert timing["tiny-llama"]["peak_rss_mb"] > 0 and timing["tiny-llama"]["batch_size"] == 2
    assert timing["tiny-gpt2"]["devices"] == ["cpu"]
    for name in ("tiny-llama", "tiny-gpt2"):
        whole = extract(real_load(name), TEXTS, WORDS, HOOKS, POSITIONS, batch_size=8, progress=False)
        index, _ = load_activations(tmp_path / name, "sentence_end")
        assert index["id"].tolist() == sentences["id"].tolist()
        assert index["n_tokens"].tolist() == [len(r.input_ids) for r in whole.rows]
        for position in POSITIONS:
            _, tensors = load_activations(tmp_path / name, position)
            for hook, values in whole.activations[position].items():
                np.testing.assert_allclose(tensors[hook], values, rtol=1e-4, atol=1e-5)


def test_out_of_memory_halves_the_batch_and_retries(tiny_llama, monkeypatch, caplog):
    from emotion_circuits.model import extraction as acts

    real = acts.run_capture
    seen = []

    def flaky(lm, ids, mask, names, reducers):
        seen.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(lm, ids, mask, names, reducers)

    reference = extract(tiny_llama, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=1, progress=False)
    monkeypatch.setattr(acts, "run_capture", flaky)
    with caplog.at_level("WARNING"):
        result = extract(tiny_llama, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=8, progress=False)
    assert result.batch_size == 2 and seen[:3] == [5, 4, 2]
    assert "batch size halved to 4" in caplog.text and "batch size halved to 2" in caplog.text
    for position in POSITIONS:
        for name, values in reference.activations[position].items():
            np.testing.assert_allclose(result.activations[position][name], values, rtol=1e-5, atol=1e-5)


def test_out_of_memory_at_batch_one_is_one_clear_error():
    from emotion_circuits.runtime.resources import ResourceError, run_with_backoff

    def always(lo, hi):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(ResourceError, match="even with a batch of 1"):
        run_with_backoff(4, 4, always, "test")
    with pytest.raises(ValueError, match="not memory"):  # other errors are never swallowed
        run_with_backoff(4, 4, lambda lo, hi: (_ for _ in ()).throw(ValueError("not memory")), "test")


def test_device_and_dtype_auto_resolve_to_this_machine():
    from emotion_circuits.runtime.resources import resolve_device, resolve_dtype

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto") == expected
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("float16", "cpu") == "float16"


def test_batch_plan_padded_tokens_never_exceed_the_budget():
    """Memory is a function of `activations.max_batch_tokens`, not of the longest text: every planned batch
    holds at most that many padded tokens (a lone over-long row runs alone), the plan covers every row once, and
    rows within max_batch_tokens / batch_size tokens are cut every batch_size rows exactly as before."""
    from emotion_circuits.model.extraction import plan_batches

    rng = np.random.default_rng(0)
    for trial in range(50):
        lengths = sorted(rng.integers(1, 600, size=int(rng.integers(1, 120))).tolist(), reverse=True)
        batch_size, budget = int(rng.integers(1, 40)), int(rng.integers(1, 5000))
        plan = plan_batches(lengths, batch_size, budget)
        assert [lo for lo, _ in plan] == [0, *[hi for _, hi in plan[:-1]]] and plan[-1][1] == len(lengths)
        for lo, hi in plan:
            assert 1 <= hi - lo <= batch_size
            assert hi - lo == 1 or (hi - lo) * max(lengths[lo:hi]) <= budget, (lengths[lo:hi], budget)
    short = sorted(rng.integers(1, 256, size=100).tolist(), reverse=True)
    assert plan_batches(short, 32, 32 * 256) == [(lo, min(lo + 32, 100)) for lo in range(0, 100, 32)]


def test_token_budget_bounds_every_forward_and_keeps_batched_equal_to_one_by_one(tiny_llama, monkeypatch):
    from emotion_circuits.model import extraction as acts

    real, shapes = acts.run_capture, []
    monkeypatch.setattr(acts, "run_capture", lambda lm, ids, *a: shapes.append(tuple(ids.shape)) or real(lm, ids, *a))
    budgeted = extract(tiny_llama, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=4, progress=False,
                       max_batch_tokens=80)
    assert all(b * t <= 80 for b, t in shapes) and len(shapes) > 2 and max(b for b, _ in shapes) > 1, shapes
    single = extract(tiny_llama, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=1, progress=False)
    for pos in POSITIONS:
        for name, values in budgeted.activations[pos].items():
            np.testing.assert_allclose(values, single.activations[pos][name], rtol=1e-5, atol=1e-5)
