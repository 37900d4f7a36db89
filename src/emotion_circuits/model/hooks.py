"""One way to read or edit the residual stream, whatever the backend: TransformerLens bridge hook points
(`blocks.{L}.hook_resid_pre` / `hook_resid_post`) or, for models the bridge cannot take, PyTorch hooks on the
HF layer list that fire at exactly the same places. Hooks are scoped to a `with` block so they never leak.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from emotion_circuits.model.arch import adapter_for
from emotion_circuits.model.loading import LoadedModel
from emotion_circuits.model.site import Site

HookFn = Callable[[torch.Tensor], torch.Tensor | None]  # return a replacement tensor, or None to keep it


def hook_name(layer: int, hook: str) -> str:
    """TransformerLens hook name, used verbatim as tensor key, column and metric name (`Site(layer, hook).name`)."""
    return Site(layer, hook).name


def parse_hook_name(name: str) -> tuple[int, str]:
    """`blocks.7.hook_resid_pre` -> (7, "resid_pre"), via `Site.parse` (ValueError on anything else)."""
    site = Site.parse(name)
    return site.layer, site.hook


def layer_list(model) -> torch.nn.ModuleList:
    """The transformer blocks of an HF model, as its family's adapter names them (no guessing by length: a
    multimodal model holds several ModuleLists of the same length)."""
    return adapter_for(model.config).layers(model)


@contextlib.contextmanager
def residual_hooks(lm: LoadedModel, hooks: dict[str, HookFn]) -> Iterator[None]:
    """Install `hooks` ({hook_name: fn}) for the duration of the block."""
    if lm.bridge is not None:
        def wrap(fn: HookFn):
            def hook(x, hook):  # noqa: ARG001 - TransformerLens hook signature
                out = fn(x)
                return x if out is None else out
            return hook

        with lm.bridge.hooks(fwd_hooks=[(name, wrap(fn)) for name, fn in hooks.items()]):
            yield
        return
    layers = layer_list(lm.hf_model)
    handles = []
    try:
        for name, fn in hooks.items():
            layer, kind = parse_hook_name(name)
            if kind == "resid_pre":
                def pre(mod, args, kwargs, _fn=fn):
                    x = args[0] if args else kwargs["hidden_states"]
                    out = _fn(x)
                    if out is None:
                        return None
                    if args:
                        return (out, *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": out}
                handles.append(layers[layer].register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(mod, args, output, _fn=fn):
                    x = output[0] if isinstance(output, tuple) else output
                    out = _fn(x)
                    if out is None:
                        return None
                    return (out, *output[1:]) if isinstance(output, tuple) else out
                handles.append(layers[layer].register_forward_hook(post))
        yield
    finally:
        for handle in handles:
            handle.remove()
