"""Every bad params value is one line naming its dotted key, exit 2, before any work: load_params checks types and
ranges of every field (table-driven from the annotations), the stages check what depends on the model (depth,
heads, causal, known) from its header/config before reading any artefact or loading weights."""

from __future__ import annotations

import dataclasses
import math
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from emotion_circuits import params as P
from emotion_circuits.errors import ModelLoadError, ParamsError
from emotion_circuits.model.info import gguf_metadata, model_info
from tests.conftest import ROOT, run_module

NAN, INF = float("nan"), float("inf")


def _write(tmp_path: Path, edits: dict) -> Path:
    """The repo's params.yaml with `edits` ({"section.key" or "key": value}) applied."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in edits.items():
        section, _, key = dotted.rpartition(".")
        (raw[section] if section else raw)[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BAD = [  # (dotted key, value, expected message): the list first, then every other section
    ("alpha", NAN, "alpha must be a finite number, got nan"),
    ("alpha", INF, "alpha must be a finite number, got inf"),
    ("alpha", "abc", "alpha must be a number, got 'abc'"),
    ("steering_sweep.alphas", [0.0, NAN], "steering_sweep.alphas must be finite numbers: item 1 is nan"),
    ("steering_sweep.alphas", [-INF], "steering_sweep.alphas must be finite numbers: item 0 is -inf"),
    ("steering.nll_budget", -0.1, "steering.nll_budget must be a number > 0, got -0.1"),
    ("steering_sweep.settings", {"a": 3}, "steering_sweep.settings must be a mapping of names to mappings"),
    ("steering_sweep.settings", {"seeds": {"band": 0}}, "steering_sweep.settings.seeds.band must be a positive integer"),
    ("steering_confirm.dose", [1], "steering_confirm.dose lists multiples of the picked alpha besides 0"),
    ("steering_sweep.alphas", [], "steering_sweep.alphas must not be empty"),
    ("steering_common.evaluators", ["nope"], "steering_common.evaluators: unknown evaluator 'nope'"),
    ("steering_common.evaluators", [], "steering_common.evaluators must not be empty"),
    ("steering_common.emotions", [], "steering_common.emotions must not be empty"),
    ("steering_common.emotions", ["joy"], "steering_common.emotions: unknown emotion 'joy'"),
    ("dataset.test_size", "abc", "dataset.test_size must be a number, got 'abc'"),
    ("dataset.smoke_per_emotion", "abc", "dataset.smoke_per_emotion must be an integer, got 'abc'"),
    ("dataset.max_tokens", "abc", "dataset.max_tokens must be an integer, got 'abc'"),
    ("dataset.test_size", NAN, "dataset.test_size must be a finite number, got nan"),
    ("alignment.massive_share", "abc", "alignment.massive_share must be a number, got 'abc'"),
    ("alignment.massive_share", 1.5, "alignment.massive_share must be a number in (0, 1), got 1.5"),
    ("steering_common.nll_threshold", "abc", "steering_common.nll_threshold must be a number, got 'abc'"),
    ("steering_common.nll_threshold", 0, "steering_common.nll_threshold must be a number > 0, got 0"),
    ("steering_common.window_n", -3, "steering_common.window_n must be a positive integer, got -3"),
    ("seed", -1, "seed must be an integer in [0, 4294967295], got -1"),
    ("seed", True, "seed must be an integer, got True"),
    ("seed", 1.5, "seed must be an integer, got 1.5"),
    ("models", "tiny-llama", "models must be a list of names, got 'tiny-llama' (write [tiny-llama])"),
    ("models", [], "models must not be empty"),
    ("models", ["tiny-llama", 3], "models must be names: item 1 is 3"),
    ("steering_sweep.layers", 1, "steering_sweep.layers must be a list of non-negative integers, got 1 (write [1])"),
    ("steering_sweep.layers", [1, -1], "steering_sweep.layers must be non-negative integers: item 1 is -1"),
    ("steering_sweep.layers", [1, True], "steering_sweep.layers must be integers: item 1 is True"),
    ("steering_sweep.layers", [], "steering_sweep.layers must not be empty"),
    ("steering.layer", 1.5, "steering.layer must be an integer, got 1.5"),
    ("steering.layer", -1, "steering.layer must be a non-negative integer, got -1"),
    ("steering_common.model", 3, "steering_common.model must be a non-empty string, got 3"),
    ("steering_common.decay", "abc", "steering_common.decay must be a number, got 'abc'"),
    ("steering_common.decay", 0, "steering_common.decay must be a number in (0, 1], got 0"),
    ("steering_common.iterative", "yes", "steering_common.iterative must be true or false, got 'yes'"),
    ("steering_common.prepend_bos", 1, "steering_common.prepend_bos must be true or false, got 1"),
    ("steering_common.positions", 3, "steering_common.positions must be a list of non-negative integers, got 3"),
    ("steering_common.positions", [-1], "steering_common.positions must be non-negative integers: item 0 is -1"),
    ("steering_common.max_new_tokens", 0, "steering_common.max_new_tokens must be a positive integer, got 0"),
    ("steering_common.dtype", ["x"], "steering_common.dtype must be a non-empty string, got ['x']"),
    ("cross_steering.depth", NAN, "cross_steering.depth must be a finite number, got nan"),
    ("cross_steering.depth", 2, "cross_steering.depth must be a number in [0, 1], got 2"),
    ("cross_steering.models", "tiny-llama", "cross_steering.models must be auto or a list of model names"),
    ("cross_steering.models", [1, 2], "cross_steering.models must be names: item 0 is 1"),
    ("statistics.power_ds", [INF], "statistics.power_ds must be finite numbers: item 0 is inf"),
    ("statistics.power_ds", [0], "statistics.power_ds must be numbers > 0: item 0 is 0"),
    ("statistics.ci_level", "abc", "statistics.ci_level must be a number, got 'abc'"),
    ("statistics.metric_families", "p", "statistics.metric_families must be a list of names, got 'p' (write [p])"),
    ("statistics.n_boot", "2000", "statistics.n_boot must be an integer, got '2000'"),
    ("alignment.ks", 5, "alignment.ks must be a list of positive integers, got 5 (write [5])"),
    ("alignment.ks", [2, True], "alignment.ks must be integers: item 1 is True"),
    ("alignment.ridge_alphas", ["a"], "alignment.ridge_alphas must be numbers: item 0 is 'a'"),
    ("alignment.ridge_alphas", [NAN], "alignment.ridge_alphas must be finite numbers: item 0 is nan"),
    ("alignment.ridge_alphas", [0.0], "alignment.ridge_alphas must be numbers > 0: item 0 is 0.0"),
    ("alignment.reduce_dim", "x", "alignment.reduce_dim must be an integer, got 'x'"),
    ("alignment.variants", "raw", "alignment.variants must be a list of names, got 'raw' (write [raw])"),
    ("alignment.workers", -1, "alignment.workers must be a non-negative integer, got -1"),
    ("vectors.probe_hooks", "resid_post", "vectors.probe_hooks must be a list of names, got 'resid_post'"),
    ("vectors.n_components", 2.0, "vectors.n_components must be an integer, got 2.0"),
    ("activations.hooks", "resid_pre", "activations.hooks must be a list of names, got 'resid_pre'"),
    ("activations.prepend_bos", "true", "activations.prepend_bos must be true or false, got 'true'"),
    ("activations.batch_size", NAN, "activations.batch_size must be an integer, got nan"),
    ("heads.model", 3, "heads.model must be a non-empty string, got 3"),
    ("heads.prepend_bos", "no", "heads.prepend_bos must be true or false, got 'no'"),
    ("heads.n_sentences", -2, "heads.n_sentences must be a non-negative integer, got -2"),
    ("head_screening.attribution", 1, "head_screening.attribution must be true or false, got 1"),
    ("head_screening.evaluators", "lexicon", "head_screening.evaluators must be a list of names, got 'lexicon'"),
    ("head_patching.patch_heads", "L1H1", "head_patching.patch_heads must be a list of names, got 'L1H1'"),
    ("head_patching.patch_modes", [], "head_patching.patch_modes must not be empty"),
    ("circuits.n_tokens", "ten", "circuits.n_tokens must be an integer, got 'ten'"),
    ("execution.ray_workers", True, "execution.ray_workers must be an integer, got True"),
    ("execution.ray_address", 5, "execution.ray_address must be null or a string, got 5"),
    ("executor", ["local"], "executor must be a non-empty string, got ['local']"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_bad_value_is_one_line_naming_its_key(tmp_path, key, value, message):
    with pytest.raises(ParamsError) as err:
        P.load_params(_write(tmp_path, {key: value}))
    text = str(err.value)
    assert message in text and "\n" not in text


GOOD = [  # edge values that must stay accepted (and how they are read)
    ("alpha", -2, -2), ("alpha", 0, 0), ("alpha", "1e-3", 0.001),  # PyYAML reads 1e-3 (no dot) as a string
    ("steering_common.positions", [], ()), ("steering_common.decay", 1, 1), ("cross_steering.models", [], ()),
    ("cross_steering.depth", 0, 0), ("execution.ray_address", None, None), ("seed", 0, 0),
    ("steering_sweep.n_random", 0, 0), ("steering.nll_budget", 0.5, 0.5),
]


@pytest.mark.parametrize("key, value, read", GOOD, ids=[f"{k}={v!r}" for k, v, _ in GOOD])
def test_edge_values_are_accepted(tmp_path, key, value, read):
    params = P.load_params(_write(tmp_path, {key: value}))
    section, _, name = key.rpartition(".")
    got = getattr(getattr(params, section) if section else params, name)
    assert got == read and type(got) is type(read)


def _checked(hint) -> bool:
    """Whether `_conform` understands this annotation (so the field gets a type check)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0] in P._KINDS
    if args:
        return all(_checked(a) for a in args)
    return hint in P._KINDS or hint is dict


