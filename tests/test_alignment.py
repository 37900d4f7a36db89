"""Phase 4 maths: planted shared subspaces are recovered, independent data stays at the null, nulls are right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from emotion_circuits import EMOTIONS
import importlib.util
from pathlib import Path

from sklearn.linear_model import RidgeCV

from emotion_circuits.alignment import features, layer_pair, maps, metrics, tables
from emotion_circuits.alignment import verdict as verdicts
from emotion_circuits.alignment.layer_pair import align_layer_pair
from emotion_circuits.alignment.metrics import (
    canonical_correlations,
    cka_with_null,
    linear_cka,
    null_summary,
    orthonormal_rows,
    overlap,
    random_subspace_overlaps,
)
from emotion_circuits.alignment.verdict import passes_all_nulls, verdict
from emotion_circuits.directions.geometry import layer_pairs

from emotion_circuits.errors import UserError
from emotion_circuits.params import AlignmentParams

FAST = AlignmentParams(reduce_dim=16, ks=(2, 4), k_report=2, n_random=200, n_perm=20, n_noise=5)


def similarity_scores(xa, xb, labels, split, mode, n_perm, seed):
    fit = split == "fit"
    ea, eb = (features.embed(x, fit, mode, 0.2, FAST.reduce_dim) for x in (xa, xb))
    return metrics.similarity_scores(ea, eb, labels, split, n_perm, seed)


def _benchmark():
    """benchmarks/alignment.py holds the one-null-at-a-time reference the batched code replaced."""
    spec = importlib.util.spec_from_file_location("alignment_benchmark",
                                                  Path(__file__).resolve().parents[1] / "benchmarks" / "alignment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(variant: str, **overrides) -> tuple[AlignmentParams, str, int]:
    """(params, variant, seed): the settings `align_layer_pair` takes after the data."""
    return dataclasses.replace(FAST, **overrides), variant, 0


def latent_data(n_per: int = 120, r: int = 12, seed: int = 0):
    """Shared latent sentence codes: each emotion moves along its own 2-d plane and varies within it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array([*EMOTIONS, "neutral"]), n_per)
    z = rng.standard_normal((len(labels), r))
    for i, e in enumerate(EMOTIONS):
        rows = labels == e
        z[rows, 2 * i] += 4.0
        z[rows, 2 * i + 1] *= 3.0
    split = np.where(np.arange(len(labels)) % 4 == 0, "test", "fit")
    return z, labels, split


def embed(z: np.ndarray, width: int, seed: int, noise: float = 0.05) -> np.ndarray:
    """Different coordinates and width: a random linear embedding plus a little noise."""
    rng = np.random.default_rng(seed)
    return z @ rng.standard_normal((z.shape[1], width)) + noise * rng.standard_normal((len(z), width))


def test_overlap_matches_scipy_principal_angles():
    rng = np.random.default_rng(0)
    u = orthonormal_rows(rng.standard_normal((4, 30)))
    v = orthonormal_rows(rng.standard_normal((4, 30)))
    assert overlap(u, v) == pytest.approx(np.mean(np.cos(subspace_angles(u.T, v.T)) ** 2), abs=1e-10)
    assert overlap(u, u) == pytest.approx(1.0)


def test_random_subspace_null_has_mean_k_over_d():
    rng = np.random.default_rng(0)
    v = orthonormal_rows(rng.standard_normal((5, 40)))
    null = random_subspace_overlaps(v, 5, 4000, rng)
    assert null.mean() == pytest.approx(5 / 40, abs=0.005)
    s = null_summary(0.9, null, "greater")
    assert s["p"] == pytest.approx(1 / 4001) and s["z"] > 10


def test_planted_rotation_is_recovered_across_widths():
    z, labels, split = latent_data()
    xa, xb = embed(z, 40, seed=1), embed(z, 30, seed=2)
    out = align_layer_pair(xa, xb, labels, split, *config("zscore"), xa_random=embed(
        np.random.default_rng(9).standard_normal(z.shape), 40, seed=3))
    k = out["k"][2]
    assert out["map_r2_heldout"] > 0.9 and not out["interpolation"]
    assert k["overlap_after"] > 0.95
    assert k["overlap_after"] > k["vs_random_subspace"]["null_q95"] and k["vs_random_subspace"]["p"] < 0.01
    assert k["overlap_after"] > k["vs_noise_map"]["null_q95"]
    assert k["random_init_overlap_after"] < 0.5
    assert k["mismatched_emotions"] < 0.5
    assert out["specific_vector_cosine_after"]["raw"] > 0.95 and out["specific_vector_cosine_after"]["p"] < 0.1
    assert out["cca_top5"][0] > 0.99
    sim = similarity_scores(xa, xb, labels, split, "zscore", 20, 0)
    cka = sim["cka"]  # non-orthogonal maps lower CKA
    assert cka["raw"] > 0.6 and cka["raw"] > 5 * cka["null_q95"]
    # width-free: the same latent geometry in both models (40 vs 30 wide) is found without any map
    assert sim["rsa"]["raw"] > 0.8 and sim["rsa"]["p"] < 0.1 and sim["rsa"]["null_q95"] < 0.1
    assert sim["emotion_geometry"]["raw"] > 0.8 and sim["emotion_geometry"]["raw"] > sim["emotion_geometry"]["null_q95"]


