"""The packaged real models, offline: SmolLM2-135M and Gemma 3 270M through the bridge, MiniLM through HF hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotion_circuits.model.extraction import extract, tokenize_row

from .test_activations import HOOKS, POSITIONS, TEXTS, WORDS, assert_batched_extraction_equals_one_by_one

pytestmark = pytest.mark.real


def test_smollm2_loads_offline_with_the_known_shape(smollm2):
    assert (smollm2.n_layers, smollm2.d_model, smollm2.backend) == (30, 576, "bridge")
    assert smollm2.hf_model.config.num_attention_heads == 9 and smollm2.hf_model.config.num_key_value_heads == 3
    assert smollm2.hf_model.config.vocab_size == 49152


def test_smollm2_emotion_words_map_to_their_tokens(smollm2):
    row = tokenize_row(smollm2.tokenizer, "I am so grateful, thanks!", ["grateful", "thanks"], True, True)
    pieces = [smollm2.tokenizer.decode([row.input_ids[i]]).strip() for i in row.emotion_positions]
    assert pieces == ["grateful", "thanks"]


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_batched_extraction_equals_unbatched(model, request):
    assert_batched_extraction_equals_one_by_one(request.getfixturevalue(model), 5, 1e-4)


def test_cached_and_uncached_greedy_generation_agree(smollm2):
    """Regression for transformers 5.24, where the bridge's KV cache stays empty and cached output is garbage."""
    ids = torch.tensor([[smollm2.tokenizer.bos_token_id, *smollm2.tokenizer("The meeting on Tuesday").input_ids]])
    kwargs = dict(max_new_tokens=12, do_sample=False, stop_at_eos=False, verbose=False, return_type="tokens")
    with torch.inference_mode():
        cached = smollm2.bridge.generate(ids, use_past_kv_cache=True, **kwargs)
        uncached = smollm2.bridge.generate(ids, use_past_kv_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert cached.shape[1] == ids.shape[1] + 12


def test_minilm_is_a_real_second_architecture():
    from emotion_circuits.model.loading import load_model

    lm = load_model("minilm-l6")
    assert (lm.n_layers, lm.d_model, lm.backend, lm.causal) == (6, 384, "hf", False)
    result = extract(lm, TEXTS[:2], WORDS[:2], HOOKS, POSITIONS, batch_size=2, progress=False)
    assert result.activations["sentence_end"]["blocks.5.hook_resid_post"].shape == (2, 384)


# --- Gemma 3 270M (base, Q4_K_M GGUF reassembled from four PyPI part packages) -----------------------------

GRATITUDE_WORDS = (" thank", " thanks", " Thank", " Thanks", " grateful", " gratitude", " appreciate")


@pytest.fixture(scope="module")
def gemma3():
    from emotion_circuits.model.loading import load_model

    return load_model("gemma3-270m")


def test_gemma3_loads_offline_with_the_known_shape(gemma3):
    config = gemma3.hf_model.config
    assert (gemma3.n_layers, gemma3.d_model, gemma3.backend) == (18, 640, "bridge")
    assert (config.model_type, config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (
        "gemma3_text", 4, 1, 256)
    assert config.vocab_size == 262144 and config.tie_word_embeddings
    assert {"sliding_attention", "full_attention"} == set(config.layer_types) and config.sliding_window == 512
    # No softcapping on Gemma 3 (QK-norm instead): hand-computed logits (heads.final_logprobs) need no tanh cap.
    assert config.final_logit_softcapping is None and config.attn_logit_softcapping is None
    assert 268_000_000 < sum(p.numel() for p in gemma3.hf_model.parameters()) < 268_200_000


def test_gemma3_bos_is_prepended_once(gemma3):
    tok = gemma3.tokenizer
    assert tok("Hi").input_ids[0] == tok.bos_token_id  # Gemma's tokenizer adds BOS itself by default
    row = tokenize_row(tok, "I am so grateful, thanks!", ["grateful", "thanks"], True, True)
    assert row.input_ids.count(tok.bos_token_id) == 1 and row.input_ids[0] == tok.bos_token_id
    assert [tok.decode([row.input_ids[i]]) for i in row.emotion_positions] == [" grateful", " thanks"]
    assert tokenize_row(tok, "I am so grateful", [], False, True).input_ids == row.input_ids[1:5]
    from emotion_circuits.steering.engine import tokenize_prompt

    assert tokenize_prompt(gemma3, "Our train") == [tok.bos_token_id, *tok("Our train").input_ids[1:]]


def test_gemma3_hooks_match_hf_hidden_states(gemma3):
    """resid_pre(L) is HF's hidden state entering layer L (embeddings scaled by sqrt(640) at L=0)."""
    from emotion_circuits.model.extraction import hook_name, run_capture

    row = tokenize_row(gemma3.tokenizer, TEXTS[0], WORDS[0], True, True)
    ids = torch.tensor([row.input_ids])
    names = [hook_name(L, h) for L in range(gemma3.n_layers) for h in HOOKS]
    got = run_capture(gemma3, ids, torch.ones_like(ids), names, {"all": lambda x: x[0]})
    base = gemma3.hf_model.base_model
    with torch.inference_mode():
        hidden = base(input_ids=ids, output_hidden_states=True).hidden_states
        final = base.norm(got[hook_name(gemma3.n_layers - 1, "resid_post")]["all"])
    embed = base.embed_tokens.weight[ids[0]].detach() * torch.tensor(640**0.5, dtype=torch.float32)
    torch.testing.assert_close(got["blocks.0.hook_resid_pre"]["all"], embed)
    for layer in range(gemma3.n_layers):
        torch.testing.assert_close(got[hook_name(layer, "resid_pre")]["all"], hidden[layer][0], rtol=1e-5, atol=1e-4)
        if layer + 1 < gemma3.n_layers:
            post, nxt = got[hook_name(layer, "resid_post")]["all"], got[hook_name(layer + 1, "resid_pre")]["all"]
            assert torch.equal(post, nxt)
    torch.testing.assert_close(final, hidden[-1][0], rtol=1e-5, atol=1e-4)  # HF's last entry is after the norm


def test_gemma3_cached_and_uncached_greedy_generation_agree(gemma3):
    """The bridge's generate with and without KV cache, and the steering engine, give the same tokens."""
    from emotion_circuits.steering.engine import Condition, generate

    tok = gemma3.tokenizer
    ids = torch.tensor([[tok.bos_token_id, *tok("The meeting on Tuesday", add_special_tokens=False).input_ids]])
    kwargs = dict(max_new_tokens=10, do_sample=False, stop_at_eos=False, verbose=False, return_type="tokens")
    with torch.inference_mode():
        cached = gemma3.bridge.generate(ids, use_past_kv_cache=True, **kwargs)
        uncached = gemma3.bridge.generate(ids, use_past_kv_cache=False, **kwargs)
    assert torch.equal(cached, uncached) and cached.shape[1] == ids.shape[1] + 10
    engine = generate(gemma3, [Condition("The meeting on Tuesday")], max_new_tokens=10)[0]
    assert engine == cached[0, ids.shape[1]:].tolist()


def test_gemma3_steering_engine_batched_equals_single_and_uncached(gemma3):
    """Left padding, per-row layers and windows, shared-prefix fan-out: cached == recomputed == one by one."""
    from emotion_circuits.steering.engine import Condition, Window, generate

    d = np.random.default_rng(0).standard_normal(gemma3.d_model).astype(np.float32) * 20
    conds = [Condition(p) for p in ("Our train", "When I opened the package")]
    conds += [Condition(p, layer, 2.0, d, w) for p in ("Our train", "When I opened the package")
              for layer, w in ((3, Window("last", 2)), (9, Window("generated")), (15, Window("all")))]
    batched = generate(gemma3, conds, max_new_tokens=4, batch_size=16)
    assert batched == generate(gemma3, conds, max_new_tokens=4, use_cache=False)
    assert batched == [generate(gemma3, [c], max_new_tokens=4)[0] for c in conds]
    assert len({tuple(t) for t in batched}) > 2  # steering changed something


def test_gemma3_cached_steering_is_exact_past_the_sliding_window(gemma3):
    """A prompt longer than the 512-token window of the sliding layers: the engine's plain DynamicCache keeps
    every key, and the sliding mask (built from the config) hides the old ones exactly as recomputation does."""
    from emotion_circuits.steering.engine import Condition, Window, generate

    d = np.random.default_rng(1).standard_normal(gemma3.d_model).astype(np.float32) * 20
    long = " ".join(["The committee met on Tuesday to discuss the budget and agreed to meet again."] * 36)
    assert len(gemma3.tokenizer(long).input_ids) > 512 + 10
    conds = [Condition(long), Condition(long, 6, -1.5, d, Window("last", 3))]
    assert generate(gemma3, conds, max_new_tokens=3) == generate(gemma3, conds, max_new_tokens=3, use_cache=False)


def test_gemma3_gratitude_direction_steers_towards_gratitude(gemma3):
    """mean(gratitude) - mean(neutral) at layer 9 (sentence ends of 12 + 12 dataset sentences) raises the next-token
    log-probability of thank/grateful tokens at alpha +1 on every neutral prompt, more than at alpha -1 (the sign
    of the direction matters), and changes the text. Not a fixed margin: equal-norm random directions move these
    tokens by as much (measured: up to +3.6..+7.0 nats over 8 of them), so only the steering stages' random-
    direction nulls can say whether it steers; this checks the real-model hook path and the direction's sign."""
    from emotion_circuits.model.extraction import hook_name
    from emotion_circuits.data import read_records, validate_sentences
    from emotion_circuits.model.hooks import residual_hooks
    from emotion_circuits.steering.engine import Condition, Window, generate, tokenize_prompt

    from .conftest import ROOT

    df, _ = validate_sentences(read_records(ROOT / "data" / "emotions.jsonl"))
    rows = _first_of_each(df, ("gratitude", "neutral"), 12)
    layer = 9
    acts = extract(gemma3, rows["text"].tolist(), [list(w) for w in rows["emotion_words"]], ("resid_pre",),
                   ("sentence_end",), batch_size=24, progress=False).activations["sentence_end"][
        hook_name(layer, "resid_pre")]
    direction = acts[:12].mean(0) - acts[12:].mean(0)
    tok = gemma3.tokenizer
    targets = sorted({tok(w, add_special_tokens=False).input_ids[0] for w in GRATITUDE_WORDS})
    prompts = ["The meeting on Tuesday", "When I opened the package", "Our train", "The weather report says"]

    def gratitude_logprob(alpha: float) -> np.ndarray:
        out = []
        for p in prompts:
            ids = torch.tensor([tokenize_prompt(gemma3, p)])
            add = {hook_name(layer, "resid_pre"): lambda x: x + alpha * torch.from_numpy(direction)}
            with torch.inference_mode(), residual_hooks(gemma3, add):
                logp = torch.log_softmax(gemma3.hf_model(input_ids=ids).logits[0, -1].float(), -1)
            out.append(logp[targets].logsumexp(-1).item())
        return np.array(out)

    plain, steered, reversed_ = gratitude_logprob(0.0), gratitude_logprob(1.0), gratitude_logprob(-1.0)
    assert (steered > plain).all() and (steered > reversed_).all(), (plain, steered, reversed_)
    texts = generate(gemma3, [Condition(p) for p in prompts] +
                     [Condition(p, layer, 1.0, direction, Window("all")) for p in prompts], max_new_tokens=8)
    assert all(a != b for a, b in zip(texts[:4], texts[4:]))


def _first_of_each(df, emotions, n):
    """The first `n` rows (by id) of each emotion, in that order."""
    import pandas as pd

    return pd.concat([df[df["emotion"] == e].head(n) for e in emotions], ignore_index=True)
