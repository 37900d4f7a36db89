"""What a model is (depth, width, heads, context, causal) WITHOUT loading its weights, so a stage can reject a
params value that does not fit the model before any work starts: from the GGUF header (packaged models; the
metadata sits in the first bytes, so a split GGUF needs only its first part), the HF config (ids and local
directories; one clear `ModelLoadError` offline), or the tiny twins' config built on the meta device."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from emotion_circuits.errors import ModelLoadError
from emotion_circuits.model.lengths import config_context
from emotion_circuits.model.names import RANDOM_INIT_SUFFIX


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    context: int | None  # maximum positions (None where the config does not say)
    causal: bool


# GGUF metadata value types (gguf.GGUFValueType): struct formats of the fixed-size ones; 8 = string, 9 = array
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Chain:
    """The concatenation of files (a GGUF split over part packages), read forward only, never all of it."""

    def __init__(self, paths: Iterable[Path]):
        self._paths: Iterator[Path] = iter(paths)
        self._file: BinaryIO | None = None

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            if self._file is None:
                path = next(self._paths, None)
                if path is None:
                    raise ModelLoadError("GGUF header ends early: the file is truncated")
                self._file = path.open("rb")
            chunk = self._file.read(n - len(out))
            if not chunk:
                self._file.close()
                self._file = None
            out += chunk
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def gguf_metadata(paths: Iterable[Path], wanted: Callable[[dict], bool]) -> dict[str, Any]:
    """The GGUF key/value metadata (v2+, little-endian), read until `wanted(meta)` holds (arrays skipped).

    Deliberately not `gguf.GGUFReader`: it memory-maps one whole file and parses every tensor's info, but Gemma's
    GGUF ships as byte-split parts (it would have to be reassembled first, ~250 MB written), and a params check must
    cost milliseconds, not a model's worth of I/O."""
    f = _Chain(paths)
    try:
        magic, version = struct.unpack("<4sI", f.read(8))
        if magic != b"GGUF" or version < 2:
            raise ModelLoadError(f"not a GGUF v2+ file (magic {magic!r}, version {version})")
        _, n_kv = struct.unpack("<QQ", f.read(16))
        meta: dict[str, Any] = {}

        def string() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind in _FIXED:
                fmt = "<" + _FIXED[kind]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            if kind == _STRING:
                return string()
            if kind == _ARRAY:
                item, count = struct.unpack("<IQ", f.read(12))
                if item in _FIXED:
                    f.read(struct.calcsize("<" + _FIXED[item]) * count)
                else:
                    for _ in range(count):
                        value(item)
                return None  # arrays (the vocabulary) are not needed here
            raise ModelLoadError(f"GGUF metadata: unknown value type {kind}")

        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack("<I", f.read(4))
            meta[key] = value(kind)
            if wanted(meta):
                break
        return meta
    finally:
        f.close()


def _gguf_info(name: str, paths: list[Path], causal: bool) -> ModelInfo:
    def arch_keys(meta: dict) -> list[str]:
        arch = meta.get("general.architecture")
        return [f"{arch}.{k}" for k in ("block_count", "embedding_length", "attention.head_count",
                                        "context_length")] if arch else ["general.architecture"]

    meta = gguf_metadata(paths, lambda m: all(k in m for k in arch_keys(m)))
    missing = [k for k in arch_keys(meta) if k not in meta]
    if missing:
        raise ModelLoadError(f"model {name!r}: its GGUF header lacks {', '.join(missing)}")
    layers, width, heads, context = (int(meta[k]) for k in arch_keys(meta))
    return ModelInfo(name, layers, width, heads, context, causal)


def _config_info(name: str, config: Any, causal: bool) -> ModelInfo:
    from emotion_circuits.model.arch import adapter_for

    adapter = adapter_for(config)  # an unknown family: one clear line
    context = config_context(adapter.text_config(config))
    return ModelInfo(name, adapter.n_layers(config), adapter.d_model(config), adapter.grouping(config).n_heads,
                     context, causal)


def _tiny_config(location: str) -> Any:
    """A tiny twin's config: its adapter builds the model on the meta device (no weights are allocated)."""
    import torch

    from emotion_circuits.model.arch import REGISTRY
    from emotion_circuits.model.loading import byte_tokenizer

    if location not in REGISTRY:
        raise ModelLoadError(f"unknown tiny architecture {location!r}")
    adapter = REGISTRY[location]
    with torch.device("meta"):
        return adapter.tiny(byte_tokenizer(bert_style=not adapter.causal)).config


@functools.lru_cache(maxsize=None)
def model_info(name: str) -> ModelInfo:
    """Depth, width, heads, context and whether `name` generates, in well under a second for packaged and tiny
    models; `<model>__random-init` is its base model's architecture. Unknown or unreadable: `ModelLoadError`."""
    from emotion_circuits.model import loading as L

    if name.endswith(RANDOM_INIT_SUFFIX):
        base = model_info(name[: -len(RANDOM_INIT_SUFFIX)])
        return ModelInfo(name, base.n_layers, base.d_model, base.n_heads, base.context, base.causal)
    spec = L.resolve_spec(name)
    if spec.source == "gguf_package":
        return _gguf_info(name, [L.packaged_gguf(spec)], spec.causal)
    if spec.source == "gguf_parts":
        from emotion_circuits.model.gguf_parts import part_paths, read_manifest

        return _gguf_info(name, part_paths(read_manifest(spec.location)), spec.causal)
    if spec.source == "tiny":
        return _config_info(name, _tiny_config(spec.location), spec.causal)
    from transformers import AutoConfig

    if spec.source == "package_dir":
        path = L.package_dir(spec.location) / str(spec.filename)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model {name!r}: no config.json in {path}; reinstall {spec.location!r}")
        return _config_info(name, AutoConfig.from_pretrained(path), spec.causal)
    try:
        with L.quiet():
            config = AutoConfig.from_pretrained(spec.location, **L.hub_kwargs(spec.location))
    except (OSError, ValueError) as exc:
        if spec.name in L.REGISTRY:
            raise ModelLoadError(f"cannot read the config of model {name!r} (Hugging Face id {spec.location!r}): it "
                                 f"is not in the local cache and the hub is unreachable [{type(exc).__name__}]") from None
        raise ModelLoadError(f"unknown model {name!r}: not a registered name ({', '.join(sorted(L.REGISTRY))}), a "
                             f"local model directory, or a Hugging Face id in the local cache (the hub is unreachable "
                             f"or the id does not exist) [{type(exc).__name__}]") from None
    return _config_info(name, config, L.config_is_causal(config))


def stage_model(name: str, knob: str, models: Iterable[str], max_new_tokens: int | None = None) -> ModelInfo:
    """The causal model a steering or head stage runs on, checked before any weights load: it exists, it can
    generate, its vectors come from the vectors stage (it is in `models`), and generation fits its context."""
    from emotion_circuits.errors import ParamsError

    info = model_info(name)
    if not info.causal:
        raise ParamsError(f"{knob} {name!r} is an encoder: it cannot generate, so this stage cannot run on it "
                          f"(use a causal model)")
    if name not in models:
        raise ParamsError(f"{knob} {name!r} is not in `models`: its emotion vectors come from the vectors stage, "
                          f"which runs on `models`; add it there")
    if max_new_tokens is not None and info.context is not None and max_new_tokens >= info.context:
        raise ParamsError(f"max_new_tokens={max_new_tokens} does not fit {name}'s context of {info.context} tokens")
    return info
