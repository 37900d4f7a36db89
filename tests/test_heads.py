"""Head screening, patching, neurons and OV/QK circuits on tiny in-process models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emotion_circuits.heads import circuits
from emotion_circuits.heads import runs as head_runs
from emotion_circuits.heads import neurons
from emotion_circuits.heads import engine as H
from emotion_circuits.errors import ParamsError
from emotion_circuits.model.hooks import layer_list
from emotion_circuits.model.loading import load_model
from emotion_circuits.params import (CircuitParams, ExecutionParams, HeadParams, HeadPatchingParams,
                                    HeadScreeningParams)

TEXTS = ["I am so grateful for your help today.", "This is outrageous, I am furious!", "Sorry about that, my bad.",
         "Thanks a lot, truly.", "The meeting is at noon on Tuesday."]
WORDS = [["grateful"], ["furious"], ["Sorry"], ["Thanks"], []]


@pytest.fixture(scope="module")
def llama():
    lm = load_model("tiny-llama", use_bridge=False)
    H.prepare(lm)
    return lm


@pytest.fixture(scope="module")
def gpt2():
    lm = load_model("tiny-gpt2", use_bridge=False)
    H.prepare(lm)
    return lm


def readout_for(lm, seed=0) -> H.Readout:
    dirs = np.random.default_rng(seed).standard_normal((3, lm.d_model)).astype(np.float32)
    return H.Readout(dirs / np.linalg.norm(dirs, axis=1, keepdims=True), [[5, 6], [7], [8, 9]])


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_engine_reproduces_the_plain_model(name, request):
    lm = request.getfixturevalue(name)
    plain = load_model(f"tiny-{name}", use_bridge=False)  # default (sdpa) attention, no engine
    batch = H.make_batch(lm, TEXTS, WORDS)
    with torch.inference_mode():
        hidden = plain.hf_model(input_ids=batch.ids, attention_mask=batch.mask, output_hidden_states=True)
    logp = torch.log_softmax(hidden.logits[torch.arange(len(TEXTS)), batch.end_pos].float(), -1)
    run = H.clean_run(lm, batch)
    got = H.final_logprobs(lm, run.final, [[5], [7]])
    assert torch.allclose(got[:, 0], logp[:, 5], atol=1e-4) and torch.allclose(got[:, 1], logp[:, 7], atol=1e-4)


@pytest.mark.parametrize("name,ablation", [("llama", "zero"), ("gpt2", "zero"), ("llama", "mean")])
def test_batched_screening_equals_one_forward_per_head(name, ablation, request):
    lm = request.getfixturevalue(name)
    batch = H.make_batch(lm, TEXTS, WORDS)
    readout = readout_for(lm)
    means = H.mean_head_outputs(lm, [batch]) if ablation == "mean" else None
    out = H.screen_batch(lm, batch, readout, ablation, means)
    a = H.arch(lm)
    assert out["proj_delta"].shape == (a.n_layers, a.n_heads, len(TEXTS), 3)
    for layer, head in [(0, 0), (1, 3), (a.n_layers - 1, 1)]:
        one = H.screen_one_by_one(lm, batch, readout, layer, head, ablation, means)
        np.testing.assert_allclose(out["proj_delta"][layer, head], one, atol=1e-5)
    assert np.abs(out["proj_delta"]).max() > 1e-4  # ablation does something
    mass = out["mass_clean"]
    assert ((mass > 0) & (mass <= 1 + 1e-6)).all()


def test_planted_head_ranks_first():
    lm = load_model("tiny-llama", use_bridge=False, seed=3)
    H.prepare(lm)
    a = H.arch(lm)
    layer, head = 1, 2
    batch = H.make_batch(lm, TEXTS, WORDS)
    readout = readout_for(lm, seed=1)
    u = torch.as_tensor(readout.directions[0])
    z = H.clean_run(lm, batch).ctl.z_final[layer][:, head].mean(0)
    o_proj = layer_list(lm.hf_model)[layer].self_attn.o_proj
    with torch.no_grad():  # head (1, 2) now writes (z . z_mean) * 5 along the gratitude readout direction
        o_proj.weight[:, head * a.d_head:(head + 1) * a.d_head] = 5.0 * torch.outer(u, z / z.norm())
    df = pd.DataFrame({"id": [f"s{i}" for i in range(len(TEXTS))], "text": TEXTS, "emotion": "gratitude",
                       "emotion_words": WORDS})
    table = head_runs.screen(lm, df, readout, HeadParams(model="tiny-llama", batch_size=2), HeadScreeningParams(),
                             3, progress=False)
    summary = head_runs.screen_summary(table)
    best = head_runs.top_heads(summary, 1)["gratitude"]
    assert best == [(layer, head)]
    s = summary[(summary["metric"] == "proj_delta") & (summary["emotion"] == "gratitude")]
    assert s["rank"].min() == 1 and len(s) == a.n_layers * a.n_heads


def test_ablating_all_heads_equals_the_model_without_attention(llama):
    a = H.arch(llama)
    batch = H.make_batch(llama, TEXTS, WORDS)
    readout = readout_for(llama)
    everything = [[(m, h) for m in range(a.n_layers) for h in range(a.n_heads)]]
    proj, _ = H.run_head_sets(llama, batch, readout, everything, "zero")
    clean = H.clean_run(llama, batch)
    proj0, _ = H.readout_metrics(llama, clean.final, readout)
    layers = layer_list(llama.hf_model)
    handles = [layer.self_attn.register_forward_hook(lambda mod, args, out: (torch.zeros_like(out[0]), *out[1:]))
               for layer in layers]
    try:
        no_attn = H.clean_run(llama, batch)
    finally:
        for h in handles:
            h.remove()
    expected, _ = H.readout_metrics(llama, no_attn.final, readout)
    np.testing.assert_allclose(proj[0] + proj0, expected, atol=1e-4)


@pytest.mark.parametrize("mode", H.PATCH_MODES)
def test_patching_a_heads_own_output_back_is_the_identity(llama, mode):
    readout = readout_for(llama)
    sets = [[(0, 1)], [(1, 0), (1, 3)], [(2, 2)]]
    for i in range(3):
        one = H.make_batch(llama, TEXTS[i:i + 1], WORDS[i:i + 1])
        stats = H.source_stats(llama, [one])
        proj, logp = H.run_head_sets(llama, one, readout, sets, mode, stats=stats)
        assert np.abs(proj).max() < 1e-5 and np.abs(logp).max() < 1e-5
    other = H.source_stats(llama, [H.make_batch(llama, TEXTS[3:], WORDS[3:])])
    proj, _ = H.run_head_sets(llama, H.make_batch(llama, TEXTS[:1], WORDS[:1]), readout, sets, mode, stats=other)
    assert np.abs(proj).max() > 1e-5


def test_gqa_weights_match_the_bridge_and_value_patches_are_per_query_head():
    lm = load_model("tiny-llama")  # with bridge
    a = H.arch(lm)
    assert a.n_kv_heads < a.n_heads
    for layer in range(a.n_layers):
        ours = circuits.head_weights(lm, layer)
        theirs = circuits.bridge_weights(lm.bridge, layer, a.n_heads)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            assert ours[name].shape == theirs[name].shape
            torch.testing.assert_close(ours[name], theirs[name])
    # query heads 0 and 1 share KV head 0: patching the values of head 0 alone differs from patching both
    plain = load_model("tiny-llama", use_bridge=False)
    H.prepare(plain)
    readout = readout_for(plain)
    stats = H.source_stats(plain, [H.make_batch(plain, TEXTS[3:], WORDS[3:])])
    batch = H.make_batch(plain, TEXTS[:2], WORDS[:2])
    proj, _ = H.run_head_sets(plain, batch, readout, [[(1, 0)], [(1, 1)], [(1, 0), (1, 1)]], "v_only", stats=stats)
    assert not np.allclose(proj[0], proj[2], atol=1e-6) and not np.allclose(proj[0], proj[1], atol=1e-6)


def test_ov_and_qk_tables(llama):
    heads = [(1, 0), (2, 3)]
    dirs = {m: readout_for(llama, m).directions for m in range(llama.n_layers)}
    ov = circuits.ov_table(llama, heads, dirs, ["gratitude", "anger", "apology"], 4)
    assert len(ov) == 2 * 3 * 2 * 4 and set(ov["side"]) == {"top", "bottom"}
    top = ov[ov["side"] == "top"].groupby(["head_label", "emotion"])["score"]
    assert (top.apply(lambda s: s.is_monotonic_decreasing)).all()
    queries = {(e, m): np.ones(llama.d_model, np.float32) for e in ("gratitude",) for m in range(3)}
    qk_top, qk_lex = circuits.qk_table(llama, heads, queries, {"gratitude": [70, 71, 72]}, 3)
    assert len(qk_top) == 2 * 3 and len(qk_lex) == 2 and qk_lex["lexicon_percentile"].between(0, 1).all()


def test_neuron_saliency_predicts_single_neuron_ablation(llama):
    batch = H.make_batch(llama, TEXTS[:2], WORDS[:2])
    readout = readout_for(llama)
    dirs = readout.directions[[0, 0]]
    sal = neurons.saliency(llama, batch, dirs)
    assert sal.shape == (2, llama.n_layers, neurons.d_mlp(llama)) and np.isfinite(sal).all()
    mean = sal.mean(0)
    top = neurons.top_neurons(mean, 1)[0]
    proj, _ = neurons.run_neuron_sets(llama, batch, readout, [[top]])
    # zeroing a neuron changes the projection by about -saliency (first order)
    np.testing.assert_allclose(proj[0, :, 0], -sal[:, top[0], top[1]], rtol=0.3, atol=1e-4)
    rnd = H.random_unit_sets((llama.n_layers, neurons.d_mlp(llama)), 3, 2, 0, [top])
    assert all(len(s) == 3 == len(set(s)) and top not in s for s in rnd) and rnd[0] != rnd[1]
    assert rnd == H.random_unit_sets((llama.n_layers, neurons.d_mlp(llama)), 3, 2, 0, [top])  # seeded
    heads = H.random_unit_sets((3, 4), 11, 1, 5, [(0, 0)])[0]  # all heads but the excluded one
    assert heads == [(m, h) for m in range(3) for h in range(4) if (m, h) != (0, 0)]


def test_bad_params_are_one_clear_error():
    with pytest.raises(ParamsError, match="head_screening.ablation"):
        HeadScreeningParams(ablation="resample")
    with pytest.raises(ParamsError, match="head_patching.patch_modes"):
        HeadPatchingParams(patch_modes=("q_only",))
    with pytest.raises(ParamsError, match="L3H5"):
        HeadPatchingParams(patch_heads=("3.5",))
    with pytest.raises(ParamsError, match="heads.n_sentences"):
        HeadParams(n_sentences=-1)
    with pytest.raises(ParamsError, match="circuits.n_neurons"):
        CircuitParams(n_neurons=0)
    with pytest.raises(ParamsError):
        head_runs.parse_head("head7")


def test_attribution_screen_tracks_exact_ablation(llama):
    from scipy.stats import spearmanr

    batch = H.make_batch(llama, TEXTS, WORDS)
    readout = readout_for(llama)
    own = np.array([0, 1, 2, 0, 1])
    exact = H.screen_batch(llama, batch, readout)["proj_delta"][:, :, np.arange(len(TEXTS)), own]
    approx = H.attribution_batch(llama, batch, readout.directions[own])
    assert approx.shape == exact.shape
    assert spearmanr(approx.ravel(), exact.ravel()).statistic > 0.9


def _screen_frame(n_per_emotion: int = 2) -> pd.DataFrame:
    from emotion_circuits import EMOTIONS

    texts = [t for t in TEXTS[:4]] * 2
    rows = [{"id": f"s{i}", "text": texts[i % len(texts)], "emotion": e, "emotion_words": []}
            for i, e in enumerate(e for e in EMOTIONS for _ in range(n_per_emotion))]
    return pd.DataFrame(rows)


def test_screen_chunks_give_identical_tables(llama):
    """Chunk boundaries inside a sentence batch re-run its clean pass; the numbers must not change at all."""
    df, readout, hp, sc = _screen_frame(), readout_for(llama), HeadParams(batch_size=3), HeadScreeningParams()
    whole = head_runs.screen(llama, df, readout, hp, sc, 0, progress=False)
    chunked = head_runs.screen(llama, df, readout, hp, sc, 0, progress=False,
                               execution=ExecutionParams(chunk_size=2))
    pd.testing.assert_frame_equal(whole, chunked, check_exact=True)
    assert len(whole) == len(df) * 3 * 4  # sentences x layers x heads


def test_screen_worker_loads_its_own_model(llama, monkeypatch):
    """What a Ray actor does: rebuild the worker from the shipped factory alone (the frozen params sections and
    the data; its own model load); the table equals the in-process screen's, number for number."""
    import pickle  # only to prove the factory survives the trip to another process; nothing is written

    df, readout = _screen_frame(1), readout_for(llama)
    means = H.mean_head_outputs(llama, [H.make_batch(llama, TEXTS, WORDS)])
    hp, sc = HeadParams(model="tiny-llama", batch_size=2), HeadScreeningParams(ablation="mean")
    local = head_runs.screen(llama, df, readout, hp, sc, 0, means=means, progress=False)
    workers = []

    def remote(factory, chunks, execution, what, local_factory):
        workers.append(pickle.loads(pickle.dumps(factory))())
        for chunk in chunks:
            yield workers[-1](chunk)

    monkeypatch.setattr(head_runs, "imap_chunks", remote)
    shipped = head_runs.screen(llama, df, readout, hp, sc, 0, means=means, progress=False,
                               execution=ExecutionParams(chunk_size=5, executor="ray"))
    assert len(workers) == 1 and workers[0].lm is not llama and workers[0].ablation == "mean"
    pd.testing.assert_frame_equal(local, shipped, check_exact=True)


