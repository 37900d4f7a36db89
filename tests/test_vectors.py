"""Phase 3 maths on synthetic arrays with planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_circuits import EMOTIONS
from emotion_circuits.directions.geometry import (
    cosine_table,
    emotion_vectors,
    fix_signs,
    massive_dimensions,
    principal_subspace,
)
from emotion_circuits.directions.vectors import probe_suite, vector_norms
from emotion_circuits.model.site import Site


def planted(n_per: int = 60, d: int = 20, sep: float = 3.0, seed: int = 0):
    """Four classes, each emotion displaced from neutral along its own axis."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array([*EMOTIONS, "neutral"]), n_per)
    x = rng.standard_normal((len(labels), d))
    for i, e in enumerate(EMOTIONS):
        x[labels == e, i] += sep
    split = np.where(rng.random(len(labels)) < 0.75, "fit", "test")
    return x, labels, split


def test_emotion_vectors_are_mean_differences_and_norms_follow():
    x, labels, _ = planted(n_per=2000)
    vecs = emotion_vectors(x, labels)
    np.testing.assert_allclose(vecs[:, :3], 3.0 * np.eye(3), atol=0.12)
    l1, l2 = vector_norms(vecs)
    assert np.all(l1 >= l2) and np.allclose(l2, np.linalg.norm(vecs, axis=1))
    assert cosine_table(vecs)[0, 1] < 0.1
    with pytest.raises(ValueError, match="equal widths"):
        cosine_table(vecs, vecs[:, :5])


def test_principal_subspace_matches_svd_with_deterministic_signs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((80, 12)) * np.linspace(4, 0.5, 12)
    ref = rng.standard_normal(12)
    comps, ratio = principal_subspace(x, 4, x.mean(axis=0), ref)
    _, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(comps * vt[:4], axis=1)), 1.0, atol=1e-10)
    np.testing.assert_allclose(ratio, s[:4] ** 2 / np.sum(s**2), atol=1e-12)
    assert np.all(comps @ ref >= 0)
    flipped, _ = principal_subspace(x, 4, x.mean(axis=0), -ref)
    np.testing.assert_allclose(flipped, -comps, atol=1e-10)
    wide_x = rng.standard_normal((12, 30)) * np.linspace(3, 1, 30)  # fewer rows than dims: Gram branch
    wide, _ = principal_subspace(wide_x, 3, None)
    _, _, wide_vt = np.linalg.svd(wide_x, full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(wide * wide_vt[:3], axis=1)), 1.0, atol=1e-10)


def test_fix_signs_without_a_reference_makes_the_largest_coordinate_positive():
    comps = np.array([[0.1, -0.9, 0.2], [-0.5, 0.1, -0.2]])
    fixed = fix_signs(comps, None)
    assert fixed[0, 1] > 0 and fixed[1, 0] > 0
    orthogonal_to_first = np.array([0.0, 0.2, 0.9])
    fixed = fix_signs(comps, orthogonal_to_first)
    assert fixed[0, 1] == 0.9 and fixed[1] @ orthogonal_to_first >= 0


def test_probes_find_planted_emotions_and_shuffled_labels_are_at_chance():
    x, labels, split = planted()
    scores = probe_suite(x, labels, split, seed=0)
    assert scores["4way"][0] > 0.85 and 0.1 < scores["4way"][1] < 0.45
    for e in EMOTIONS:
        assert scores[f"{e}_vs_neutral"][0] > 0.85


def test_massive_dimensions_catch_large_offsets_and_large_variance():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 50))
    x[:, 7] += 300.0  # near-constant huge offset: tiny variance, dominant second moment
    x[:, 9] *= 40.0   # huge variance
    dims, shares = massive_dimensions(x, 0.2)
    assert dims.tolist() == [7, 9] and shares[7] > 0.9


def test_width_free_geometry_is_invariant_to_an_isometry_into_another_width():
    from scipy.stats import ortho_group

    from emotion_circuits.directions.vectors import geometry_comparison

    rng = np.random.default_rng(0)
    va = {Site(m, "resid_post").key("emotion_vectors"): rng.standard_normal((3, 8)) for m in range(2)}
    q = ortho_group.rvs(12, random_state=1)[:8]  # an isometry R^8 -> R^12
    vb = {k: 2.5 * v @ q for k, v in va.items()}
    same = geometry_comparison(va, vb, [(0, 0), (1, 1)])
    assert same["L00|L00"]["mean_abs_difference"] < 1e-9 and same["L01|L01"]["mean_abs_difference"] < 1e-9
    other = geometry_comparison(va, vb, [(0, 1)])["L00|L01"]
    assert other["mean_abs_difference"] > 0.05 and set(other["a"]) == {"gratitude|anger", "gratitude|apology",
                                                                     "anger|apology"}