def test_every_field_of_every_section_is_type_checked():
    """A new knob with an annotation the helper does not know would silently escape the checks."""
    for name, hint in typing.get_type_hints(P.Params).items():
        fields = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {name: hint}
        for field_name, h in fields.items():
            assert _checked(h), f"{name}.{field_name}: {h}"
    for key in P.RANGES:  # every ranged key names a real field
        section, _, name = key.rpartition(".")
        cls = typing.get_type_hints(P.Params)[section] if section else P.Params
        assert name in typing.get_type_hints(cls), key


def test_the_repo_params_load():
    params = P.load_params(ROOT / "params.yaml")
    assert params.steering_sweep.layers and all(math.isfinite(a) for a in params.steering_sweep.alphas)


# ------------------------------------------------------------------------------------------- model info
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert", "tiny-qwen3", "tiny-gemma3"])
def test_model_info_of_the_tiny_twins_matches_the_loaded_model(name):
    from emotion_circuits.model.loading import load_model

    info, lm = model_info(name), load_model(name, use_bridge=False)
    assert (info.n_layers, info.d_model, info.causal) == (lm.n_layers, lm.d_model, lm.causal)
    assert info.n_heads == lm.adapter.grouping(lm.hf_model.config).n_heads and info.context == 512


def test_model_info_of_packaged_models_comes_from_the_gguf_header_alone(tmp_path, smollm2):
    from emotion_circuits.model.loading import REGISTRY, packaged_gguf

    info = model_info("smollm2-135m")
    assert (info.n_layers, info.d_model, info.causal) == (smollm2.n_layers, smollm2.d_model, True)
    assert info.context == smollm2.hf_model.config.max_position_embeddings
    # the first MiB of the file (no tensor data at all) is enough: the metadata sits at its start
    head = tmp_path / "head.gguf"
    head.write_bytes(packaged_gguf(REGISTRY["smollm2-135m"]).open("rb").read(1 << 20))
    meta = gguf_metadata([head], lambda m: "llama.block_count" in m)
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 30
    assert (model_info("gemma3-270m").n_layers, model_info("minilm-l6").causal) == (18, False)
    assert model_info("smollm2-135m__random-init").n_layers == 30