def test_bfloat16_screening_tracks_float32():
    """`heads.dtype: bfloat16` (the GPU default) runs the same engine: finite, and the per-head effects follow
    float32's (rank correlation), since bf16 only rounds."""
    from scipy.stats import spearmanr

    lm32 = load_model("tiny-llama", dtype="float32", use_bridge=False)
    lm16 = load_model("tiny-llama", dtype="bfloat16", use_bridge=False)
    for lm in (lm32, lm16):
        H.prepare(lm)
    readout = readout_for(lm32)
    out32 = H.screen_batch(lm32, H.make_batch(lm32, TEXTS, WORDS), readout)
    out16 = H.screen_batch(lm16, H.make_batch(lm16, TEXTS, WORDS), readout)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out16.values())
    a, b = out32["proj_delta"].ravel(), out16["proj_delta"].ravel()
    assert spearmanr(a, b).statistic > 0.9
    att = H.attribution_batch(lm16, H.make_batch(lm16, TEXTS, WORDS), readout.directions[[0, 1, 2, 0, 1]])
    assert att.dtype == np.float32 and np.isfinite(att).all()


def test_out_of_memory_screens_fewer_heads_per_forward(llama, monkeypatch, caplog):
    """A forward of n_heads x B rows that does not fit is retried with half the heads (logged); same numbers."""
    batch, readout = H.make_batch(llama, TEXTS, WORDS), readout_for(llama)
    clean = H.CleanScreen.of(llama, batch, readout)
    whole = H.screen_layer(llama, clean, 1, readout)
    real = H.run_edited

    def small_memory(lm, run, n_conditions, *args, **kwargs):
        if n_conditions * len(run.batch) > 2 * len(TEXTS):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(lm, run, n_conditions, *args, **kwargs)

    monkeypatch.setattr(H, "run_edited", small_memory)
    with caplog.at_level("WARNING"):
        halved = H.screen_layer(llama, clean, 1, readout)
    assert "batch size halved to 2" in caplog.text
    for key, value in whole.items():
        np.testing.assert_allclose(halved[key], value, rtol=1e-5, atol=1e-6)
    proj, _ = H.run_head_sets(llama, batch, readout, [[(0, h)] for h in range(4)] + [[(1, 0), (2, 3)]], "zero",
                              chunk=5)
    assert proj.shape == (5, len(TEXTS), 3) and "head sets (zero)" in caplog.text


