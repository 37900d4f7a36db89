"""Stage entry points: --help, one-line errors with exit code 2, and no outs left behind on failure."""

from __future__ import annotations

import shutil

import pytest
import yaml

from .conftest import ROOT, run_module, write_jsonl


def _project(tmp_path, **overrides):
    """A scratch working directory with the bundled data and a params.yaml (overrides merged per section)."""
    shutil.copytree(ROOT / "data", tmp_path / "data")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_help_describes_the_stage(tmp_path):
    out = run_module("stages.activations", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "resid_pre" in out.stdout and "params.yaml" in out.stdout


def test_dataset_stage_writes_outs_on_good_input(tmp_path):
    project = _project(tmp_path, dataset={"profile": "smoke"})
    out = run_module("stages.dataset", cwd=project)
    assert out.returncode == 0, out.stderr
    assert (project / "results/dataset/sentences.parquet").exists()
    assert (project / "metrics/dataset/metrics.json").exists()


def test_bad_dataset_gives_one_line_error_and_no_outs(tmp_path):
    project = _project(tmp_path)
    write_jsonl(project / "data/emotions.jsonl",
                ['{"id": "a", "text": "Thanks a lot!", "emotion": "gratitude", "emotion_words": ["Thanks"]}',
                 '{"id": "b", "text": "Whatever.", "emotion": "boredom"}'])
    out = run_module("stages.dataset", cwd=project)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: data/emotions.jsonl:2: unknown emotion 'boredom' "
                                  "(allowed: gratitude, anger, apology, neutral)")
    assert not (project / "results").exists() and not (project / "metrics").exists()


