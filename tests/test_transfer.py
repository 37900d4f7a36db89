"""Emotion-specific direction methods (specific, lda) and the vectors stage's cross-source transfer, on synthetic
arrays: planted signals recovered, nulls calibrated, nothing scored on a row it was fitted on, deterministic."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from emotion_circuits import EMOTIONS, LABELS
from emotion_circuits.directions import transfer as T
from emotion_circuits.directions import vectors as vec
from emotion_circuits.directions.methods import METHODS
from emotion_circuits.errors import ParamsError
from emotion_circuits.model.site import Site
from emotion_circuits.params import VectorParams

D = 20


def planted(n: int = 200, shared: float = 4.0, specific: float = 1.5, seed: int = 0):
    """Every emotion = a large shared shift along c (whose size varies within each class: emotional intensity)
    plus its own smaller shift along u_e; c and the u_e orthonormal."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((D, 4)))[0].T
    c, u = q[0], q[1:]
    labels = np.repeat(np.array(LABELS), n)
    x = rng.standard_normal((len(labels), D))
    for i, e in enumerate(EMOTIONS):
        rows = labels == e
        x[rows] += np.outer(shared + rng.standard_normal(rows.sum()), c) + specific * u[i]
    return x, labels, c, u


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_specific_removes_the_shared_component_and_keeps_the_emotions_own_axis_at_the_vectors_norm():
    x, labels, c, u = planted()
    vector, specific = METHODS["vector"].fit(x, labels), METHODS["specific"].fit(x, labels)
    assert cos(vector, c).min() > 0.85 and cos(vector, u).max() < 0.5  # the mean difference is mostly "emotional"
    assert np.abs(cos(specific, c)).max() < 0.1 and cos(specific, u).min() > 0.75
    shared = vector.mean(axis=0) / np.linalg.norm(vector.mean(axis=0))
    np.testing.assert_allclose(specific @ shared, 0.0, atol=1e-4)  # exactly orthogonal to the shared axis
    np.testing.assert_allclose(np.linalg.norm(specific, axis=1), np.linalg.norm(vector, axis=1), rtol=1e-5)


def test_lda_finds_what_tells_each_emotion_from_all_others_and_matches_sklearns_shrinkage_lda():
    x, labels, c, u = planted()
    lda, vector = METHODS["lda"].fit(x, labels), METHODS["vector"].fit(x, labels)
    # rest = neutral + the other emotions: the shared axis still tells e from neutral, so some of it stays, but
    # most of the direction is the emotion's own axis (the mean difference: cos 0.3-0.4 with it, > 0.85 with c)
    assert cos(lda, u).min() > 0.75 and np.abs(cos(lda, c)).max() < 0.35
    assert (cos(lda, u) > 2 * cos(vector, u)).all() and cos(vector, c).min() > 0.85
    assert (np.sum(lda * vector, axis=1) > 0).all()  # sign: +alpha means more of the emotion
    np.testing.assert_allclose(np.linalg.norm(lda, axis=1), np.linalg.norm(vector, axis=1), rtol=1e-5)
    for i, e in enumerate(EMOTIONS):
        ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, labels == e).coef_[0]
        assert cos(lda[i], ref) > 0.97


@pytest.mark.parametrize("name", ["vector", "specific", "lda"])
def test_vectorised_permutation_nulls_equal_refitting_each_permutation(name):
    x, labels, _, _ = planted(n=40)
    rng = np.random.default_rng(3)
    sets = np.stack([labels, *(rng.permutation(labels) for _ in range(4))])
    how = METHODS[name]
    assert how.vectorised_null
    np.testing.assert_allclose(how.fit_permuted(x, sets), np.stack([how.fit(x, s) for s in sets]),
                               rtol=1e-4, atol=1e-6)


