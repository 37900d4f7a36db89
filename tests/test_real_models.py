"""The packaged real models, offline: SmolLM2-135M through the bridge, MiniLM through HF hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotion_circuits.activations import extract, tokenize_row

from .test_activations import HOOKS, POSITIONS, TEXTS, WORDS

pytestmark = pytest.mark.real


def test_smollm2_loads_offline_with_the_known_shape(smollm2):
    assert (smollm2.n_layers, smollm2.d_model, smollm2.backend) == (30, 576, "bridge")
    assert smollm2.hf_model.config.num_attention_heads == 9 and smollm2.hf_model.config.num_key_value_heads == 3
    assert smollm2.hf_model.config.vocab_size == 49152


def test_smollm2_emotion_words_map_to_their_tokens(smollm2):
    row = tokenize_row(smollm2.tokenizer, "I am so grateful, thanks!", ["grateful", "thanks"], True, True)
    pieces = [smollm2.tokenizer.decode([row.input_ids[i]]).strip() for i in row.emotion_positions]
    assert pieces == ["grateful", "thanks"]


def test_smollm2_batched_equals_unbatched(smollm2):
    batched = extract(smollm2, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=5, progress=False)
    single = extract(smollm2, TEXTS, WORDS, HOOKS, POSITIONS, batch_size=1, progress=False)
    for pos in POSITIONS:
        for name, values in batched.activations[pos].items():
            ref = single.activations[pos][name]
            scale = np.abs(ref).max()
            assert np.abs(values - ref).max() <= 1e-4 * scale + 1e-4, name


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
    from emotion_circuits.models import load_model

    lm = load_model("minilm-l6")
    assert (lm.n_layers, lm.d_model, lm.backend, lm.causal) == (6, 384, "hf", False)
    result = extract(lm, TEXTS[:2], WORDS[:2], HOOKS, POSITIONS, batch_size=2, progress=False)
    assert result.activations["sentence_end"]["blocks.5.hook_resid_post"].shape == (2, 384)
