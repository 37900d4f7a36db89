"""MLP neurons: saliency (activation x gradient of the emotion projection) and batched ablation of neuron sets.

A neuron is one coordinate of the MLP's hidden activation, i.e. the input of its output projection (the family
adapter's `mlp_out`: `down_proj` in llama/gemma3/qwen3, `mlp.c_proj` in gpt2/gpt_neo, `dense_4h_to_h` in gpt_neox;
TransformerLens `blocks.{L}.mlp.hook_post`). Saliency of neuron n for a sentence is
sum_t act[t, n] * d(final residual at the sentence end . u_emotion)/d act[t, n]: the first-order change of the
emotion projection if the neuron were zeroed (with the opposite sign). Ablation zeroes the neuron at every position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from emotion_circuits.heads import engine as H
from emotion_circuits.model.hooks import layer_list
from emotion_circuits.model.loading import LoadedModel


def mlp_out_proj(lm: LoadedModel, layer: int) -> torch.nn.Module:
    return lm.adapter.mlp_out(layer_list(lm.hf_model)[layer])


def d_mlp(lm: LoadedModel) -> int:
    return lm.adapter.d_mlp(lm.hf_model.config)


def saliency(lm: LoadedModel, batch: H.SentenceBatch, directions: np.ndarray) -> np.ndarray:
    """[B, n_layers, d_mlp]: activation x gradient of each row's projection on its own direction [B, d]."""
    acts: dict[int, torch.Tensor] = {}

    def grab(layer):
        def hook(mod, args):
            x = args[0]
            x.retain_grad()
            acts[layer] = x
        return hook

    with torch.no_grad():
        hidden, args, kwargs = H.layer_call_inputs(lm, batch)
    params = [p for p in lm.hf_model.parameters() if p.requires_grad]
    handles = [mlp_out_proj(lm, m).register_forward_pre_hook(grab(m)) for m in range(lm.n_layers)]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad(), H.controlled(None):
            hidden = hidden.detach().requires_grad_(True)
            out = H.run_layers(lm, hidden, 0, args, kwargs)
            final = H.at_end(out, batch.end_pos)
            objective = (final * torch.as_tensor(directions, dtype=final.dtype, device=final.device)).sum()
            objective.backward()
    finally:
        for p in params:
            p.requires_grad_(True)
        for h in handles:
            h.remove()
    valid = batch.mask[:, :, None].to(hidden.device, torch.float32)
    return np.stack([(acts[m].detach().float() * acts[m].grad.float() * valid).sum(1).cpu().numpy()
                     for m in range(lm.n_layers)], axis=1)


@contextlib.contextmanager
def neuron_masks(lm: LoadedModel, masks: dict[int, torch.Tensor]) -> Iterator[None]:
    """Multiply layer m's neuron activations by masks[m] ([R, d_mlp], per row) inside the block."""
    handles = []

    def pre(mask):
        def hook(mod, args):
            return (args[0] * mask.to(args[0].device, args[0].dtype)[:, None, :], *args[1:])
        return hook

    try:
        for m, mask in masks.items():
            handles.append(mlp_out_proj(lm, m).register_forward_pre_hook(pre(mask)))
        yield
    finally:
        for h in handles:
            h.remove()


def run_neuron_sets(lm: LoadedModel, batch: H.SentenceBatch, readout: H.Readout,
                    neuron_sets: Sequence[Sequence[tuple[int, int]]], chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(proj_delta, logprob_delta) [C, B, E] of zeroing each set of (layer, neuron) jointly; resumes from the
    clean residual at the set's first layer, chunk sets per forward."""
    width = d_mlp(lm)
    clean = H.clean_run(lm, batch)
    proj0, logp0 = H.readout_metrics(lm, clean.final, readout)
    b = len(batch)

    def run(lo: int, hi: int) -> dict[str, np.ndarray]:
        sets = neuron_sets[lo:hi]
        masks: dict[int, torch.Tensor] = {}
        for c, s in enumerate(sets):
            for m, n in s:
                if m not in masks:
                    masks[m] = torch.ones(len(sets), b, width)
                masks[m][c, :, n] = 0.0
        masks = {m: v.reshape(len(sets) * b, width) for m, v in masks.items()}
        with neuron_masks(lm, masks):
            final, _ = H.run_edited(lm, clean, len(sets), {}, record_mass=False, start=min(masks))
        proj, logp = H.readout_metrics(lm, final, readout)
        return {"proj": proj.reshape(len(sets), b, -1) - proj0[None],
                "logp": logp.reshape(len(sets), b, -1) - logp0[None]}

    out = H.in_groups(len(neuron_sets), chunk, run, f"neuron sets {lm.name}")
    return out["proj"], out["logp"]


def top_neurons(sal: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The n (layer, neuron) with the largest mean saliency [n_layers, d_mlp]; ties broken by index."""
    flat = sal.reshape(-1)
    order = np.lexsort((np.arange(flat.size), -flat))[:n]
    return sorted((int(i // sal.shape[1]), int(i % sal.shape[1])) for i in order)
