"""Phase 5 engine: exact batching of conditions, hook placement, windows, schedules, controls, evaluators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emotion_circuits.evaluation.lexicon import LexiconEvaluator
from emotion_circuits.evaluation.text import continuation_nll, repetition_rate, score_all
from emotion_circuits.model.hooks import hook_name, residual_hooks
from emotion_circuits.steering.engine import (
    Condition,
    Window,
    generated_coefficients,
    prompt_coefficients,
    shared_prefix_split,
    generate,
    random_directions,
    schedule_weights,
    tokenize_prompt,
)

PROMPTS = ["The meeting on Tuesday", "When I opened the package", "Our train", "The weather report says"]


def mixed_conditions(lm, seed=0):
    """Prompts of different lengths x layers x alphas x directions x windows, all in one list."""
    rng = np.random.default_rng(seed)
    dirs = [rng.standard_normal(lm.d_model).astype(np.float32) * 4 for _ in range(2)]
    conds = [Condition(p) for p in PROMPTS]
    for p in PROMPTS:
        for layer in range(min(2, lm.n_layers)):
            for alpha in (-1.0, 2.0):
                for d, w, it in ((dirs[0], Window("last", 3), False), (dirs[1], Window("all"), False),
                                 (dirs[0], Window("generated"), False), (dirs[1], Window("last", 2), True),
                                 (dirs[0], Window("positions", positions=(0, 2)), False)):
                    conds.append(Condition(p, layer, alpha, d, w, schedule="exp", iterative=it))
    return conds


def assert_batched_matches_alone(lm, conds, max_new_tokens: int) -> list[list[int]]:
    """One batched generate of every condition equals each condition generated alone, token for token, and the
    steering changed something (more distinct outputs than prompts)."""
    batched = generate(lm, conds, max_new_tokens=max_new_tokens, batch_size=64)
    assert batched == [generate(lm, [c], max_new_tokens=max_new_tokens)[0] for c in conds]
    assert len({tuple(t) for t in batched}) > len(PROMPTS)
    return batched


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_batched_conditions_match_each_condition_alone_with_left_padding(request, fixture):
    assert_batched_matches_alone(request.getfixturevalue(fixture), mixed_conditions(request.getfixturevalue(fixture)),
                                 8)


def test_cached_generation_matches_full_recomputation(tiny_llama):
    conds = mixed_conditions(tiny_llama, seed=1)
    assert generate(tiny_llama, conds, max_new_tokens=6) == generate(tiny_llama, conds, max_new_tokens=6,
                                                                      use_cache=False)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_shared_prompt_prefixes_are_prefilled_once_and_change_nothing(request, fixture):
    """Windows that leave a prompt prefix unsteered share one prefill per prompt; tokens stay identical."""
    lm = request.getfixturevalue(fixture)
    rng = np.random.default_rng(3)
    d = rng.standard_normal(lm.d_model).astype(np.float32) * 4
    conds = [Condition(p, layer, alpha, d, w) for p in PROMPTS for layer in range(min(2, lm.n_layers))
             for alpha in (0.0, -1.5, 2.5) for w in (Window("last", 2), Window("generated"))]
    prompts = [tokenize_prompt(lm, c.prompt) for c in conds]
    tail = shared_prefix_split(prompts, [prompt_coefficients(c, len(p)) for c, p in zip(conds, prompts)])
    assert tail < max(len(p) for p in prompts)  # the split really shares a prefix here
    batched = generate(lm, conds, max_new_tokens=7, batch_size=64)
    assert batched == generate(lm, conds, max_new_tokens=7, use_cache=False)
    assert batched == [generate(lm, [c], max_new_tokens=7)[0] for c in conds]
    assert len({tuple(t) for t in batched}) > len(PROMPTS)


def test_alpha_zero_is_exactly_unsteered(tiny_gpt2):
    d = np.ones(tiny_gpt2.d_model, dtype=np.float32) * 100
    plain = generate(tiny_gpt2, [Condition(p) for p in PROMPTS], max_new_tokens=6)
    zero = generate(tiny_gpt2, [Condition(p, 1, 0.0, d, Window("all")) for p in PROMPTS], max_new_tokens=6)
    assert plain == zero


def test_huge_alpha_pushes_next_token_towards_the_direction(tiny_llama):
    """Steering along a token's unembedding row at the last layer makes that token the prediction."""
    lm = tiny_llama
    target = lm.tokenizer.convert_tokens_to_ids("Q")
    direction = lm.hf_model.get_output_embeddings().weight[target].detach().numpy()
    out = generate(lm, [Condition(p, lm.n_layers - 1, 50.0, direction, Window("last", 1)) for p in PROMPTS],
                   max_new_tokens=1)
    assert all(t[0] == target for t in out)


