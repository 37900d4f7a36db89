"""Direction methods (planted signals recovered), the directions store, and the registry as the extension point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions import methods as M
from emotion_circuits.directions import store
from emotion_circuits.directions import vectors as vec
from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.model.site import Site
from emotion_circuits.registry import Registry
from emotion_circuits.store.io import read_tensors, write_parquet, write_tensors

D = 24


def axes(d: int = D, seed: int = 5) -> np.ndarray:
    """Three orthonormal planted directions, one per emotion, away from the coordinate axes."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, len(EMOTIONS))))
    return q.T


def gaussian_classes(shift: float, spread: float, n: int = 150, seed: int = 0):
    """Neutral ~ N(0, I); each emotion shifted by `shift` along its planted axis, with extra sd `spread` along it."""
    rng = np.random.default_rng(seed)
    u = axes()
    labels = np.repeat(np.array([*EMOTIONS, REFERENCE]), n)
    x = rng.standard_normal((len(labels), D))
    for i, e in enumerate(EMOTIONS):
        rows = labels == e
        x[rows] += np.outer(shift + spread * rng.standard_normal(rows.sum()), u[i])
    return x, labels, u


def cosines(found: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.sum(found * u, axis=1) / np.linalg.norm(found, axis=1)


def test_every_method_is_registered_in_order():
    assert M.METHODS.names() == ["lda", "pca1", "probe", "specific", "vector"]  # module order: sorted file names
    assert all(isinstance(m, M.DirectionMethod) and m.name == n for n, m in M.METHODS.items())


def test_vector_method_recovers_a_planted_mean_shift():
    x, labels, u = gaussian_classes(shift=3.0, spread=0.0)
    found = M.METHODS["vector"].fit(x, labels)
    assert found.shape == (3, D) and cosines(found, u).min() > 0.97
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 3.0, rtol=0.1)


def test_pca1_method_recovers_the_planted_axis_of_variance_at_the_vectors_norm():
    # small mean shift, large spread: the first principal axis is the planted one, signed like the vector
    x, labels, u = gaussian_classes(shift=0.5, spread=4.0)
    found = M.METHODS["pca1"].fit(x, labels)
    assert cosines(found, u).min() > 0.98
    np.testing.assert_allclose(np.linalg.norm(found, axis=1),
                               np.linalg.norm(M.METHODS["vector"].fit(x, labels), axis=1), rtol=1e-5)


def test_probe_method_discounts_a_high_variance_nuisance_that_the_mean_difference_keeps():
    """Emotion = shift along u plus a shift along a nuisance axis v whose within-class sd is 10x larger: the probe
    weight points along u (the discriminative direction), the mean difference leans towards v."""
    rng = np.random.default_rng(1)
    x, labels, u = gaussian_classes(shift=2.0, spread=0.0, n=400)
    v = np.linalg.qr(np.c_[u.T, rng.standard_normal(D)])[0][:, -1]  # orthogonal to every planted axis
    x += np.outer(10.0 * rng.standard_normal(len(x)), v) + np.outer(np.where(labels == REFERENCE, 0.0, 4.0), v)
    probe, mean = M.METHODS["probe"].fit(x, labels), M.METHODS["vector"].fit(x, labels)
    assert cosines(probe, u).min() > 0.9 and cosines(mean, u).max() < 0.7
    np.testing.assert_allclose(np.linalg.norm(probe, axis=1), np.linalg.norm(mean, axis=1), rtol=1e-5)


def write_vectors_run(tmp_path, x, labels, model="m", position="sentence_end", layers=(0, 1)):
    """What the vectors stage writes for one model and position, from the same activations at each layer."""
    acts = {Site(L, h).name: x for L in layers for h in ("resid_pre", "resid_post")}
    split = np.array(["fit"] * len(labels))
    tensors, norms, *_ = vec.analyse_model(model, position, acts, labels, split, 2, (), 0)
    write_tensors(tmp_path / model / f"{position}.safetensors", tensors, {})
    write_parquet(tmp_path / "norms.parquet", pd.DataFrame(norms))
    return tensors