def test_bad_params_are_rejected(tmp_path):
    project = _project(tmp_path, activations={"batch_size": 0})
    out = run_module("stages.activations", cwd=project)
    assert out.returncode == 2 and "activations.batch_size must be a positive integer" in out.stderr
    project2 = _project(tmp_path / "b", dataset={"spilt": 0.3})
    out = run_module("stages.dataset", cwd=project2)
    assert out.returncode == 2 and "unknown key(s) in params section 'dataset': spilt" in out.stderr


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_unreachable_or_unknown_model_is_one_clear_error(tmp_path, executor):
    """Also when the model fails to load inside a Ray actor: the actor's error comes back as the same line."""
    project = _project(tmp_path, dataset={"profile": "smoke"}, models=["tiny-gpt2", "no-such-model-xyz"],
                       executor=executor, activations={"random_init_controls": False})
    assert run_module("stages.dataset", cwd=project).returncode == 0
    out = run_module("stages.activations", cwd=project, env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "'no-such-model-xyz'" in lines[0] and "smollm2-135m" in lines[0]
    assert "Traceback" not in out.stderr
    assert not (project / "results/activations").exists()  # the tiny model's outs were not kept either


def test_registered_hub_model_offline_says_what_to_do(tmp_path):
    from emotion_circuits.errors import ModelLoadError
    from emotion_circuits.model.loading import load_model

    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        import huggingface_hub.constants as c

        mp.setattr(c, "HF_HUB_OFFLINE", True)
        mp.setattr(c, "HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever this machine has seen
        with pytest.raises(ModelLoadError, match=r"cannot load model 'gpt2' \(Hugging Face id 'openai-community/gpt2'\)"):
            load_model("gpt2_small")


def test_hub_model_with_the_hub_unreachable_is_one_line_and_quick(tmp_path):
    """No network and no cache: one error line, not huggingface_hub's ~22 retry lines over ~25 s of backoff."""
    import time

    def lines_of(out):
        return out.stderr.strip().splitlines()

    project = _project(tmp_path, dataset={"profile": "smoke"}, models=["gpt2"],
                       activations={"random_init_controls": False})
    assert run_module("stages.dataset", cwd=project).returncode == 0
    empty = tmp_path / "hf_home"
    empty.mkdir()
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(empty), "HF_HUB_CACHE": str(empty / "hub"),
           "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": ""}  # online mode: the hub is merely unreachable
    start = time.monotonic()
    offline = run_module("stages.activations", "--no-progress", cwd=project, env={**env, "HF_HUB_OFFLINE": "1"})
    baseline, start = time.monotonic() - start, time.monotonic()  # the same failure, no network asked: the floor
    out = run_module("stages.activations", "--no-progress", cwd=project, env=env)
    seconds = time.monotonic() - start
    assert offline.returncode == 2 and offline.stderr.strip().splitlines() == lines_of(out)
    assert out.returncode == 2
    lines = lines_of(out)
    assert len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("error: cannot load model 'gpt2' (Hugging Face id 'openai-community/gpt2')")
    assert seconds < baseline + 10, (seconds, baseline)  # huggingface_hub's backoff alone sleeps 1+2+4+8+8 s
    print(f"unreachable hub: stage failed in {seconds:.1f} s (offline: {baseline:.1f} s)")
    assert not (project / "results/activations").exists()


def test_hub_probe_sees_a_listening_endpoint_and_only_then_lets_the_hub_be_asked(monkeypatch):
    import socket

    import huggingface_hub.constants as c

    from emotion_circuits.model.loading import hub_kwargs, hub_reachable

    with socket.create_server(("127.0.0.1", 0)) as server:
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert hub_reachable(endpoint)
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(c, "ENDPOINT", endpoint)
        assert hub_kwargs("some-org/some-model") == {}
    assert not hub_reachable("http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    assert hub_kwargs("some-org/some-model") == {"local_files_only": True}
    assert hub_kwargs(str(ROOT)) == {}  # a local directory never asks the hub

def test_alignment_without_activations_says_what_to_run(tmp_path):
    """Its own models (not the workspace's params.yaml list), so it passes in a clone with any models."""
    project = _project(tmp_path, models=["tiny-llama", "tiny-gpt2"])
    out = run_module("stages.alignment", cwd=project)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'tiny-llama'" in lines[0], out.stderr
    assert "dvc repro activations" in lines[0]
    assert not (project / "results").exists()


def test_alignment_params_are_checked_for_consistency(tmp_path):
    import pytest

    from emotion_circuits.errors import ParamsError
    from emotion_circuits.params import load_params

    cases = [({"primary_variant": "seeds", "variants": ["raw"]}, "is not in alignment.variants"),
             ({"ks": [2, 5, 60]}, "must exceed every k"),
             ({"variants": ["raw", "magic"]}, "unknown variant 'magic'"),
             ({"k_report": 3}, "containing k_report=3")]
    for i, (override, message) in enumerate(cases):
        project = _project(tmp_path / str(i), alignment=override)
        with pytest.raises(ParamsError, match=message):
            load_params(project / "params.yaml")


def test_stage_paths_agree_with_dvc_yaml():
    """Stages write where `paths.STAGES` says; DVC tracks what dvc.yaml says: both must name the same outs."""
    from emotion_circuits.store import paths

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert sorted(stages) == sorted(paths.STAGES)
    for name, stage in stages.items():
        outs = {next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]}
        assert outs == {str(p) for p in paths.STAGES[name].dvc_outs()}, name
        assert "src/emotion_circuits/store/paths.py" in stage["deps"], name


# Plumbing that cannot change a stage's numbers or bytes: argument parsing, params validation, error types.
_PLUMBING = {"__init__.py", "cli.py", "params.py", "errors.py"}
SRC = ROOT / "src"


def _resolve(dotted: str):
    """`emotion_circuits.a.b` -> its file, or a registry package's folder (its __init__ imports every module in
    it, so the folder is the dep); None for non-modules (names inside a module) and for plumbing."""
    base = SRC / dotted.replace(".", "/")
    if base.with_suffix(".py").is_file():
        path = base.with_suffix(".py")
    elif (base / "__init__.py").is_file():
        init = (base / "__init__.py").read_text()
        if "import_module" in init or "autoload(" in init:
            return base
        path = base / "__init__.py"
        if "import" not in init:
            return None
    else:
        return None
    return None if str(path.relative_to(SRC / "emotion_circuits")) in _PLUMBING else path


def _library_imports(path) -> set:
    """The library files/folders that `path` imports, at the top or inside functions (all library imports are
    absolute: `from emotion_circuits.x.y import z` may name a module `x.y` or `x.y.z`)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emotion_circuits"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("emotion_circuits")]
        else:
            continue
        found.update(r for r in map(_resolve, names) if r is not None)
    return found


def stage_code_deps(name: str) -> set[str]:
    """Every library file (or registry folder) stage `name` runs, transitively, as dvc.yaml dep paths."""
    seen, todo = set(), _library_imports(ROOT / "stages" / f"{name}.py")
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            for f in sorted(dep.rglob("*.py")) if dep.is_dir() else [dep]:
                todo |= _library_imports(f)
    folders = [d for d in seen if d.is_dir()]
    return {str(p.relative_to(ROOT)) for p in seen if not any(d in p.parents for d in folders)}


def test_every_library_module_a_stage_runs_is_a_dvc_dep():
    """`dvc repro` reruns a stage when its code changes only if dvc.yaml lists that code: walk each stage's
    imports (transitively, lazy imports included) and require every library module among its deps."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        needed = stage_code_deps(name)
        missing = needed - set(stage["deps"])
        assert not missing, f"stage {name}: add to its deps in dvc.yaml: {sorted(missing)}"
        extra = {d for d in stage["deps"] if d.startswith("src/")} - needed
        assert not extra, f"stage {name}: deps it does not import (a change there reruns it for nothing): {extra}"


def test_no_private_name_is_used_across_modules():
    """A `_name` is its module's own: no library, stage or benchmark file imports one from the library or reaches
    one through a library module (`H._helper`); what others need is public (and so documented and tested)."""
    import ast

    offenders = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        tree = ast.parse(path.read_text())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emotion_circuits"):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
                modules |= {a.asname or a.name for a in node.names if _resolve(f"{node.module}.{a.name}")}
        offenders += [f"{path.name}: {n.value.id}.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                      and isinstance(n.value, ast.Name) and n.value.id in modules and n.attr.startswith("_")]
    assert not offenders, offenders


def test_no_function_is_longer_than_a_screen():
    """Functions of the library, stages and benchmarks stay under ~60 lines: a reader sees one on one screen."""
    import ast

    long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


# --- issue 15 (items 1 and 5): the dataset stage on real-world files -----------------------------------------------

def _bundled_as_csv(project, extra: str = "") -> None:
    """data/emotions.csv as a spreadsheet program saves it: UTF-8 with a BOM, CRLF line ends, `;`-joined words."""
    import pandas as pd

    frame = pd.read_json(ROOT / "data/emotions.jsonl", lines=True)
    frame["emotion_words"] = frame["emotion_words"].map(";".join)
    text = frame.to_csv(index=False, lineterminator="\r\n") + extra
    (project / "data/emotions.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))


def test_dataset_stage_reads_a_bom_csv_with_quoted_newlines(tmp_path):
    import pandas as pd

    project = _project(tmp_path, dataset={"path": "data/emotions.csv", "source": "handwritten"})
    _bundled_as_csv(project, 'x-multi,"The meeting is at ten.\r\nBring the slides.",neutral,,work\r\n')
    out = run_module("stages.dataset", cwd=project)
    assert out.returncode == 0, out.stderr
    texts = pd.read_parquet(project / "results/dataset/sentences.parquet").set_index("id")["text"]
    assert len(texts) == 961 and texts["x-multi"] == "The meeting is at ten. Bring the slides."


def _non_utf8(project):
    good = (project / "data/emotions.jsonl").read_bytes()
    bad = '{"id": "x1", "text": "Caf\u00e9 is open.", "emotion": "neutral"}\n'.encode("latin-1")
    (project / "data/emotions.jsonl").write_bytes(good + bad)
    offset, line = len(good) + bad.index(b"\xe9"), len(good.splitlines()) + 1
    return (f"data/emotions.jsonl:{line}: not valid UTF-8 (byte 0xe9 at byte offset {offset}); "
            f"save the file as UTF-8")


def _multiline_bad_row(project):
    _bundled_as_csv(project, 'x1,"Fine.\r\nReally.",neutral,,\r\nx2,"We are\r\njoyful.",joy,,\r\n')
    return "data/emotions.csv:964: unknown emotion 'joy' (allowed: gratitude, anger, apology, neutral)"


def _missing_class(project):
    lines = (project / "data/emotions.jsonl").read_text().splitlines()
    (project / "data/emotions.jsonl").write_text("".join(f"{l}\n" for l in lines if '"apology"' not in l))
    return "data/emotions.jsonl: dataset has no rows for emotion(s): apology"


def _too_long(project):
    with (project / "data/real_world.jsonl").open("a") as f:
        f.write('{"id": "rw-long", "text": "%s", "label": "anger", "source": "post"}\n' % ("so " * 300).strip())
    n = len((project / "data/real_world.jsonl").read_text().splitlines())
    return (f"data/real_world.jsonl:{n}: row 'rw-long' has 300 words, more than dataset.max_tokens=256 "
            f"(shorten or split the text, or raise dataset.max_tokens)")


@pytest.mark.parametrize("case, overrides, edit", [
    ("non_utf8", {}, _non_utf8),
    ("multiline_row_line", {"path": "data/emotions.csv"}, _multiline_bad_row),
    ("missing_class", {}, _missing_class),
    ("too_long", {}, _too_long),
    ("max_tokens_abc", {"max_tokens": "abc"}, lambda _: "dataset.max_tokens must be *, got 'abc'"),
    ("test_size_abc", {"test_size": "abc"}, lambda _: "dataset.test_size must be *, got 'abc'"),
])
def test_dataset_stage_bad_input_is_one_line_and_no_outs(tmp_path, case, overrides, edit):
    project = _project(tmp_path, dataset=overrides)
    expected = edit(project)  # `*`: the params wording is the params checker's; the key and the value are what matter
    out = run_module("stages.dataset", cwd=project)
    assert out.returncode == 2, out.stderr
    head, star, tail = f"error: {expected}".partition("*")
    line = out.stderr.strip()
    if not star:
        assert line == head
    assert "\n" not in line and line.startswith(head) and line.endswith(tail) and len(line) >= len(head + tail), line
    assert not (project / "results").exists() and not (project / "metrics").exists()