def test_head_stages_refuse_an_encoder_with_one_clear_error():
    with pytest.raises(ParamsError, match="tiny-bert.*encoder"):
        head_runs.head_model(HeadParams(model="tiny-bert"), 0)
    lm = head_runs.head_model(HeadParams(model="tiny-llama"), 0)
    assert lm.hf_model.config._attn_implementation == H.ATTN_IMPL  # routed through the editing engine


def test_seeds_attention_metric_matches_hf_attention_patterns(llama):
    """The seeds' screening metric: per-token attention of the sentence-end query on emotion words (emotional
    sentences) minus on text tokens (neutral sentences), read off HF's own eager attention weights."""
    plain = load_model("tiny-llama", use_bridge=False)
    plain.hf_model.config._attn_implementation = "eager"
    df = pd.DataFrame({"id": [f"s{i}" for i in range(len(TEXTS))], "text": TEXTS,
                       "emotion": ["gratitude", "anger", "apology", "gratitude", "neutral"], "emotion_words": WORDS})
    scores = head_runs.seeds_attention_scores(llama, df[df["emotion"] != "neutral"], df[df["emotion"] == "neutral"],
                                              batch_size=2, prepend_bos=True)
    expected = np.zeros((len(TEXTS), llama.n_layers, H.arch(llama).n_heads))
    for i, (text, words) in enumerate(zip(TEXTS, WORDS)):
        batch = H.make_batch(llama, [text], [words])
        with torch.inference_mode():
            att = plain.hf_model(input_ids=batch.ids, output_attentions=True).attentions  # per layer [1, H, T, T]
        positions = batch.emotion_mask[0].bool()
        for layer, a in enumerate(att):
            expected[i, layer] = a[0, :, int(batch.end_pos[0]), positions].mean(-1).numpy()
    got = scores.set_index(["emotion", "layer", "head"])
    for layer in range(llama.n_layers):
        for head in range(H.arch(llama).n_heads):
            row = got.loc[("gratitude", layer, head)]
            assert row["emotion_mean_attn"] == pytest.approx(expected[[0, 3], layer, head].mean(), abs=1e-5)
            assert row["neutral_mean_attn"] == pytest.approx(expected[4, layer, head], abs=1e-5)
            assert row["delta_attn"] == pytest.approx(row["emotion_mean_attn"] - row["neutral_mean_attn"], abs=1e-7)
    assert set(scores["emotion"]) == {"gratitude", "anger", "apology"}
    assert (scores["samples_emotion"][scores["emotion"] == "gratitude"] == 2).all()


