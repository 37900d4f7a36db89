"""The value types every stage shares: Site (the one hook-name grammar), Direction/EmotionDirections, Registry."""

import numpy as np
import pytest

from emotion_circuits import EMOTIONS
from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.model.site import Site
from emotion_circuits.registry import Registry


def test_site_name_round_trips_and_keys_split_back():
    s = Site(7, "resid_pre")
    assert s.name == "blocks.7.hook_resid_pre" and Site.parse(s.name) == s
    assert Site.split_key(s.key("pca", "anger", "components")) == (s, "pca.anger.components")
    assert sorted([Site(10, "resid_pre"), Site(2, "resid_post"), Site(2, "resid_pre")])[0] == Site(2, "resid_post")


@pytest.mark.parametrize("bad", ["blocks.x.hook_resid_pre", "layers.3.hook_resid_pre", "blocks.3.hook_z"])
def test_site_rejects_other_grammars(bad):
    with pytest.raises((ValueError, ParamsError)):
        Site.parse(bad)


def test_site_beyond_depth_names_the_knob_and_the_range():
    with pytest.raises(ParamsError, match=r"steering.layers: layer 30 is beyond the model's 30 layers \(valid: 0..29\)"):
        Site(30).within(30, "steering.layers")
    with pytest.raises(ParamsError):
        Site(True)


def _dirs(seed=0, site=Site(3)):
    v = np.random.default_rng(seed).normal(size=(len(EMOTIONS), 8)).astype(np.float32)
    return EmotionDirections("tiny", site, "sentence_end", "mean_diff", v)


def test_direction_arithmetic_is_the_maths():
    d = _dirs()
    swap = d["anger"] - d["gratitude"]
    np.testing.assert_allclose(swap.vector, d.vectors[1] - d.vectors[0])
    assert swap.label == "anger-gratitude" and swap.site == Site(3)
    np.testing.assert_allclose((-1.5 * d["apology"]).vector, -1.5 * d.vectors[2], rtol=1e-6)
    assert abs(d["anger"].scaled_to(4.0).norm - 4.0) < 1e-5
    np.testing.assert_allclose(d.unit().norms(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(_dirs(1).scaled_to(d).norms(), d.norms(), rtol=1e-5)
    np.testing.assert_allclose((d + d - d * 2.0).vectors, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="different places"):
        d + _dirs(site=Site(4))


def test_emotion_directions_save_and_load_with_provenance(tmp_path):
    d = _dirs()
    d.save(tmp_path / "d.safetensors")
    back = EmotionDirections.load(tmp_path / "d.safetensors")
    assert (back.model, back.site, back.position, back.method, back.emotions) == \
        (d.model, d.site, d.position, d.method, d.emotions)
    np.testing.assert_array_equal(back.vectors, d.vectors)
    with pytest.raises(DataError, match="missing"):
        EmotionDirections.load(tmp_path / "nope.safetensors")


def test_registry_rejects_unknown_and_duplicate_names():
    reg = Registry("direction method")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(2)
    with pytest.raises(ParamsError, match=r"unknown direction method 'b' \(registered: a\)"):
        reg["b"]
    assert reg.names() == ["a"] and "a" in reg