def test_window_and_schedule_positions_are_the_intended_ones(tiny_llama):
    c = Condition("x", 0, 2.0, np.zeros(1), Window("last", 3), schedule="linear")
    np.testing.assert_allclose(prompt_coefficients(c, 5), [0, 0, 2.0, 2.0 * 2 / 3, 2.0 / 3])
    c = Condition("x", 0, 1.0, np.zeros(1), Window("positions", positions=(0, 3, 9)))
    np.testing.assert_allclose(prompt_coefficients(c, 5), [1, 0, 0, 1, 0])
    assert not generated_coefficients(c, 4).any()
    c = Condition("x", 0, 1.0, np.zeros(1), Window("generated"), schedule="exp", decay=0.5)
    assert not prompt_coefficients(c, 4).any()
    np.testing.assert_allclose(generated_coefficients(c, 3), [1, 0.5, 0.25])
    np.testing.assert_allclose(schedule_weights("constant", 2, 0.5), [1, 1])
    # the hook really adds coef * direction at those positions of resid_pre
    lm = tiny_llama
    ids = torch.tensor([tokenize_prompt(lm, "Hello")])
    seen = {}
    with torch.inference_mode(), residual_hooks(lm, {hook_name(1, "resid_pre"): lambda x: seen.setdefault("x", x.clone())}):
        lm.hf_model(input_ids=ids)
    assert seen["x"].shape == (1, ids.shape[1], lm.d_model)


def test_random_controls_have_exactly_the_reference_norm():
    ref = np.arange(1, 33, dtype=np.float32)
    dirs = random_directions(ref, 50, seed=3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), np.linalg.norm(ref), rtol=1e-5)
    assert not np.allclose(dirs[0], dirs[1])
    np.testing.assert_array_equal(dirs, random_directions(ref, 50, seed=3))


def test_bad_conditions_are_clear_errors(tiny_llama, tiny_bert):
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        Condition("x", 0, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer 7 out of range"):
        generate(tiny_llama, [Condition("x", 7, 1.0, np.zeros(tiny_llama.d_model))])
    with pytest.raises(ValueError, match="cannot generate"):
        generate(tiny_bert, [Condition("x")])
    with pytest.raises(ValueError, match="unknown window"):
        Window("middle")


def test_lexicon_evaluator_on_known_texts():
    ev = LexiconEvaluator({"gratitude": ["thank you", "thanks", "grateful"], "anger": ["outrageous", "furious"],
                           "apology": ["sorry", "apologize"]})
    scores = ev.score(["Thank you so much!", "This is outrageous.", "I am so sorry, I apologize."])
    assert scores.loc[0, "vader_compound"] > scores.loc[1, "vader_compound"]
    assert scores.loc[0, "lex_gratitude"] == pytest.approx(100 * 1 / 4)
    assert scores.loc[1, "lex_anger"] > 0 and scores.loc[1, "lex_gratitude"] == 0
    assert scores.loc[2, "lex_apology"] == pytest.approx(100 * 2 / 6)


def test_repetition_and_nll_measure_fluency(tiny_llama):
    assert repetition_rate("thank you thank you thank you thank you".split()) > 0.5
    assert repetition_rate("the cat sat on the mat today".split()) == 0.0
    lm = tiny_llama
    prompts = [tokenize_prompt(lm, p) for p in PROMPTS]
    conts = [lm.tokenizer("abc", add_special_tokens=False)["input_ids"], [], *[[65, 66, 67, 68]] * 2]
    batched = continuation_nll(lm, prompts, conts, batch_size=4)
    single = [continuation_nll(lm, [p], [c])[0] for p, c in zip(prompts, conts)]
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert np.isnan(batched[1]) and batched[0] > 0
    assert set(score_all([], ["a b c a b c"]).columns) == {"repetition", "degenerate"}


@pytest.mark.real
def test_smollm2_batched_steering_matches_single_runs(smollm2):
    rng = np.random.default_rng(0)
    d = rng.standard_normal(smollm2.d_model).astype(np.float32) * 3
    conds = [Condition(p) for p in PROMPTS] + [Condition(p, layer, 1.5, d, Window(w)) for p in PROMPTS
                                               for layer in (3, 15) for w in ("last", "all")]
    batched = generate(smollm2, conds, max_new_tokens=10, batch_size=32)
    assert batched[::3] == [generate(smollm2, [c], max_new_tokens=10)[0] for c in conds[::3]]


def test_steering_params_are_validated(tmp_path):
    import yaml

    from emotion_circuits.errors import ParamsError
    from emotion_circuits.params import load_params

    from .conftest import ROOT

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    cases = [({"alpha": "two"}, "alpha must be a number"),
             ({"steering_common": {**base["steering_common"], "emotions": ["joy"]}}, "unknown emotion 'joy'"),
             ({"steering_sweep": {**base["steering_sweep"], "alphas": [1, "x"]}},
              r"steering_sweep.alphas must be numbers"),
             ({"steering_sweep": {**base["steering_sweep"], "layers": [-1]}}, "non-negative integers"),
             ({"steering_common": {**base["steering_common"], "window": "middle"}}, "steering_common.window"),
             ({"steering": {**base["steering"], "single_prompts": 3}}, "unknown key.*steering.*single_prompts"),
             ({"steering": {**base["steering"], "layers": [3]}}, "unknown key.*'steering'.*layers")]
    for i, (override, message) in enumerate(cases):
        path = tmp_path / f"p{i}.yaml"
        path.write_text(yaml.safe_dump({**base, **override}))
        with pytest.raises(ParamsError, match=message):
            load_params(path)


def test_hf_evaluator_offline_is_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    from emotion_circuits.errors import ModelLoadError
    from emotion_circuits.evaluation.hf import HFEvaluator

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="evaluator backend 'hf' needs"):
        HFEvaluator()