def two_sources(n: int = 30, structured: bool = True, seed: int = 0):
    """Index + activations of both sources, fit and test, n rows per class each; `structured`: the same planted
    emotion axes in both sources (plus a source offset), else activations independent of the labels."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((D, 3)))[0].T
    rows = [(s, part, c) for s in T.SOURCES for part in ("fit", "test") for c in LABELS for _ in range(n)]
    index = pd.DataFrame(rows, columns=["source", "split", "emotion"])
    x = rng.standard_normal((len(index), D)) + np.where(index["source"] == "goemotions", 1.0, 0.0)[:, None]
    if structured:
        for i, e in enumerate(EMOTIONS):
            x[(index["emotion"] == e).to_numpy()] += 4.0 * u[i]
    return index, x


def run(index, x, layers=(0, 1), **kw):
    acts = {Site(L, "resid_post").name: x + 0.1 * L for L in layers} | {Site(0, "resid_pre").name: x}
    return T.frames(*T.analyse_transfer("m", "sentence_end", acts, index, VectorParams(**kw), seed=0))


def test_transfer_of_planted_directions_beats_permuted_label_directions():
    directions, probes = run(*two_sources(), transfer_n_perm=50, probe_n_perm=20)
    assert set(directions["hook"]) == {"resid_post"} and set(directions["layer"]) == {0, 1}
    assert set(directions["method"]) == {"vector", "specific", "lda", "probe"}
    assert set(zip(directions["fit_source"], directions["eval_source"])) == {
        (f, e) for f in T.FIT_SOURCES for e in T.SOURCES}
    refit = directions[directions["null"] == "refit"]
    assert set(refit["method"]) == {"vector", "specific", "lda"}
    assert refit["auroc_rest"].min() > 0.95 and directions["auroc_neutral"].min() > 0.95
    # random-label mean differences in strongly clustered data still lean on the class axes (random sign), so the
    # null is wide (q95 up to ~0.85 here), but centred on 0.5 and beaten by the real directions
    assert abs(refit["null_mean"].mean() - 0.5) < 0.05 and refit["null_mean"].between(0.3, 0.7).all()
    assert (refit["p"] < 0.05).all() and refit["p"].median() == 1 / 51
    assert (directions.loc[directions["null"] == "eval_labels", "p"] == 1 / 51).all()
    assert probes["balanced_accuracy"].min() > 0.8  # the source offset costs the cross-source probes a little
    assert probes["null_mean"].between(0.2, 0.3).all() and (probes["p"] == 1 / 21).all()


def test_transfer_of_unstructured_data_is_at_chance_with_large_p():
    directions, probes = run(*two_sources(structured=False), layers=(0, 1, 2, 3), transfer_n_perm=50)
    assert abs(directions["auroc_rest"].mean() - 0.5) < 0.03 and directions["p"].median() > 0.2
    assert (directions["p"] < 0.05).mean() < 0.15
    assert abs(probes["balanced_accuracy"].mean() - 0.25) < 0.05 and probes["p"].median() > 0.2


def test_directions_are_never_scored_on_fit_rows():
    """Fit rows of the hand-written source set to NaN: everything fitted without them (fit source goemotions) is
    unchanged and finite, so no hand-written fit row is ever scored; the counts are each test split's."""
    index, x = two_sources(n=20)
    clean, _ = run(index, x, layers=(0,), transfer_n_perm=20, transfer_methods=("vector", "lda"))
    poisoned = x.copy()
    poisoned[((index["source"] == "handwritten") & (index["split"] == "fit")).to_numpy()] = np.nan
    labels, split, source = (index[c].to_numpy() for c in ("emotion", "split", "source"))
    rows = pd.DataFrame(T.direction_transfer(poisoned, labels, split, source, ("vector", "lda"), 20, 0,
                                             fit_sources=("goemotions",)))
    keep = rows["fit_source"] == "goemotions"
    assert keep.all() and set(rows["eval_source"]) == set(T.SOURCES)
    cols = ["auroc_rest", "auroc_neutral", "null_mean", "null_q95", "p"]
    assert np.isfinite(rows.loc[keep, cols].to_numpy()).all()
    pd.testing.assert_frame_equal(rows.loc[keep, cols].reset_index(drop=True),
                                  clean.loc[clean["fit_source"] == "goemotions", cols].reset_index(drop=True))
    assert ((clean["n_emotion"] == 20) & (clean["n_rest"] == 60) & (clean["n_neutral"] == 20)).all()


def test_probes_fit_on_the_fit_split_and_predict_only_the_eval_sources_test_split(monkeypatch):
    index, x = two_sources(n=10)
    seen: list[tuple[str, np.ndarray]] = []

    class Recording:
        def __init__(self):
            self.model = vec.make_pipeline(vec.StandardScaler(), vec.LogisticRegression(C=0.1, max_iter=2000))

        def fit(self, xs, ys):
            seen.append(("fit", xs))
            self.model.fit(xs, ys)
            return self

        def predict(self, xs):
            seen.append(("predict", xs))
            return self.model.predict(xs)

    monkeypatch.setattr(vec, "four_way_probe", Recording)
    labels, split, source = (index[c].to_numpy() for c in ("emotion", "split", "source"))
    rows = T.probe_transfer(x, labels, split, source, 5, 0)
    expected = []
    for f in T.SOURCES:
        expected.append(("fit", x[(split == "fit") & (source == f)]))
        expected += [("predict", x[(split == "test") & (source == e)]) for e in T.SOURCES]
    assert [k for k, _ in seen] == [k for k, _ in expected]
    for (_, got), (_, want) in zip(seen, expected):
        np.testing.assert_array_equal(got, want)
    assert [r["n_eval"] for r in rows] == [40] * 4


def test_transfer_is_deterministic():
    index, x = two_sources(n=15)
    a, b = run(index, x, transfer_n_perm=30), run(index, x, transfer_n_perm=30)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_one_source_only_is_skipped_with_a_note(caplog):
    index, x = two_sources(n=5)
    one = index.assign(source="handwritten")
    with caplog.at_level(logging.INFO):
        directions, probes = run(one, x)
    assert directions.empty and probes.empty and list(directions.columns) == T.DIRECTION_COLUMNS
    assert "no fit and test rows of both sources" in caplog.text
    assert not T.has_both_sources(index.drop(columns="source"))


def test_metrics_goals():
    directions, probes = run(*two_sources(n=20), layers=(0, 1, 2), transfer_n_perm=20)
    block = T.summarise(directions, probes)["m"]["sentence_end"]
    assert set(block["probe"]) == {"L00", "L01", "L02"}
    hr = [block["probe"][k]["hand_to_real_ba"] / block["probe"][k]["real_to_real_ba"] for k in sorted(block["probe"])]
    assert block["goal_probe_ratio"]["median_over_layers"] == pytest.approx(float(np.median(hr)))
    assert set(block["directions_hand_to_real"]) == {"vector", "specific", "lda", "probe"}
    own = block["own_directions_on_real"]
    assert set(own) == {"vector", "specific", "lda", "probe"} and set(own["vector"]["L01"]) == set(EMOTIONS)
    assert block["own_directions_p_max"]["lda"]["L01"] == max(v["p"] for v in own["lda"]["L01"].values())


def test_params_reject_an_unknown_transfer_method_in_one_line():
    with pytest.raises(ParamsError, match=r"^vectors\.transfer_methods: unknown direction method 'mystery'") as err:
        VectorParams(transfer_methods=("vector", "mystery"))
    assert "\n" not in str(err.value)