def test_an_unknown_model_is_one_clear_line_offline():
    with pytest.raises(ModelLoadError, match=r"unknown model 'no-such-model': not a registered name \(.*tiny-llama"):
        model_info("no-such-model")


# ------------------------------------------------------------------------------------------- stages, early
def _project(tmp_path: Path, edits: dict) -> Path:
    """A scratch project on tiny-llama with NO results at all: a check that passed would fail on the missing
    dataset artefacts instead, so the expected params line proves the check ran before anything was read (and
    before any model was loaded: every stage loads its model after reading the dataset)."""
    shutil.copytree(ROOT / "data", tmp_path / "data")
    base = {"models": ["tiny-llama", "tiny-bert"], "steering_common.model": "tiny-llama",
            "heads.model": "tiny-llama", "steering_sweep.layers": [1], "steering.layer": 1}
    _write(tmp_path, {**base, **edits})
    return tmp_path


STAGE_CASES = [
    ("steering", {"steering.layer": 99}, "steering.layer: layer 99 is beyond the model's 3 layers (valid: 0..2)"),
    ("steering_sweep", {"steering_sweep.layers": [1, 99]},
     "steering_sweep.layers: layer 99 is beyond the model's 3 layers (valid: 0..2)"),
    ("steering", {"steering_common.model": "tiny-bert"}, "steering_common.model 'tiny-bert' is an encoder"),
    ("steering_sweep", {"steering_common.model": "tiny-gpt2"},
     "steering_common.model 'tiny-gpt2' is not in `models`"),
    ("steering", {"steering_common.model": "no-such-model"}, "unknown model 'no-such-model'"),
    ("steering", {"steering_common.max_new_tokens": 600},
     "max_new_tokens=600 does not fit tiny-llama's context of 512 tokens"),
    ("cross_steering", {"cross_steering.models": ["tiny-llama", "tiny-bert"]},
     "cross_steering.models 'tiny-bert' is an encoder"),
    ("head_screening", {"heads.model": "tiny-bert"}, "heads.model 'tiny-bert' is an encoder"),
    ("head_patching", {"head_patching.patch_heads": ["L1H9"]},
     "head_patching.patch_heads: L1H9 does not exist in tiny-llama (3 layers x 4 heads)"),
    ("circuits", {"heads.model": "tiny-gpt2"}, "heads.model 'tiny-gpt2' is not in `models`"),
]