def test_independent_random_data_stays_at_the_null():
    z, labels, split = latent_data()
    xa = embed(z, 40, seed=1)
    xb = np.random.default_rng(5).standard_normal((len(z), 30))
    out = align_layer_pair(xa, xb, labels, split, *config("zscore"))
    k = out["k"][2]
    assert k["overlap_after"] < k["vs_random_subspace"]["null_q95"] + 0.1
    assert out["map_r2_heldout"] < 0.05
    assert not passes_all_nulls({**{key: v for key, v in out.items() if key != "k"}, **k})
    sim = similarity_scores(xa, xb, labels, split, "zscore", 20, 0)
    assert sim["cka_debiased"]["raw"] < 0.05 and sim["cka"]["p"] > 0.01
    assert sim["rsa"]["raw"] < sim["rsa"]["null_q95"] + 0.05 and sim["rsa"]["p"] > 0.01


def test_self_alignment_is_one_and_the_verdict_says_so():
    z, labels, split = latent_data()
    x = embed(z, 40, seed=1)
    out = align_layer_pair(x, x, labels, split, *config("raw"))
    for entry in out["k"].values():
        assert entry["overlap_after"] == pytest.approx(1.0, abs=1e-6)
        assert entry["overlap_before"] == pytest.approx(1.0, abs=1e-9)
    rows = [{**{key: v for key, v in out.items() if key != "k"}, **out["k"][2]}]
    assert "self-alignment sanity check" in verdict("m", "m", rows, 2) and "(ok)" in verdict("m", "m", rows, 2)


def test_self_pair_specific_vector_null_is_degenerate_and_the_verdict_does_not_count_it():
    """Mapped onto itself, every label shuffle's specific vectors transfer too: the null is 1 to ~1e-7, so its z
    and p would follow float noise. It is flagged degenerate, the same under 1e-7 input noise, and untestable."""
    z, labels, split = latent_data()
    x = embed(z, 40, seed=1)
    a = align_layer_pair(x, x, labels, split, *config("raw"))["specific_vector_cosine_after"]
    b = align_layer_pair(x, x + 1e-7, labels, split, *config("raw"))["specific_vector_cosine_after"]
    for s in (a, b):
        assert s["degenerate"] and s["z"] is None and s["p"] == 1.0
    out = align_layer_pair(x, x, labels, split, *config("raw"))
    rows = [{**{key: v for key, v in out.items() if key != "k"}, **out["k"][2],
             **similarity_scores(x, x, labels, split, "raw", 5, 0)}]
    text = verdict("m", "n", rows, 2)  # read as if two models: the specific count must not include it
    assert "transfer (permutation p < 0.05) at 0/1 layer pairs (1/1 untestable" in text
    assert verdicts.layer_pair_entry(rows[0])["specific_vector_null_degenerate"] is True

def test_seeds_variant_interpolates_when_samples_are_fewer_than_width():
    """Full-width maps with n < d fit training rows perfectly and generalise to nothing: flagged."""
    z, labels, split = latent_data(n_per=40)
    rng = np.random.default_rng(3)
    xa, xb = rng.standard_normal((len(z), 120)), rng.standard_normal((len(z), 100))
    out = align_layer_pair(xa, xb, labels, split, *config("seeds", ridge_alphas=(1e-6,)))
    assert out["map_r2_train"] > 0.99 and out["map_r2_heldout"] <= 0.0 and out["interpolation"]


def test_cka_is_invariant_to_rotation_and_scale_and_drops_when_rows_are_shuffled():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 20))
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-9)
    res = cka_with_null(x, x @ q, 30, rng)
    assert res["cka"]["raw"] == pytest.approx(1.0) and res["cka"]["null_q95"] < 0.3 and res["cka"]["p"] < 0.05
    assert res["cka_debiased"]["raw"] == pytest.approx(1.0, abs=1e-9)


