"""Every model family through its `arch` adapter, on a tiny in-process model of each: hooks, head engine, OV/QK
weights, neurons, family-specific mechanics (Gemma 3 windows/rotary, GPT-NeoX parallel residual + partial rotary,
GPT-Neo local attention) and the steering engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AttentionInterface

from emotion_circuits.heads import circuits
from emotion_circuits.heads import neurons
from emotion_circuits.heads import engine as H
from emotion_circuits.model.extraction import pad_right, run_capture, tokenize_row
from emotion_circuits.model.arch import REGISTRY, adapter_for
from emotion_circuits.errors import ModelLoadError
from emotion_circuits.model.hooks import layer_list
from emotion_circuits.model.loading import load_model
from emotion_circuits.steering.engine import Condition, Window, generate

CAUSAL = ["tiny-llama", "tiny-gpt2", "tiny-gemma3", "tiny-qwen3", "tiny-pythia", "tiny-gpt-neo"]
ALL = [*CAUSAL, "tiny-bert"]
TEXTS = ["I am so grateful for your help today.", "This is outrageous, I am furious!", "Sorry, my bad.",
         "The meeting is at noon on Tuesday."]
WORDS = [["grateful"], ["furious"], ["Sorry"], []]
_CACHE: dict = {}


def engine(name: str):
    """Plain HF model routed through the head engine (loaded once per name)."""
    if name not in _CACHE:
        lm = load_model(name, use_bridge=False)
        H.prepare(lm)
        _CACHE[name] = lm
    return _CACHE[name]


def readout_for(lm, seed=0) -> H.Readout:
    dirs = np.random.default_rng(seed).standard_normal((2, lm.d_model)).astype(np.float32)
    return H.Readout(dirs / np.linalg.norm(dirs, axis=1, keepdims=True), [[40, 41], [50]])


def plain_end_logprobs(name: str, batch: H.SentenceBatch) -> torch.Tensor:
    """Log-probs at each sentence end from the model's own forward (default attention, no engine)."""
    plain = load_model(name, use_bridge=False)
    with torch.inference_mode():
        logits = plain.hf_model(input_ids=batch.ids, attention_mask=batch.mask).logits
    return torch.log_softmax(logits[torch.arange(len(batch)), batch.end_pos].float(), -1)


def test_every_family_has_an_adapter_and_unknown_ones_fail_clearly():
    assert {"llama", "gemma3_text", "gemma3", "qwen3", "gpt2", "gpt_neox", "gpt_neo", "bert"} <= set(REGISTRY)
    with pytest.raises(ModelLoadError, match="not supported"):
        adapter_for(type("C", (), {"model_type": "mamba"})())