def _names_read(stage: str) -> tuple[set[str], set[str]]:
    """(attribute names read anywhere in stage `stage`'s code path: its module and every library file it imports,
    params sections it takes off `params`: `params.<section>` in the stage module)."""
    import ast

    from .conftest import ROOT
    from .test_cli import stage_code_deps

    module = ROOT / "stages" / f"{stage}.py"
    files = [module]
    for dep in sorted(stage_code_deps(stage)):
        path = ROOT / dep
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    attrs = {n.attr for f in files for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Attribute)}
    sections = {n.attr for n in ast.walk(ast.parse(module.read_text()))
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "params"}
    return attrs, sections


def test_dvc_params_are_what_each_stage_reads():
    """A knob reruns only the stages that read it: every `params:` key of a stage in dvc.yaml exists in
    params.yaml's schema and is read on that stage's code path, every section a stage takes off `params` is
    listed, and reporting / single-stage knobs stay off the expensive stages."""
    import dataclasses

    import yaml

    from emotion_circuits.params import Params

    from .conftest import ROOT

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    fields = {f.name: f for f in dataclasses.fields(Params)}
    for name, stage in stages.items():
        attrs, sections = _names_read(name)
        keys = [k for k in stage.get("params", []) if isinstance(k, str)]
        for key in keys:
            section, _, knob = key.partition(".")
            assert section in fields, f"{name}: params key {key!r} is not in params.yaml's schema"
            assert section in attrs, f"{name}: lists {key!r} but never reads params.{section}"
            if knob:
                known = {f.name for f in dataclasses.fields(fields[section].default_factory())}
                assert knob in known, f"{name}: params key {key!r} is not in params.yaml's schema"
                assert knob in attrs, f"{name}: lists {key!r} but its code never reads .{knob}"
        listed = {k.partition(".")[0] for k in keys}
        missing = sections - listed
        assert not missing, f"{name}: reads params.{sorted(missing)} but dvc.yaml does not list them"
    screening = stages["head_screening"]["params"]
    assert not [k for k in screening if k.split(".")[0] in ("head_patching", "circuits")], screening
    # the single-alpha stage's knobs stay off the sweep; the fluency budgets (`steering.nll_budget`, as issue 17
    # names it, and `steering.degenerate_budget`) are the steering family's shared selection rule, listed by key
    budgets = {"steering.nll_budget", "steering.degenerate_budget"}
    sweep = stages["steering_sweep"]["params"]
    assert not [k for k in sweep if k.split(".")[0] in ("steering", "alpha") and k not in budgets], sweep


