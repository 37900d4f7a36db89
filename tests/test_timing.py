"""Timing lives in `metrics/<stage>/timing.json` (git-ignored, not a DVC out); that a rerun keeps metrics.json's bytes
is tested on the whole tiny pipeline in test_pipeline.py."""

from __future__ import annotations

import json

import pytest

from emotion_circuits.reporting.live import TIMING_FILE, stage_live


def timing_keys(obj, prefix: str = "") -> list[str]:
    """Every key path whose name says wall/CPU time, throughput or memory."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}.{key}"
            if key == "timing" or "seconds" in key or key.endswith(("_s", "per_s")) or "rss" in key:
                found.append(path)
            found += timing_keys(value, path)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += timing_keys(value, f"{prefix}[{i}]")
    return found


def test_timing_keys_finds_what_the_metrics_used_to_carry():
    old = {"timing": {"seconds": 1.0}, "attribution": {"seconds": 2.0}, "models": {"m": {"tokens_per_s": 3}}}
    assert timing_keys(old) == [".timing", ".timing.seconds", ".attribution.seconds", ".models.m.tokens_per_s"]
    assert timing_keys({"n_sentences": 4, "alpha": 0.8, "best": [{"effect": 0.1}]}) == []


def test_log_timing_writes_timing_json_beside_metrics_with_process_time(tmp_path):
    with stage_live(tmp_path / "stage") as live:
        live.log_metrics({"n": 1})
        sum(i * i for i in range(200_000))  # some CPU, so process_time moves
        live.log_timing({"generation_wall_seconds": 0.5})
    metrics = json.loads((tmp_path / "stage/metrics.json").read_text())
    timing = json.loads((tmp_path / "stage" / TIMING_FILE).read_text())
    assert metrics == {"n": 1}
    assert timing["generation_wall_seconds"] == 0.5
    assert timing["stage"]["cpu_seconds"] > 0 and timing["stage"]["wall_seconds"] > 0
    assert timing["peak_rss_mb"] > 0
    assert len(timing["machine"]["load_average_1_5_15_end"]) == 3 and timing["machine"]["cpu_count"] >= 1
    assert "timing" not in (tmp_path / "stage/dvc.yaml").read_text()  # dvclive declares metrics.json only


def test_a_failed_stage_writes_no_timing(tmp_path):
    with pytest.raises(RuntimeError), stage_live(tmp_path / "stage") as live:
        live.log_timing({"x_seconds": 1.0})
        raise RuntimeError("boom")
    assert not (tmp_path / "stage" / TIMING_FILE).exists()