@pytest.mark.parametrize("name", ALL)
def test_hooks_equal_hidden_states_and_batched_equals_one_by_one(name):
    lm = load_model(name)  # the bridge where it wraps the family, HF module hooks otherwise
    assert lm.backend == ("hf" if name == "tiny-bert" else "bridge")
    names = [f"blocks.{m}.hook_resid_{k}" for m in range(lm.n_layers) for k in ("pre", "post")]
    rows = [tokenize_row(lm.tokenizer, t, w, True, lm.causal) for t, w in zip(TEXTS, WORDS)]
    ids, mask = pad_right(rows, lm.tokenizer.pad_token_id)
    out = run_capture(lm, ids, mask, names, {"all": lambda x: x})
    with torch.inference_mode():
        hs = lm.adapter.body(lm.hf_model)(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    real = mask.bool()
    for m in range(lm.n_layers):
        torch.testing.assert_close(out[f"blocks.{m}.hook_resid_pre"]["all"][real], hs[m][real].float())
        if m + 1 < lm.n_layers:
            torch.testing.assert_close(out[f"blocks.{m}.hook_resid_post"]["all"][real], hs[m + 1][real].float())
    for i, r in enumerate(rows):
        one_ids, one_mask = pad_right([r], lm.tokenizer.pad_token_id)
        one = run_capture(lm, one_ids, one_mask, names, {"all": lambda x: x})
        for n in names:
            torch.testing.assert_close(one[n]["all"][0], out[n]["all"][i, : len(r.input_ids)], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_engine_reproduces_the_plain_model_and_every_layer_runs_through_it(name):
    lm = engine(name)
    batch = H.make_batch(lm, TEXTS, WORDS)
    run = H.clean_run(lm, batch)
    assert sorted(run.ctl.mass) == list(range(lm.n_layers))  # the engine's attention ran in every layer
    got = H.final_logprobs(lm, run.final, [[t] for t in range(0, 256, 17)])
    want = plain_end_logprobs(name, batch)[:, list(range(0, 256, 17))]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CAUSAL)
def test_screening_batched_equals_one_forward_per_head_and_sentence_by_sentence(name):
    lm = engine(name)
    batch = H.make_batch(lm, TEXTS, WORDS)
    readout = readout_for(lm)
    a = H.arch(lm)
    out = H.screen_batch(lm, batch, readout, "zero")
    assert np.abs(out["proj_delta"]).max() > 1e-4
    for layer, head in [(0, 0), (a.n_layers - 1, a.n_heads - 1)]:
        ref = H.screen_one_by_one(lm, batch, readout, layer, head, "zero")
        np.testing.assert_allclose(out["proj_delta"][layer, head], ref, atol=2e-5)
    for i in range(len(TEXTS)):
        one = H.screen_batch(lm, H.make_batch(lm, TEXTS[i:i + 1], WORDS[i:i + 1]), readout, "zero")
        for key in ("proj_delta", "logprob_delta", "mass_clean"):
            np.testing.assert_allclose(one[key][:, :, 0], out[key][:, :, i], atol=2e-5)


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("mode", H.PATCH_MODES)
def test_patching_a_heads_own_output_back_is_the_identity(name, mode):
    lm = engine(name)
    a = H.arch(lm)
    readout = readout_for(lm)
    sets = [[(0, 0)], [(a.n_layers - 1, h) for h in range(a.n_heads)]]  # with GQA/MQA: heads sharing a KV head
    for i in (0, 2):
        one = H.make_batch(lm, TEXTS[i:i + 1], WORDS[i:i + 1])
        proj, logp = H.run_head_sets(lm, one, readout, sets, mode, stats=H.source_stats(lm, [one]))
        assert np.abs(proj).max() < 1e-5 and np.abs(logp).max() < 1e-5
    other = H.source_stats(lm, [H.make_batch(lm, TEXTS[1:2], WORDS[1:2])])
    proj, _ = H.run_head_sets(lm, H.make_batch(lm, TEXTS[:1], WORDS[:1]), readout, sets, mode, stats=other)
    assert np.abs(proj).max() > 1e-5


@pytest.mark.parametrize("name", CAUSAL)
def test_head_weights_reproduce_the_attention_modules_own_projections(name):
    """Capture q/k/v and z inside the attention function and the attention module's output, on random tokens:
    v = x W_V + b_V everywhere, q/k the same at position 0 (rotary is the identity there; q/k norms applied), and
    output = z W_O + b_O."""
    lm = load_model(name, use_bridge=False)
    seen: dict = {}

    def capture(module, query, key, value, attention_mask, **kw):
        z, pattern = H._attention(module, query, key, value, attention_mask, **kw)
        layer = kw.get("layer_index", getattr(module, "layer_idx", None))
        seen[layer] = (query, key, value, z)
        return z, pattern

    AttentionInterface.register("emotion_circuits_test_capture", capture)
    lm.hf_model.config._attn_implementation = "emotion_circuits_test_capture"
    lm.adapter.route_attention(lm.hf_model, capture)
    ad, g = lm.adapter, lm.adapter.grouping(lm.hf_model.config)
    assert H.arch(lm).n_kv_heads == g.n_kv_heads
    layers = layer_list(lm.hf_model)
    inputs: dict = {}
    outputs: dict = {}
    hooks = [ad.input_norm(layer).register_forward_hook(lambda m, a, o, i=i: inputs.setdefault(i, o))
             for i, layer in enumerate(layers)]
    hooks += [ad.attention(layer).register_forward_hook(lambda m, a, o, i=i: outputs.setdefault(i, o[0]))
              for i, layer in enumerate(layers)]
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        lm.hf_model(input_ids=ids)
    for h in hooks:
        h.remove()
    for m in range(lm.n_layers):
        w = ad.head_weights(lm.hf_model, m)
        assert w["W_Q"].shape == (g.n_heads, lm.d_model, g.d_head) and w["W_K"].shape[0] == g.n_kv_heads
        attn, x = ad.attention(layers[m]), inputs[m]
        query, key, value, z = seen[m]
        proj = {n: torch.einsum("btd,hde->bhte", x, w[f"W_{n}"]) + (w[f"b_{n}"][None, :, None] if f"b_{n}" in w else 0)
                for n in "QKV"}
        if hasattr(attn, "q_norm"):
            proj["Q"], proj["K"] = attn.q_norm(proj["Q"]), attn.k_norm(proj["K"])
        torch.testing.assert_close(value, proj["V"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(query[:, :, 0].float(), proj["Q"][:, :, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(key[:, :, 0].float(), proj["K"][:, :, 0], atol=1e-5, rtol=1e-5)
        out = torch.einsum("bthe,hed->btd", z, w["W_O"]) + w.get("b_O", 0)
        torch.testing.assert_close(outputs[m], out, atol=1e-5, rtol=1e-5)
    bridged = load_model(name)  # and the TransformerLens bridge's own W_Q..W_O agree (KV expanded)
    for m in range(lm.n_layers):
        ours, theirs = circuits.head_weights(bridged, m), circuits.bridge_weights(bridged.bridge, m, g.n_heads)
        for n in ("W_Q", "W_K", "W_V", "W_O"):
            torch.testing.assert_close(ours[n], theirs[n])


@pytest.mark.parametrize("name", CAUSAL)
def test_neuron_ablation_equals_zeroing_the_mlp_hidden_coordinate(name):
    lm = engine(name)
    batch = H.make_batch(lm, TEXTS, WORDS)
    readout = readout_for(lm)
    sets = [[(0, 3)], [(lm.n_layers - 1, 7), (lm.n_layers - 1, 9)]]
    proj, _ = neurons.run_neuron_sets(lm, batch, readout, sets)
    assert np.abs(proj).max() > 0
    plain = load_model(name, use_bridge=False)
    ad = plain.adapter
    base = plain_final(plain, batch)
    for c, s in enumerate(sets):
        handles = []
        for m, n in s:
            def pre(mod, args, n=n):
                x = args[0].clone()
                x[..., n] = 0.0
                return (x, *args[1:])
            handles.append(ad.mlp_out(layer_list(plain.hf_model)[m]).register_forward_pre_hook(pre))
        try:
            ablated = plain_final(plain, batch)
        finally:
            for h in handles:
                h.remove()
        want = (ablated - base).numpy() @ readout.directions.T
        np.testing.assert_allclose(proj[c], want, atol=2e-5)


def plain_final(lm, batch) -> torch.Tensor:
    """Final residual (before the final norm) at each sentence end, from the model's own forward."""
    got = {}
    last = layer_list(lm.hf_model)[-1]
    handle = last.register_forward_hook(lambda m, a, o: got.setdefault("x", o[0] if isinstance(o, tuple) else o))
    with torch.inference_mode():
        lm.hf_model(input_ids=batch.ids, attention_mask=batch.mask)
    handle.remove()
    return got["x"][torch.arange(len(batch)), batch.end_pos].float()


def test_gemma3_scale_windows_and_per_layer_rotary_matter():
    lm = engine("tiny-gemma3")
    cfg = lm.hf_model.config
    assert H.arch(lm).n_kv_heads == 1 and cfg.sliding_window < min(len(lm.tokenizer(t)["input_ids"]) for t in TEXTS)
    emb = lm.hf_model.model.embed_tokens
    torch.testing.assert_close(emb(torch.tensor([5])), emb.weight[5:6] * cfg.hidden_size ** 0.5)
    batch = H.make_batch(lm, TEXTS, WORDS)
    hidden, args, kwargs = H.layer_call_inputs(lm, batch)
    assert cfg.layer_types[:2] == ["sliding_attention", "full_attention"]
    assert not torch.equal(kwargs[0]["attention_mask"], kwargs[1]["attention_mask"])
    assert not torch.equal(kwargs[0]["position_embeddings"][0], kwargs[1]["position_embeddings"][0])
    with torch.inference_mode(), H.controlled(None):
        right = H.run_layers(lm, hidden, 0, args, kwargs)
        layer0 = H.run_layers(lm, hidden, 0, [args[0]] * lm.n_layers, [kwargs[0]] * lm.n_layers)
    assert (right - layer0).abs().max() > 1e-3  # reusing layer 0's inputs would be measurably wrong


def test_pythia_parallel_residual_and_partial_rotary_are_exercised():
    lm = load_model("tiny-pythia", use_bridge=False)
    attn = lm.adapter.attention(layer_list(lm.hf_model)[0])
    assert lm.hf_model.config.use_parallel_residual and 0 < attn.rotary_ndims < attn.head_size
    batch = H.make_batch(lm, TEXTS, WORDS)
    parallel = plain_final(lm, batch)
    for layer in layer_list(lm.hf_model):
        layer.use_parallel_residual = False
    assert (plain_final(lm, batch) - parallel).abs().max() > 1e-3  # the layout the engine reproduces matters


def test_gpt_neo_local_window_is_exercised_and_honoured():
    lm = engine("tiny-gpt-neo")
    cfg = lm.hf_model.config
    assert cfg.attention_layers[0] == "local" and lm.adapter.attention_scale(cfg) == 1.0
    batch = H.make_batch(lm, TEXTS, WORDS)
    windowed = H.clean_run(lm, batch).final
    local = lm.adapter.attention(layer_list(lm.hf_model)[0])
    saved = local.bias.clone()
    try:
        local.bias.copy_(torch.tril(torch.ones_like(saved)))  # the local layer made global
        unwindowed = H.clean_run(lm, batch).final
    finally:
        local.bias.copy_(saved)
    assert (windowed - unwindowed).abs().max() > 1e-3


def steering_conditions(lm) -> list[Condition]:
    rng = np.random.default_rng(0)
    d = rng.standard_normal(lm.d_model).astype(np.float32) * 4
    prompts = ["The meeting on Tuesday was", "Our train", "When I opened the package, I"]
    conds = [Condition(p) for p in prompts]
    conds += [Condition(p, layer, alpha, d, w) for p in prompts for layer in (0, lm.n_layers - 1)
              for alpha in (-2.0, 3.0) for w in (Window("last", 2), Window("generated"), Window("all"))]
    return conds


@pytest.mark.parametrize("name", CAUSAL)
def test_steering_batched_equals_alone_and_cached_equals_full_recomputation(name):
    lm = load_model(name, use_bridge=False)
    conds = steering_conditions(lm)
    batched = generate(lm, conds, max_new_tokens=8)  # > the tiny windows: cached sliding layers must roll over
    assert batched == generate(lm, conds, max_new_tokens=8, use_cache=False)
    assert batched[::5] == [generate(lm, [c], max_new_tokens=8)[0] for c in conds[::5]]
    assert len({tuple(t) for t in batched}) > 3


# ------------------------------------------------------------------------------------- the stages on every family
STAGE_CHAIN = ["activations", "vectors", "alignment", "steering_sweep", "steering", "head_screening", "head_patching",
               "circuits"]


@pytest.fixture(scope="module")
def stage_repo(tmp_path_factory):
    """A scratch checkout (data + smoke params + the dataset stage's outs) the stages run in, in-process."""
    import shutil

    import yaml

    from .conftest import ROOT
    from .dvc_project import TINY_SETTINGS

    repo = tmp_path_factory.mktemp("families")
    shutil.copytree(ROOT / "data", repo / "data")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"].update(profile="smoke", smoke_per_emotion=8)
    params["alignment"].update(reduce_dim=4, ks=[2], k_report=2, n_random=5, n_perm=2, n_noise=2, n_cka_perm=2,
                               n_layer_pairs=2)
    params["steering_common"].update(max_new_tokens=2)
    params["steering_sweep"].update(layers=[1], alphas=[2], n_prompts=2, n_random=1, random_prompts=1,
                                    settings=TINY_SETTINGS)
    params["steering_confirm"].update(n_prompts=2, n_random=2, random_per_prompt=1, dose=[-1], real_world=False)
    params["steering"].update(layer=1, n_prompts=1, n_random=1)
    params["heads"].update(n_sentences=1, batch_size=4)
    params["head_screening"].update(evaluate_top_n=1, n_generate=1, max_new_tokens=2, attribution=False)
    params["head_patching"].update(top_k=1, n_random_sets=1, patch_modes=["result"])
    params["circuits"].update(n_random_sets=1, n_neurons=2, n_tokens=2)
    (repo / "base.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def _run_stages(repo, family: str, stages, monkeypatch) -> None:
    import importlib

    import yaml

    from emotion_circuits import cli

    params = yaml.safe_load((repo / "base.yaml").read_text())
    params["models"] = [family]
    params["steering_common"]["model"] = family
    params["heads"]["model"] = family
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(repo)
    for stage in stages:
        module = importlib.import_module(f"stages.{stage}")
        assert cli.run_stage(stage, "", module.run, ["--no-progress"]) == 0, stage


@pytest.mark.parametrize("name", ALL)
def test_the_stages_run_on_every_family(stage_repo, name, monkeypatch):
    """activations -> vectors -> alignment (the self pair, with its saved map) and, for causal families, both
    steering stages and the three head stages (screening, patching, neurons + OV/QK) on the smallest params,
    in-process in one scratch repo."""
    import json

    from emotion_circuits.store import paths

    if not (stage_repo / "results/dataset").exists():
        _run_stages(stage_repo, name, ["dataset"], monkeypatch)
    stages = STAGE_CHAIN if name != "tiny-bert" else STAGE_CHAIN[:3]
    _run_stages(stage_repo, name, stages, monkeypatch)
    for stage in stages:
        assert all((stage_repo / t).exists() for t in paths.STAGES[stage].targets()), stage
    acts = json.loads((stage_repo / "metrics/activations/metrics.json").read_text())["models"][name]
    assert acts["n_layers"] == load_model(name, use_bridge=False).n_layers
    assert (stage_repo / "results/alignment/maps" / f"{name}__{name}.safetensors").exists()
    if name != "tiny-bert":
        heads = json.loads((stage_repo / "metrics/head_screening/metrics.json").read_text())
        assert heads and (stage_repo / "results/circuits").exists()