@pytest.mark.parametrize("stage, edits, message", STAGE_CASES, ids=[f"{s}-{next(iter(e))}" for s, e, _ in STAGE_CASES])
def test_stages_reject_params_that_do_not_fit_the_model_first(tmp_path, monkeypatch, capsys, stage, edits, message):
    import importlib

    from emotion_circuits import cli

    project = _project(tmp_path, edits)
    monkeypatch.chdir(project)
    code = cli.run_stage(stage, "", importlib.import_module(f"stages.{stage}").run, ["--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (project / "results").exists() and not (project / "metrics").exists()


@pytest.mark.parametrize("stage, edits, message", [
    ("steering", {"steering.layer": 99}, "error: steering.layer: layer 99 is beyond the model's 3 layers (valid: 0..2)"),
    ("head_patching", {"head_patching.patch_heads": ["L1H9"]},
     "error: head_patching.patch_heads: L1H9 does not exist in tiny-llama (3 layers x 4 heads)"),
    ("steering", {"alpha": "abc"}, "error: alpha must be a number, got 'abc'"),
], ids=["steering-layer", "head_patching-patch_heads", "steering-alpha"])
def test_through_the_entry_point_it_is_one_line_and_exit_2(tmp_path, stage, edits, message):
    """As DVC runs it: exit 2, exactly one stderr line (no traceback, no load log), nothing written."""
    project = _project(tmp_path, edits)
    out = run_module(f"stages.{stage}", cwd=project)
    assert (out.returncode, out.stderr) == (2, message + "\n")
    assert not (project / "results").exists() and not (project / "metrics").exists()
