"""Phase 4 maths: planted shared subspaces are recovered, independent data stays at the null, nulls are right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from emotion_circuits import EMOTIONS
from emotion_circuits.alignment import (align_layer_pair, canonical_correlations, cka_with_null,
                                        layer_pairs, linear_cka, null_summary, orthonormal_rows, overlap,
                                        passes_all_nulls, random_subspace_overlaps, similarity_scores,
                                        variant_config, verdict)

from emotion_circuits.params import AlignmentParams

FAST = AlignmentParams(reduce_dim=16, ks=(2, 4), k_report=2, n_random=200, n_perm=20, n_noise=5)


def config(variant: str, **overrides):
    return variant_config(variant, dataclasses.replace(FAST, **overrides), seed=0)


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
    s = null_summary(0.9, null)
    assert s["p"] == pytest.approx(1 / 4001) and s["z"] > 10


def test_planted_rotation_is_recovered_across_widths():
    z, labels, split = latent_data()
    xa, xb = embed(z, 40, seed=1), embed(z, 30, seed=2)
    out = align_layer_pair(xa, xb, labels, split, config("zscore"), xa_random=embed(
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
    cka = similarity_scores(xa, xb, split, "zscore", 0.2, 20, 0)["cka"]  # non-orthogonal maps lower CKA
    assert cka["raw"] > 0.6 and cka["raw"] > 5 * cka["null_q95"]


def test_independent_random_data_stays_at_the_null():
    z, labels, split = latent_data()
    xa = embed(z, 40, seed=1)
    xb = np.random.default_rng(5).standard_normal((len(z), 30))
    out = align_layer_pair(xa, xb, labels, split, config("zscore"))
    k = out["k"][2]
    assert k["overlap_after"] < k["vs_random_subspace"]["null_q95"] + 0.1
    assert out["map_r2_heldout"] < 0.05
    assert not passes_all_nulls({**{key: v for key, v in out.items() if key != "k"}, **k})
    sim = similarity_scores(xa, xb, split, "zscore", 0.2, 20, 0)
    assert sim["cka_debiased"]["raw"] < 0.05 and sim["cka"]["p"] > 0.01


def test_self_alignment_is_one_and_the_verdict_says_so():
    z, labels, split = latent_data()
    x = embed(z, 40, seed=1)
    out = align_layer_pair(x, x, labels, split, config("raw"))
    for entry in out["k"].values():
        assert entry["overlap_after"] == pytest.approx(1.0, abs=1e-6)
        assert entry["overlap_before"] == pytest.approx(1.0, abs=1e-9)
    rows = [{**{key: v for key, v in out.items() if key != "k"}, **out["k"][2]}]
    assert "self-alignment sanity check" in verdict("m", "m", rows, 2) and "(ok)" in verdict("m", "m", rows, 2)


def test_seeds_variant_interpolates_when_samples_are_fewer_than_width():
    """Full-width maps with n < d fit training rows perfectly and generalise to nothing: flagged."""
    z, labels, split = latent_data(n_per=40)
    rng = np.random.default_rng(3)
    xa, xb = rng.standard_normal((len(z), 120)), rng.standard_normal((len(z), 100))
    cfg = config("seeds", ridge_alphas=(1e-6,))
    out = align_layer_pair(xa, xb, labels, split, cfg)
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