def test_patching_covers_sentences_longer_than_128_tokens(llama):
    """Source statistics reach back to the longest source sentence (they stopped at a fixed 128 offsets, so on a
    154-token sentence pattern_v patching of a head's own output back was no longer the identity)."""
    long = ("I am so grateful for everything you did for me over these long and difficult months, "
            "and I will always be thankful for your kindness and patience with me.")
    frame = pd.DataFrame({"id": ["g1", "g2"], "text": [long, TEXTS[3]], "emotion_words": [["grateful"], ["Thanks"]]})
    [(batch, _)] = head_runs.make_batches(llama, frame, 2, True)
    end = int(batch.end_pos.max())
    assert end > 128
    stats = H.source_stats(llama, [batch])
    assert stats.counts.shape[0] == end and bool((stats.counts > 0).all())
    readout = readout_for(llama)
    sets = [[(0, 1)], [(1, 0), (1, 3)], [(2, 2)]]
    for mode in H.PATCH_MODES:
        for i in range(2):
            one = H.make_batch(llama, frame["text"].tolist()[i:i + 1], frame["emotion_words"].tolist()[i:i + 1])
            proj, logp = H.run_head_sets(llama, one, readout, sets, mode, stats=H.source_stats(llama, [one]))
            assert np.abs(proj).max() < 1e-5 and np.abs(logp).max() < 1e-5, (mode, i)