def test_load_directions_reads_what_each_method_fits_on_the_fit_split(tmp_path):
    x, labels, _ = gaussian_classes(shift=2.0, spread=1.0, n=60)
    tensors = write_vectors_run(tmp_path, x, labels)
    assert Site(1, "resid_pre").key("probe", "directions") in tensors  # the probe method's stored weights
    sites = [Site(1), Site(0, "resid_post")]
    for name, method in M.METHODS.items():
        got = store.load_directions(tmp_path, "m", "sentence_end", sites, name, "raw")
        assert list(got) == sites
        d = got[Site(1)]
        assert isinstance(d, EmotionDirections) and (d.model, d.method, d.position) == ("m", name, "sentence_end")
        np.testing.assert_allclose(d.vectors, method.fit(x, labels), rtol=1e-4, atol=1e-5)
    assert store.n_layers_of(tmp_path, "m", "sentence_end") == 2


def test_missing_files_keys_and_unknown_units_are_one_clear_line(tmp_path):
    x, labels, _ = gaussian_classes(shift=2.0, spread=1.0, n=30)
    write_vectors_run(tmp_path, x, labels)
    with pytest.raises(DataError, match=r"other.*sentence_end.safetensors is missing: run the vectors stage"):
        store.load_directions(tmp_path, "other", "sentence_end", [Site(0)])
    with pytest.raises(DataError, match=r"no blocks\.7\.hook_resid_pre\.emotion_vectors for m \(sentence_end\)"):
        store.load_directions(tmp_path, "m", "sentence_end", [Site(7)], "pca1")
    with pytest.raises(ParamsError, match="unknown direction unit 'meters'"):
        store.load_directions(tmp_path, "m", "sentence_end", [Site(0)], "vector", "meters")


def test_a_new_method_is_one_registration_and_flows_from_the_vectors_stage_to_load_directions(tmp_path, monkeypatch):
    """The extension point end to end: register a throwaway method (in a copy of the registry, so the real one stays
    clean) and the vectors stage stores its tensors and `load_directions` returns them, with nothing else touched."""
    class NeutralMean(M.DirectionMethod):
        """The neutral centroid for every emotion: a nonsense direction, easy to recognise."""
        name = "neutral_mean"

        def fit(self, x, labels, emotions=EMOTIONS, reference=REFERENCE):
            return np.repeat(x[labels == reference].mean(axis=0, keepdims=True), len(emotions), axis=0)

    registry = Registry("direction method")
    for name, method in [*M.METHODS.items(), ("neutral_mean", NeutralMean())]:
        registry.register(name)(method)
    monkeypatch.setattr(vec, "METHODS", registry)
    monkeypatch.setattr(store, "METHODS", registry)
    x, labels, _ = gaussian_classes(shift=2.0, spread=1.0, n=30)
    x += 5.0
    write_vectors_run(tmp_path, x, labels)
    saved = read_tensors(tmp_path / "m" / "sentence_end.safetensors")
    assert Site(0, "resid_post").key("neutral_mean", "directions") in saved
    got = store.load_directions(tmp_path, "m", "sentence_end", [Site(0, "resid_post")], "neutral_mean", "norm")
    d = got[Site(0, "resid_post")]
    np.testing.assert_allclose(d["anger"].unit().vector, x[labels == REFERENCE].mean(axis=0) /
                               np.linalg.norm(x[labels == REFERENCE].mean(axis=0)), rtol=1e-5)
    norms = pd.read_parquet(tmp_path / "norms.parquet")
    expected = norms[(norms.layer == 0) & (norms.hook == "resid_post")]["mean_residual_l2"].iloc[0]
    np.testing.assert_allclose(d.norms(), expected, rtol=1e-5)


def test_probe_method_ignores_a_feature_that_only_carries_rounding_noise():
    """A near-constant dimension (sd ~1e-30, as in MiniLM's last layer) must not swallow the probe direction."""
    x, labels, u = gaussian_classes(shift=2.0, spread=0.0)
    x[:, 0] = 3.0 + 1e-30 * np.random.default_rng(2).standard_normal(len(x))
    u = u.copy()
    u[:, 0] = 0.0
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    probe = M.METHODS["probe"].fit(x, labels)
    assert np.isfinite(probe).all() and (probe[:, 0] == 0).all() and cosines(probe, u).min() > 0.9


def test_a_zero_direction_stays_zero_at_any_norm_instead_of_becoming_nan():
    rows = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]], dtype=np.float32)
    with np.errstate(all="raise"):  # no 0/0 division anywhere
        out = M.at_norms(rows, np.array([2.0, 10.0]))
    np.testing.assert_array_equal(out[0], np.zeros(3, dtype=np.float32))
    np.testing.assert_allclose(out[1], [6.0, 0.0, 8.0])
    assert out.dtype == np.float32 and np.isfinite(out).all()
