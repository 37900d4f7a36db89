"""Cross-model steering: layer choice, mapped directions and their mapped null, conditions and effect samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emotion_circuits import EMOTIONS
from emotion_circuits.steering import cross as X
from emotion_circuits.errors import DataError
from emotion_circuits.steering.engine import random_directions
from emotion_circuits.params import SteeringCommonParams
from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.model.site import Site



def _dirs(model, site, vectors):
    return EmotionDirections(model, site, "sentence_end", "vector", np.asarray(vectors, np.float32))

def test_layer_pair_nearest_the_depth_that_leaves_a_layer_to_steer():
    pairs = [(0, 0), (10, 5), (20, 11), (29, 17)]
    assert X.choose_layer_pair(pairs, 18, 0.5) == (20, 11)  # 11/17 = 0.65 is nearer 0.5 than 5/17 = 0.29
    assert X.choose_layer_pair(pairs, 18, 0.3) == (10, 5)
    assert X.choose_layer_pair(pairs, 18, 0.62) == (20, 11)
    assert X.choose_layer_pair(pairs, 18, 1.0) == (20, 11)  # (29, 17): no layer after 17 to steer at
    with pytest.raises(DataError, match="no alignment layer pair"):
        X.choose_layer_pair([(29, 17)], 18, 0.5)


def test_mapped_null_is_random_source_directions_through_the_map_at_the_mapped_vectors_norm():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4))
    src = _dirs("a", Site(3, "resid_post"), rng.standard_normal((len(EMOTIONS), 6)))
    vectors = {e: src[e].vector for e in EMOTIONS}
    pair = X.CrossPair("a", "b", 3, 4)
    mapped, randoms = X.map_directions(lambda v: np.asarray(v) @ w, src, pair, 5, seed=3)
    assert (mapped.model, mapped.site, mapped.position) == ("b", Site(5, "resid_pre"), "sentence_end")
    for i, e in enumerate(EMOTIONS):
        assert np.allclose(mapped[e].vector, vectors[e] @ w, atol=1e-5)
        source = random_directions(vectors[e], 5, 3 + 31 * i)
        assert np.allclose(np.linalg.norm(source, axis=1), np.linalg.norm(vectors[e]), rtol=1e-5)
        through = source @ w
        assert randoms[e].shape == (5, 4)
        assert np.allclose(np.linalg.norm(randoms[e], axis=1), mapped[e].norm, rtol=1e-5)  # equal norm
        cos = (randoms[e] * through).sum(1) / np.linalg.norm(randoms[e], axis=1) / np.linalg.norm(through, axis=1)
        assert np.allclose(cos, 1.0, atol=1e-5)  # the mapped random direction itself, only rescaled
    again = X.map_directions(lambda v: np.asarray(v) @ w, src, pair, 5, seed=3)[1]
    assert all(np.array_equal(randoms[e], again[e]) for e in EMOTIONS)  # deterministic


def test_conditions_pair_every_direction_on_the_same_prompts_and_samples_keep_the_mapped_null():
    prompts = pd.DataFrame({"id": ["p0", "p1"], "text": ["The weather today", "My plan is"]})
    pair = X.CrossPair("a", "b", 3, 4)
    d = _dirs("b", pair.steer_site, np.ones((len(EMOTIONS), 4)))
    grid = X.build_conditions(prompts, pair, d, d, {e: np.ones((2, 4), np.float32) for e in EMOTIONS}, 1.5,
                              SteeringCommonParams())
    conds, meta = grid.table()
    assert len(conds) == 2 * (1 + 3 * (2 + 2))
    assert {c.layer for c in conds} == {5} and pair.steer_layer == 5
    assert (meta.groupby("kind")["prompt_id"].nunique() == 2).all()
    table = meta.assign(effect_lex_gratitude=np.arange(len(meta), dtype=float),
                        effect_lex_anger=0.0, effect_lex_apology=0.0)
    samples = X.effect_samples(table, pair, ["lex", "p"])  # no p_ columns: that family is skipped
    grat = samples[samples["emotion"] == "gratitude"]
    mapped = grat[grat["effect"].str.contains("/mapped/")]
    native = grat[grat["effect"].str.contains("/native/")]
    assert set(mapped["group"]) == {"effect", "null"} and set(native["group"]) == {"effect"}
    assert (mapped["group"] == "null").sum() == 2 * 2  # every (prompt, random direction) run, unit = prompt
    assert mapped["effect"].iloc[0] == "a->b/gratitude/blocks.5.hook_resid_pre/mapped/lex_gratitude"
    assert (samples["layer"] == 5).all() and (samples["hook"] == "blocks.5.hook_resid_pre").all()  # typed labels
    assert set(samples["metric"]) == {"lex_gratitude", "lex_anger", "lex_apology"}


def test_geometry_reports_cosine_and_norm_ratio():
    native = _dirs("b", Site(5), np.tile([1.0, 0.0], (len(EMOTIONS), 1)))
    mapped = _dirs("b", Site(5), np.tile([2.0, 2.0], (len(EMOTIONS), 1)))
    g = X.geometry(native, mapped)["anger"]
    assert g["cosine_mapped_native"] == pytest.approx(2 ** -0.5) and g["norm_mapped_over_native"] == pytest.approx(8 ** 0.5)
