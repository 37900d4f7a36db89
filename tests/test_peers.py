"""benchmarks/peers.py's pure helpers (the run itself needs the `bench` extra and minutes of CPU: not a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_benchmark", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _point(system, emotion, strength, rate, nll_delta):
    return {"system": system, "emotion": emotion, "strength": strength, "rate": rate, "nll_delta": nll_delta}


def test_frontier_takes_the_best_rate_within_each_budget(peers):
    points = [_point("unsteered", "gratitude", 0.0, 0.02, 0.0),
              _point("engine", "gratitude", 1.0, 0.10, 0.20),
              _point("engine", "gratitude", 2.0, 0.30, 0.45),
              _point("engine", "gratitude", 3.0, 0.60, 0.90),
              _point("engine", "gratitude", 1.5, 0.10, 0.10)]  # same rate, cheaper: wins the tie
    best = peers.frontier(points)["engine"]["gratitude"]
    assert best["nll+0.25"] == {"rate": 0.10, "strength": 1.5, "nll_delta": 0.10, "system": "engine"}
    assert best["nll+0.5"]["rate"] == 0.30 and best["nll+0.5"]["strength"] == 2.0


def test_frontier_falls_back_to_unsteered_when_steering_only_costs(peers):
    points = [_point("unsteered", "anger", 0.0, 0.05, 0.0), _point("repeng-pca", "anger", 8.0, 0.0, 0.1),
              _point("repeng-pca", "anger", 16.0, 0.5, 2.0)]
    front = peers.frontier(points)
    assert set(front) == {"repeng-pca"}  # the unsteered row is a candidate, not a system of its own
    assert front["repeng-pca"]["anger"]["nll+0.25"]["system"] == "unsteered"
    assert front["repeng-pca"]["anger"]["nll+0.5"]["rate"] == 0.05


def test_trim_at_eos_keeps_the_eos_and_drops_the_padding(peers):
    assert peers.trim_at_eos([[5, 6, 2, 2, 2], [7, 8, 9]], eos=2) == [[5, 6, 2], [7, 8, 9]]
    assert peers.trim_at_eos([[5, 2]], eos=None) == [[5, 2]]


def test_contrast_pairs_use_handwritten_fit_rows_in_id_order(peers):
    rows = [("g2", "Thanks a lot.", "gratitude", "fit", "handwritten"),
            ("g1", "I am grateful.", "gratitude", "fit", "handwritten"),
            ("g3", "So thankful!", "gratitude", "test", "handwritten"),
            ("g4", "thx", "gratitude", "fit", "goemotions"),
            ("n1", "The bus is late.", "neutral", "fit", "handwritten"),
            ("n2", "It is Tuesday.", "neutral", "fit", "handwritten")]
    frame = pd.DataFrame(rows, columns=["id", "text", "emotion", "split", "source"])
    assert peers.contrast_pairs(frame, "gratitude") == [("I am grateful.", "The bus is late."),
                                                        ("Thanks a lot.", "It is Tuesday.")]
    with pytest.raises(ValueError, match="anger"):
        peers.contrast_pairs(frame, "anger")


def test_point_reports_rate_nll_rise_and_cpu_per_condition(peers):
    p = peers.point("engine", "gratitude", 2.0, np.array([True, False, False, True]),
                    np.array([1.5, np.nan, 1.0, 2.0]), 1.25, cpu_s=8.0)
    assert (p["rate"], p["nll_delta"], p["cpu_s_per_condition"], p["n_prompts"]) == (0.5, 0.25, 2.0, 4)
    assert p["setting"] == peers.SETTINGS["engine"]


def _payload(points, checks, run):
    return {"points": points, "frontier": {}, "checks": checks, "run": run}


def test_merge_replaces_only_the_systems_run_now(peers):
    from emotion_circuits.errors import UserError

    run = {"model": "m", "n_prompts": 4, "max_new_tokens": 30, "quick": False, "emotions": ["gratitude"]}
    old_points = [_point("unsteered", "gratitude", 0.0, 0.0, 0.0), _point("engine", "gratitude", 1.0, 0.2, 0.2),
                  _point("engine-seeds", "gratitude", 1.0, 0.9, 0.9), _point("engine-seeds", "anger", 1.0, 0.5, 0.1)]
    for p in old_points:
        p.update(cpu_s_per_condition=1.0, n_prompts=4)
    old = _payload(old_points, {"gratitude": {"engine_seeds_cos_project": 0.1, "repeng_pca_cos_project": 0.2}},
                   dict(run, loadavg_start=[1.0], loadavg_end=[2.0]))  # written before the invocation log
    old["frontier"] = peers.frontier(old_points)
    new_points = [_point("unsteered", "gratitude", 0.0, 0.0, 0.0), _point("engine-seeds", "gratitude", 0.75, 0.4, 0.1)]
    new_run = dict(run, invocations=[{"systems": ["engine-seeds"], "cpu_seconds": 9.0}])
    new = _payload(new_points, {"gratitude": {"engine_seeds_cos_project": 0.7}}, new_run)
    new["frontier"] = peers.frontier(new_points)
    merged = peers.merge_payload(old, new, ["engine-seeds"])
    rows = {(p["system"], p["emotion"], p["strength"]) for p in merged["points"]}
    # the old gratitude seeds point (1.0) is gone, anger's (not run now) and the engine's are kept
    assert rows == {("unsteered", "gratitude", 0.0), ("engine", "gratitude", 1.0),
                    ("engine-seeds", "gratitude", 0.75), ("engine-seeds", "anger", 1.0)}
    assert merged["frontier"]["engine-seeds"]["gratitude"]["nll+0.25"]["strength"] == 0.75
    assert merged["frontier"]["engine-seeds"]["anger"] == old["frontier"]["engine-seeds"]["anger"]
    assert merged["frontier"]["engine"] == old["frontier"]["engine"]
    assert merged["checks"] == {"gratitude": {"engine_seeds_cos_project": 0.7, "repeng_pca_cos_project": 0.2}}
    first, second = merged["run"]["invocations"]
    assert first["systems"] == ["engine", "engine-seeds"] and first["loadavg_start"] == [1.0]
    assert first["generation_cpu_seconds"] == 16.0 and first["cpu_seconds"] is None  # 4 points x 4 prompts x 1 s
    assert second == {"systems": ["engine-seeds"], "cpu_seconds": 9.0}
    with pytest.raises(UserError, match="n_prompts"):
        peers.merge_payload(old, _payload([], {}, dict(new_run, n_prompts=16)), ["engine-seeds"])