def test_hf_evaluator_scores_every_label_in_input_order(tmp_path):
    """The hub backend end to end with two tiny local classifiers standing in for the seeds' models."""
    from transformers import BertConfig, BertForSequenceClassification

    from emotion_circuits.evaluation.hf import HFEvaluator
    from emotion_circuits.model.loading import byte_tokenizer

    dirs = []
    for name, labels in (("sentiment", ["negative", "neutral", "positive"]), ("polite", ["Polite", "Impolite"])):
        torch.manual_seed(len(labels))
        config = BertConfig(vocab_size=len(byte_tokenizer(True)), hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32, num_labels=len(labels),
                            id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
        BertForSequenceClassification(config).save_pretrained(tmp_path / name)
        byte_tokenizer(True).save_pretrained(tmp_path / name)
        dirs.append(str(tmp_path / name))
    texts = ["Thank you so much!", "This is outrageous.", "I am so sorry about that.", "The bus left."]
    ev = HFEvaluator(dirs, batch_size=3)
    scores = ev.score(texts)
    assert list(scores.columns) == ["hf_sentiment_negative", "hf_sentiment_neutral", "hf_sentiment_positive",
                                    "hf_polite_polite", "hf_polite_impolite"]
    assert len(scores) == len(texts)
    np.testing.assert_allclose(scores.filter(like="hf_sentiment").sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores.filter(like="hf_polite").sum(axis=1), 1.0, rtol=1e-5)
    alone = pd.concat([ev.score([t]) for t in texts], ignore_index=True)
    np.testing.assert_allclose(scores.to_numpy(), alone[scores.columns].to_numpy(), rtol=1e-4, atol=1e-6)
    assert scores["hf_sentiment_positive"].nunique() > 1  # texts are really scored, not a constant


def test_saved_alignment_map_carries_a_planted_direction_across_models(tmp_path):
    """Cross-model steering's direction: a latent direction embedded in model A, through the map the alignment
    stage fits and saves, lands on the same latent direction embedded in model B."""
    from emotion_circuits.alignment import features, layer_pair, maps as al
    from emotion_circuits.params import AlignmentParams

    from .test_alignment import latent_data

    z, labels, split = latent_data()
    rng = np.random.default_rng(4)
    emb_a, emb_b = rng.standard_normal((12, 40)), rng.standard_normal((12, 30))
    xa, xb = z @ emb_a, z @ emb_b
    p = AlignmentParams(reduce_dim=12, ks=(2,), k_report=2, ridge_alphas=(1e-3, 1e-2), n_random=5, n_perm=2, n_noise=2)
    fit = split == "fit"
    ea, eb = (features.embed(x, fit, "zscore", p.massive_share, p.reduce_dim) for x in (xa, xb))
    scores, m = layer_pair.align_embeddings(ea, eb, labels, split, p, "zscore", 0)
    settings = {"hook": "resid_post", "position": "sentence_end", "variant": "zscore", "reduce_dim": 12}
    dm = al.DirectionMap.from_fit(m, ea, eb, True, {"source_layer": 0, "target_layer": 0, **settings})
    al.save_direction_maps(tmp_path / al.map_filename("a", "b"), {al.layer_key(0, 0): dm}, "a", "b", settings)
    mapper = al.load_direction_map(tmp_path, "a", "b", 0, 0)
    latent_dir = np.eye(12)[0]
    mapped, target = mapper.apply(latent_dir @ emb_a), latent_dir @ emb_b
    assert scores["map_r2_heldout"] > 0.99
    assert mapped @ target / np.linalg.norm(mapped) / np.linalg.norm(target) > 0.99


def test_embedding_evaluator_ranks_known_texts():
    import pandas as pd

    from emotion_circuits.evaluation.embedding import EmbeddingEvaluator

    from emotion_circuits.data import build_sentences

    from .conftest import ROOT

    sentences, _ = build_sentences(ROOT / "data/emotions.jsonl", 0.25, 0, "smoke", 40)
    ev = EmbeddingEvaluator(sentences[sentences["split"] == "fit"].drop(columns="split"))
    scores = ev.score(["Thank you so much, I really appreciate it!", "This is outrageous, I am furious."])
    assert scores.loc[0, "p_gratitude"] > scores.loc[1, "p_gratitude"]
    assert scores.loc[1, "p_anger"] > scores.loc[0, "p_anger"]
    assert isinstance(scores, pd.DataFrame)  # its held-out accuracy: the judges stage (tests/test_judges.py)


def test_pca1_directions_have_the_emotion_vectors_norm(tmp_path):
    import pandas as pd

    from emotion_circuits import EMOTIONS
    from emotion_circuits.directions.store import load_directions
    from emotion_circuits.errors import ParamsError
    from emotion_circuits.model.site import Site
    from emotion_circuits.store.io import write_parquet, write_tensors

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3, 16)).astype(np.float32)
    tensors = {"blocks.2.hook_resid_pre.emotion_vectors": vecs}
    for i, e in enumerate(EMOTIONS):
        axis = vecs[i] + 0.1 * rng.standard_normal(16).astype(np.float32)
        tensors[f"blocks.2.hook_resid_pre.pca.{e}.components"] = np.stack([axis / np.linalg.norm(axis)] * 2)
    write_tensors(tmp_path / "m" / "sentence_end.safetensors", tensors, {})
    write_parquet(tmp_path / "norms.parquet", pd.DataFrame(
        [{"model": "m", "position": "sentence_end", "hook": "resid_pre", "layer": 2, "mean_residual_l2": 50.0}]))
    plain, pca, normed = (load_directions(tmp_path, "m", "sentence_end", [Site(2)], method, unit)[Site(2)]
                          for method, unit in (("vector", "raw"), ("pca1", "raw"), ("vector", "norm")))
    for i, e in enumerate(EMOTIONS):
        np.testing.assert_allclose(plain[e].vector, vecs[i])
        assert pca[e].norm == pytest.approx(np.linalg.norm(vecs[i]), rel=1e-5)
        assert pca[e].vector @ vecs[i] > 0
        assert normed[e].norm == pytest.approx(50.0, rel=1e-5)
    with pytest.raises(ParamsError, match="unknown direction method 'pca9'"):
        load_directions(tmp_path, "m", "sentence_end", [Site(2)], "pca9", "raw")


