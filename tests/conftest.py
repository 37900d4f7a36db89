"""Shared fixtures: tiny in-process models (random weights, seconds to build) and file helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_circuits.model.loading import load_model

ROOT = Path(__file__).resolve().parents[1]


def _session_model(name: str):
    """A fixture loading `name` once per test session (model loads dominate the fast suite's time)."""
    @pytest.fixture(scope="session")
    def fixture():
        return load_model(name)
    return fixture


tiny_llama = _session_model("tiny-llama")
tiny_gpt2 = _session_model("tiny-gpt2")
tiny_bert = _session_model("tiny-bert")
smollm2 = _session_model("smollm2-135m")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module>` the way DVC does, from `cwd`, with the repo importable."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)