def test_cca_needs_reduction_and_finds_linear_relations():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 5))
    assert canonical_correlations(x, x @ rng.standard_normal((5, 5)))[:5] == pytest.approx(np.ones(5))
    with pytest.raises(ValueError, match="reduce with PCA first"):
        canonical_correlations(rng.standard_normal((10, 20)), x[:10])


def test_layer_pairs_match_relative_depth():
    assert layer_pairs(30, 6, 6) == [(0, 0), (6, 1), (12, 2), (17, 3), (23, 4), (29, 5)]
    assert layer_pairs(6, 6, 3) == [(0, 0), (2, 2), (5, 5)]


@pytest.mark.parametrize("variant", ["zscore", "drop_massive", "seeds"])
def test_batched_nulls_equal_the_one_at_a_time_reference(variant):
    """Same seeds -> the same numbers as the pre-batching code (kept in benchmarks/alignment.py), every field."""
    bench = _benchmark()
    z, labels, split = latent_data(n_per=60)
    xa, xb = embed(z, 40, seed=1), embed(z, 30, seed=2)
    xa[:, 3] += 30.0  # a massive dimension for drop_massive
    xr = np.random.default_rng(9).standard_normal(xa.shape)
    cfg = config(variant, ks=(2, 4, 8))
    new = align_layer_pair(xa, xb, labels, split, *cfg, xr)
    ref = bench.reference_align_layer_pair(xa, xb, labels, split, *cfg, xr)
    assert bench.max_difference([ref], [new]) < 1e-9
    assert new["ridge_alpha"] == ref["ridge_alpha"] and new["dropped_dims_a"] == ref["dropped_dims_a"]


def test_batched_cka_null_equals_the_reference_per_permutation():
    bench = _benchmark()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 12)), rng.standard_normal((60, 9))
    y[:, :4] += x[:, :4]
    new = cka_with_null(x, y, 12, np.random.default_rng(3))
    ref = bench.reference_cka_with_null(x, y, 12, np.random.default_rng(3))
    assert new["cka"] == pytest.approx(ref["cka"], rel=1e-10)
    assert new["cka_debiased"]["raw"] == pytest.approx(ref["cka_debiased"]["raw"], rel=1e-10)
    kx, ky = metrics.centred_gram(x), metrics.centred_gram(y)
    perms = np.stack([rng.permutation(60) for _ in range(6)])
    lin, deb = metrics.permuted_cka(kx, ky, perms)
    assert deb == pytest.approx([bench.debiased_cka_from_grams(kx, ky[np.ix_(p, p)]) for p in perms], abs=1e-12)
    assert lin == pytest.approx([linear_cka(x, y[p]) for p in perms], abs=1e-12)


@pytest.mark.parametrize("shape", [(90, 12, 7), (40, 70, 5)])
@pytest.mark.parametrize("intercept", [True, False])
def test_ridge_path_equals_sklearn_ridgecv(shape, intercept):
    n, d, t = shape
    rng = np.random.default_rng(1)
    alphas = (0.01, 0.1, 1.0, 10.0, 100.0)
    x = rng.standard_normal((4, n, d))
    chosen = set()
    for b, noise in enumerate((0.05, 0.5, 2.0, 8.0)):
        y = x[b] @ rng.standard_normal((d, t)) + noise * rng.standard_normal((n, t)) + 3.0
        m = maps.fit_maps(x, y, alphas, intercept)[b]
        ref = RidgeCV(alphas=list(alphas), fit_intercept=intercept).fit(x[b], y)
        assert m.alpha == ref.alpha_
        assert m.weight == pytest.approx(ref.coef_.T, abs=1e-9)
        assert m.bias == pytest.approx(np.broadcast_to(ref.intercept_, (t,)), abs=1e-9)
        chosen.add(m.alpha)
    assert len(chosen) > 1  # the test exercises the alpha selection, not one corner of it