@pytest.mark.parametrize("stage, override, knob", [
    ("steering_sweep", {"steering_sweep": {"layers": [1, 30]}}, "steering_sweep.layers"),
    ("steering", {"steering": {"layer": 30}}, "steering.layer")])
def test_a_layer_beyond_the_models_depth_is_the_first_check(tmp_path, monkeypatch, capsys, stage, override, knob):
    """No artefacts at all (no vectors, no prompts) and no weights loaded: the depth comes from the model's GGUF
    header (SmolLM2-135M: 30 layers), so the check runs before anything is read or loaded."""
    import importlib

    import yaml

    from emotion_circuits import cli

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(override))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"stages.{stage}")
    assert cli.run_stage(stage, "", module.run, ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {knob}: layer 30 is beyond the model's 30 layers (valid: 0..29)"]
    assert not (tmp_path / "results").exists()


def _single_grid_table():
    """The single-alpha grid on 2 neutral prompts + 1 real-world text, with fake scores (no model)."""
    from emotion_circuits import EMOTIONS
    from emotion_circuits.params import SteeringCommonParams, SteeringParams
    from emotion_circuits.steering.single import build_single_grid, single_prompts

    rng = np.random.default_rng(0)
    from emotion_circuits.directions.emotion_directions import EmotionDirections
    from emotion_circuits.model.site import Site

    def vecs():
        return EmotionDirections("tiny", Site(1), "sentence_end", "vector", rng.standard_normal((len(EMOTIONS), 4)))
    neutral = pd.DataFrame({"id": ["n0", "n1"], "text": ["The day", "Our plan"]})
    real = pd.DataFrame({"id": ["r0"], "text": ["Thank you so much"], "label": ["gratitude"]})
    prompts = single_prompts(neutral, real, 2)
    conds, meta = build_single_grid(prompts, {"sentence_end": vecs(), "emotion_tokens": vecs()},
                                    {"pca1": vecs(), "probe": vecs()}, SteeringCommonParams(),
                                    SteeringParams(layer=1, n_prompts=2, n_random=3), 0.8, seed=0)
    scores = {f"effect_lex_{e}": rng.standard_normal(len(meta)) for e in EMOTIONS}
    return conds, meta.assign(**scores)


def test_every_direction_variant_of_the_single_alpha_grid_gets_its_equal_norm_null():
    from emotion_circuits.stats.effects import single_effect_samples

    conds, table = _single_grid_table()
    assert {c.alpha for c, k in zip(conds, table["kind"]) if k != "baseline"} == {0.8}
    samples = single_effect_samples(table, ["lex"])
    neutral = samples[samples["effect"].str.contains("/neutral/")]
    variant = neutral["effect"].str.split("/").str[4]
    with_null = set(variant[neutral["group"] == "null"])
    directions = {v for v in table["variant"] if v.startswith("direction_")}
    assert directions == {"direction_pca1", "direction_probe"}  # every alternative method becomes a variant
    assert with_null == {"prompt_only", *directions}  # ... and none of them loses the random null
    assert not {"iterative", "vector_emotion_tokens"} & with_null  # other norm or application: tested vs 0
    assert set(samples.loc[samples["effect"].str.contains("/real_world/"), "group"]) == {"effect"}


def test_effect_rows_carry_typed_layer_and_alpha_into_the_effects_table():
    """No string round trip: the effects table's layer/hook/alpha come from typed sample columns."""
    from emotion_circuits.params import StatisticsParams
    from emotion_circuits.stats.effects import effect_labels, single_effect_samples
    from emotion_circuits.stats.samples import combine_samples
    from emotion_circuits.stats.summary import analyse_samples

    _, table = _single_grid_table()
    samples = single_effect_samples(table, ["lex"])
    assert samples["layer"].eq(1).all() and samples["alpha"].eq(0.8).all()
    assert samples["hook"].eq("blocks.1.hook_resid_pre").all()
    assert samples["effect"].iloc[0].split("/")[1:3] == ["blocks.1.hook_resid_pre", "alpha=0.8"]  # same label text
    labels = effect_labels(samples.assign(effect=samples["effect"] + "#renamed"))  # labels do not read the id
    assert labels["layer"].eq(1).all() and labels["alpha"].eq(0.8).all()
    few = combine_samples({"t": samples[samples["effect"].str.contains("gratitude/.*/neutral/prompt_only",
                                                                       regex=True)]})
    effects = analyse_samples(few, StatisticsParams(n_boot=100, n_perm=100), seed=0)
    assert len(effects) == 1 and effects["layer"].iloc[0] == 1 and effects["alpha"].iloc[0] == 0.8
