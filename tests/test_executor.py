"""Executors: the same fixed chunks under `local` and `ray`, merged in order; params validation."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import yaml

from emotion_circuits.errors import ParamsError
from emotion_circuits.runtime.executor import chunked, map_chunks
from emotion_circuits.params import ExecutionParams, load_params
from emotion_circuits.steering.engine import Condition, Window
from emotion_circuits.params import SteeringCommonParams
from emotion_circuits.steering.sweep import GenerationWorker


def test_chunking_is_fixed_and_order_preserving():
    assert chunked(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    out = map_chunks(lambda: (lambda chunk: [x * 10 for x in chunk]), list(range(7)), ExecutionParams(chunk_size=3))
    assert out == [[0, 10, 20], [30, 40, 50], [60]]


def test_chunked_generation_equals_one_pass(tiny_llama):
    """Chunks change which conditions share a batch; tokens and fluency NLL must not change."""
    d = np.random.default_rng(0).standard_normal(tiny_llama.d_model).astype(np.float32) * 4
    conds = [Condition(p, 1, a, d, Window("last", 2)) for p in ("Hello there", "The cat sat", "Our train is late")
             for a in (0.0, 1.0, -2.0)]
    common = SteeringCommonParams(model="tiny-llama", max_new_tokens=5, batch_size=4)
    whole = GenerationWorker(tiny_llama, common)(conds)
    parts = map_chunks(partial(GenerationWorker.load, common, 0), conds, ExecutionParams(chunk_size=4),
                       local_factory=lambda: GenerationWorker(tiny_llama, common))
    assert [t for p, _ in parts for t in p] == whole[0]
    np.testing.assert_allclose(np.concatenate([n for _, n in parts]), whole[1], rtol=1e-6)


@pytest.mark.parametrize("override, message", [
    ({"executor": "spark"}, "executor must be local or ray"),
    ({"execution": {"chunk_size": 0}}, "execution.chunk_size must be a positive integer"),
    ({"execution": {"ray_workerz": 2}}, "unknown key"),
    ({"exectuor": "ray"}, "unknown top-level key"),
    ({"execution": {"executor": "ray"}}, "set the top-level `executor`"),
    ({"steering_common": {"device": "gpu"}}, "steering_common.device must be"),
    ({"activations": {"dtype": "int8"}}, "activations.dtype must be"),
])
def test_execution_and_device_params_are_validated(tmp_path, override, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(override))
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_the_top_level_executor_reaches_the_one_execution_object(tmp_path):
    """Stages hand `params.execution` to the executor: it must carry the top-level `executor` key."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"executor": "ray", "execution": {"chunk_size": 7}}))
    execution = load_params(path).execution
    assert (execution.executor, execution.chunk_size) == ("ray", 7)
    with pytest.raises(ParamsError, match="executor must be local or ray"):
        ExecutionParams(executor="spark")