@pytest.mark.parametrize("variant", ["zscore", "drop_massive", "raw"])
def test_saved_direction_map_reproduces_the_fitted_map(tmp_path, variant):
    z, labels, split = latent_data(n_per=60)
    fit = split == "fit"
    xa, xb = embed(z, 40, seed=1), embed(z, 30, seed=2)
    xb[:, 2] += 40.0
    ea, eb = (features.embed(x, fit, variant, FAST.massive_share, FAST.reduce_dim) for x in (xa, xb))
    scores, m = layer_pair.align_embeddings(ea, eb, labels, split, FAST, variant, 0)
    meta = {"source_layer": 3, "target_layer": 5, "ridge_alpha": m.alpha, "map_r2_heldout": m.r2_heldout}
    settings = {"hook": "resid_post", "position": "sentence_end", "variant": variant, "reduce_dim": 16}
    memory = maps.DirectionMap.from_fit(m, ea, eb, True, {**meta, **settings})
    maps.save_direction_maps(tmp_path / maps.map_filename("a", "b"), {maps.layer_key(3, 5): memory}, "a", "b", settings)
    loaded = maps.load_direction_map(tmp_path, "a", "b", 3, 5)
    v = np.random.default_rng(4).standard_normal((5, 40))
    assert loaded.apply(v) == pytest.approx(memory.apply(v), abs=1e-12) and loaded.apply(v[0]).shape == (30,)
    # the map the stage scored: its reduced-space prediction gives the stage's held-out R^2
    nt = (split == "test") & (labels == "neutral")
    from sklearn.metrics import r2_score
    r2 = r2_score(eb.reduced[nt], loaded.predict(xa[nt]), multioutput="variance_weighted")
    assert r2 == pytest.approx(scores["map_r2_heldout"], abs=1e-10)
    # directions: the linear part of the same chain (mapped emotion vector == mapped difference of means)
    d = xa[fit & (labels == "anger")].mean(0) - xa[fit & (labels == "neutral")].mean(0)
    through = loaded.predict(xa[fit & (labels == "anger")]).mean(0) - loaded.predict(xa[fit & (labels == "neutral")]).mean(0)
    direction = loaded.apply(d)
    if loaded.target["scale"] is not None:
        direction = direction / loaded.target["scale"]
    if loaded.target["dropped"]:
        direction = np.delete(direction, loaded.target["dropped"])
    assert direction @ eb.pca_basis.T == pytest.approx(through, abs=1e-9)
    assert loaded.metadata == {"source": "a", "target": "b", **settings, **meta}
    assert loaded.target["dropped"] == eb.dropped and loaded.source["width"] == 40
    with pytest.raises(UserError, match="no map"):
        maps.load_direction_map(tmp_path, "a", "b", 3, 4)


def test_outputs_have_the_by_layer_plot_and_one_summary_per_model_pair(tmp_path):
    z, labels, split = latent_data(n_per=40)
    p = dataclasses.replace(FAST, variants=("zscore",), primary_variant="zscore", n_cka_perm=5)
    xs = {"smollm2-135m": [embed(z, 40, seed=s) for s in (1, 2)], "gemma3-270m": [embed(z, 30, seed=s) for s in (3, 4)]}
    cache = features.EmbeddingCache(split == "fit", p.massive_share, p.reduce_dim)
    results = []
    for a in xs:
        for b in xs:
            for la, lb in layer_pairs(2, 2, 2):
                ea, eb = cache.get((a, la), xs[a][la], "zscore"), cache.get((b, lb), xs[b][lb], "zscore")
                res, _ = layer_pair.align_embeddings(ea, eb, labels, split, p, "zscore", 0)
                results.append({"a": a, "b": b, "layer_a": la, "layer_b": lb, "variant": "zscore",
                                **metrics.similarity_scores(ea, eb, labels, split, 5, 0), **res})
    import json

    from emotion_circuits.reporting.live import stage_live

    massive = {m: features.massive_report(layers, split, p.massive_share) for m, layers in xs.items()}
    with stage_live(tmp_path / "live") as live:
        tables.write_outputs(results, {}, massive, p, tmp_path, live)
    table = json.loads((tmp_path / "live" / "plots" / "custom" / "by_layer" / "smollm2-135m__gemma3-270m.json")
                       .read_text())
    assert tuple(table[0]) == tables.by_layer_columns() and len(table) == 2
    assert all(r["overlap_before"] is None and r["rsa"] is not None for r in table)
    assert (tmp_path / "live" / "plots" / "images" / "alignment_by_layer.png").stat().st_size > 0
    summary = verdicts.summarise(results, massive, p, list(xs))
    assert summary["lead_pair"] == "smollm2-135m<->gemma3-270m"
    entry = summary["model_pairs"]["smollm2-135m<->gemma3-270m"]
    assert set(entry["verdicts"]) == {"smollm2-135m->gemma3-270m", "gemma3-270m->smollm2-135m"}
    assert entry["mean_rsa"] > 0.5 and "Width-free" in entry["verdict"]
    assert "rsa" in summary["pairs"]["smollm2-135m->gemma3-270m"]["layer_pairs"]["L00-L00"]


def test_k_sweep_reports_every_k_of_the_params_list():
    z, labels, split = latent_data(n_per=40)
    out = align_layer_pair(embed(z, 40, seed=1), embed(z, 30, seed=2), labels, split,
                           *config("zscore", ks=(2, 5, 8, 10), reduce_dim=12))
    assert sorted(out["k"]) == [2, 5, 8, 10]


def test_alignment_stage_workers_give_the_same_numbers_as_one_process():
    """The stage's model-pair groups on two forked single-threaded workers == in this process, row for row."""
    from emotion_circuits.alignment import run as stage
    from emotion_circuits.store.io import dumps_json

    z, labels, split = latent_data(n_per=40)
    p = dataclasses.replace(FAST, variants=("zscore", "seeds"), primary_variant="zscore", n_cka_perm=3,
                            n_layer_pairs=2)
    data = {"m1": [embed(z, 24, seed=s) for s in (1, 2)], "m2": [embed(z, 20, seed=s) for s in (3, 4)]}
    groups = [[(a, b, la, lb) for la, lb in layer_pairs(2, 2, 2)] for a in data for b in data]
    runs = []
    for workers in (1, 2):
        stage.STATE.clear()
        stage.STATE.update(p=p, seed=0, data=data, random_init={m: None for m in data}, labels=labels, split=split,
                            settings={"hook": "resid_post", "position": "sentence_end", "variant": "zscore",
                                      "reduce_dim": p.reduce_dim})
        runs.append(stage.run_groups(groups, workers, progress=False))
    stage.STATE.clear()
    assert len(runs[0]) == len(runs[1]) == 8
    for (rows1, map1), (rows2, map2) in zip(*runs):
        assert dumps_json(rows1) == dumps_json(rows2)
        assert np.array_equal(map1.weight, map2.weight) and map1.metadata == map2.metadata


def test_a_registered_null_reaches_the_scores_the_tables_and_the_verdict(monkeypatch):
    """A throwaway null (one no overlap can beat) registered beside the real ones: its summary is in every
    k's scores, its columns in metrics JSON and the by-layer table, and it blocks `passes_all_nulls`."""
    from emotion_circuits.alignment.nulls import NULLS, Null
    from emotion_circuits.registry import Registry

    z, labels, split = latent_data(n_per=60)
    xa, xb = embed(z, 40, seed=1), embed(z, 30, seed=2)
    p, _, _ = config("zscore")
    fit = split == "fit"
    ea, eb = (features.embed(x, fit, "zscore", p.massive_share, p.reduce_dim) for x in (xa, xb))
    sim = metrics.similarity_scores(ea, eb, labels, split, 5, 0)

    def rows():
        res, _ = layer_pair.align_embeddings(ea, eb, labels, split, p, "zscore", 0)
        return [{"a": "m1", "b": "m2", "layer_a": 0, "layer_b": 0, "variant": "zscore", **sim, **res}]

    before = rows()
    assert passes_all_nulls({**before[0], **before[0]["k"][2]})
    extended = Registry("alignment null")
    for name, null in NULLS.items():
        extended.register(name)(null)
    extended.register("unbeatable")(Null("unbeatable", "vs_unbeatable", "unbeatable", "greater", "n_perm", True,
                                         lambda ctx, state, k, rng: np.full(ctx.params.n_perm, 2.0),
                                         columns={"unbeatable_q95": "null_q95"}, by_layer="unbeatable_q95"))
    for module in (layer_pair, verdicts, tables):
        monkeypatch.setattr(module, "NULLS", extended)
    after = rows()
    row = {**after[0], **after[0]["k"][2]}
    assert row["vs_unbeatable"]["null_q95"] == 2.0 and row["vs_unbeatable"]["p"] == 1.0
    assert not passes_all_nulls(row) and verdicts.nulls_beaten(row)["unbeatable"] is False
    # the real nulls' numbers do not move when a null that draws nothing is added
    assert row["vs_permuted_labels"] == before[0]["k"][2]["vs_permuted_labels"]
    summary = verdicts.summarise(after, {}, dataclasses.replace(p, variants=("zscore",)), ["m1", "m2"])
    assert summary["pairs"]["m1->m2"]["layer_pairs"]["L00-L00"]["unbeatable_q95"] == 2.0
    table = tables.by_layer_table(tables.score_table(after).query("k == 2"))
    assert "unbeatable_q95" in tables.by_layer_columns() and table["unbeatable_q95"].tolist() == [2.0]
