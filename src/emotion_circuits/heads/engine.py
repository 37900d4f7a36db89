"""Phase 6 engine: exact, batched attention-head interventions on plain HF causal models (every family with an
`arch` adapter: llama, gemma3, qwen3, gpt2, gpt_neox, gpt_neo).

Why it is fast. One *clean* pass per sentence batch records the residual entering every layer; an intervention
set that first touches layer L then resumes from the cached clean residual at layer L with the batch expanded
to (conditions x sentences) rows, so layers below L are never recomputed and one forward screens every head of a
layer (each row carries its own per-head edit). The readout needs only the final residual at the sentence end
(its projection onto the unit emotion directions) and the next-token log-probabilities there (final norm +
unembedding of those rows only).

Where edits happen. Every attention layer runs through one registered attention function (`ATTN_IMPL`), an
eager softmax attention identical to HF's `eager_attention_forward` that also sees the per-row edits of the active
`Controller`: per-head multipliers on the head output z (the TransformerLens `hook_z`; zero-ablation), an added
mean z (mean-ablation), replacement of z at the sentence-end query (patching), and the attention mass the
sentence-end query puts on the emotion-word tokens.

Grouped-query attention. HF stores n_kv_heads key/value heads; inside the attention function they are expanded
to one copy per query head (`repeat_kv`), so a value patch for query head h changes the values *as seen by h only*;
the other query heads of the same KV group keep the clean values.

Patching (modes, all at the readout query = the sentence-end token; BOS, identical in every run, is never patched):
- `result`:    z_h <- the mean z_h over source runs (at their sentence end).
- `v_only`:    z_h = sum_j A_target(j) v_source(j): the target's own attention pattern over the source's values,
               where v_source(j) is the mean source value at the same distance from the sentence end
               (right-aligned; key positions no source reaches keep their own value).
- `pattern_v`: z_h = sum_j A_source(j) v_source(j): the right-aligned mean source pattern (renormalised over the
               target's keys) and the source values; differs from `result` only by mean-of-products vs
               product-of-means.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from emotion_circuits.model.extraction import pad_right, tokenize_row
from emotion_circuits.model.hooks import layer_list
from emotion_circuits.model.loading import LoadedModel
from emotion_circuits.params import StatisticsParams
from emotion_circuits.runtime.resources import run_with_backoff
from emotion_circuits.stats.intervals import interval

ATTN_IMPL = "emotion_circuits_heads"
PATCH_MODES = ("result", "v_only", "pattern_v")
_ACTIVE: list[Controller | None] = [None]


# --------------------------------------------------------------------------------------------------- model access
@dataclass(frozen=True)
class Arch:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int


def arch(lm: LoadedModel) -> Arch:
    g = lm.adapter.grouping(lm.hf_model.config)
    return Arch(lm.n_layers, g.n_heads, g.n_kv_heads, g.d_head, lm.d_model)


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, allowed=None,
               layer_index=None, **kwargs):  # noqa: ARG001
    """HF eager attention (same maths and dtype handling) plus the active controller's per-row head edits.

    Sliding windows arrive in `attention_mask` (HF builds a per-layer-type mask; the `sliding_window` kwarg is
    informational, as in HF's eager function); `softcap` is applied when the family passes it; `allowed` (bool,
    broadcastable to the scores) is a family's own structural mask (GPT-Neo's causal/local `bias`) applied before
    the additive mask; `layer_index` names the layer where the module has no `layer_idx`."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n_heads = query.shape[1]
    if key.shape[1] != n_heads:  # grouped-query attention: one copy of each KV head per query head
        key = key.repeat_interleave(n_heads // key.shape[1], dim=1)
        value = value.repeat_interleave(n_heads // value.shape[1], dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if allowed is not None:
        scores = torch.where(allowed, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype,
                                                           device=scores.device))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., : key.shape[-2]]
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)  # = query dtype but in GPT-Neo
    z = torch.matmul(pattern, value)
    ctl = _ACTIVE[0]
    if ctl is not None:
        z = ctl.apply(module.layer_idx if layer_index is None else layer_index, pattern, value, z)
    return z.transpose(1, 2).contiguous(), pattern


def prepare(lm: LoadedModel) -> None:
    """Route this model's attention through `_attention` (eager maths; the model's numbers do not change)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPL, _attention)
    AttentionMaskInterface.register(ATTN_IMPL, eager_mask)
    for module in lm.hf_model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = ATTN_IMPL
    lm.hf_model.config._attn_implementation = ATTN_IMPL
    lm.adapter.route_attention(lm.hf_model, _attention)  # families that bypass AttentionInterface (GPT-Neo)


# ------------------------------------------------------------------------------------------------------ controller
@dataclass
class LayerEdit:
    """Per-row edits of one layer's heads; R = rows of the expanded batch. None = no edit of that kind."""

    keep: torch.Tensor | None = None         # [R, H] multiplier of z at every position
    add: torch.Tensor | None = None          # [R, H, d_head] added to z at every position
    final: Callable | None = None            # fn(pattern_final [R,H,T], value [R,H,T,dh], z_final) -> z_final


@dataclass
class Controller:
    """What the attention function does for the rows of the current forward."""

    end_pos: torch.Tensor | None             # [R] sentence-end index of each row (None: keep/add edits only)
    edits: dict[int, LayerEdit] = field(default_factory=dict)
    emotion_mask: torch.Tensor | None = None  # [R, T] 1 at emotion-word tokens: record attention mass there
    mass: dict[int, torch.Tensor] = field(default_factory=dict)   # layer -> [R, H]
    capture_z: bool = False
    z_final: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [R, H, dh] clean z at sentence end
    z_sum: dict[int, torch.Tensor] = field(default_factory=dict)    # layer -> [H, dh] sum of z over real tokens
    token_mask: torch.Tensor | None = None    # [R, T] real tokens (for z_sum)
    capture_final: bool = False
    keep_graph: bool = False                  # attribution: keep z (in the autograd graph) per layer
    z_graph: dict[int, torch.Tensor] = field(default_factory=dict)
    pattern_final: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [R, H, T]
    value: dict[int, torch.Tensor] = field(default_factory=dict)          # layer -> [R, H, T, dh]

    def apply(self, layer: int, pattern: torch.Tensor, value: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.end_pos is None:  # generation: the same head edit on every row and position
            edit = self.edits.get(layer)
            if edit is not None and edit.keep is not None:
                z = z * edit.keep.to(z.device, z.dtype)[:, :, None, None]
            if edit is not None and edit.add is not None:
                z = z + edit.add.to(z.device, z.dtype)[:, :, None, :]
            return z
        if self.keep_graph:
            z.retain_grad()
            self.z_graph[layer] = z
            return z
        rows = torch.arange(z.shape[0], device=z.device)
        end = self.end_pos.to(z.device)
        final_pattern = pattern[rows, :, end]  # [R, H, T]
        if self.emotion_mask is not None:
            self.mass[layer] = torch.einsum("rht,rt->rh", final_pattern.float(), self.emotion_mask.to(z.device))
        if self.capture_z:
            self.z_final[layer] = z[rows, :, end].detach().clone()
            tm = self.token_mask.to(z.device, z.dtype)
            self.z_sum[layer] = torch.einsum("rhtd,rt->hd", z.detach(), tm)
        if self.capture_final:
            self.pattern_final[layer] = final_pattern.detach().clone()
            self.value[layer] = value.detach().clone()
        edit = self.edits.get(layer)
        if edit is None:
            return z
        if edit.keep is not None:
            z = z * edit.keep.to(z.device, z.dtype)[:, :, None, None]
        if edit.add is not None:
            z = z + edit.add.to(z.device, z.dtype)[:, :, None, :]
        if edit.final is not None:
            z = z.clone()
            z[rows, :, end] = edit.final(final_pattern, value, z[rows, :, end])
        return z


@contextlib.contextmanager
def controlled(ctl: Controller | None) -> Iterator[Controller | None]:
    previous = _ACTIVE[0]
    _ACTIVE[0] = ctl
    try:
        yield ctl
    finally:
        _ACTIVE[0] = previous


# ---------------------------------------------------------------------------------------------------- forward pass
class _Stop(Exception):
    pass


@dataclass
class SentenceBatch:
    """Right-padded token ids of some sentences plus where to read and what counts as an emotion word."""

    ids: torch.Tensor
    mask: torch.Tensor
    end_pos: torch.Tensor
    emotion_mask: torch.Tensor  # [B, T] 1 at emotion-word tokens (all text tokens where a row has none)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def make_batch(lm: LoadedModel, texts: Sequence[str], emotion_words: Sequence[Sequence[str]],
               prepend_bos: bool = True) -> SentenceBatch:
    rows = [tokenize_row(lm.tokenizer, t, list(w), prepend_bos, True) for t, w in zip(texts, emotion_words)]
    ids, mask = pad_right(rows, lm.tokenizer.pad_token_id)
    emo = torch.zeros(ids.shape, dtype=torch.float32)
    for i, r in enumerate(rows):
        emo[i, r.emotion_positions] = 1.0
    return SentenceBatch(ids, mask, torch.tensor([r.end_pos for r in rows]), emo)


def _expand(obj, batch: int, times: int, _memo: dict | None = None):
    """Repeat every tensor whose leading dim is the batch (condition-major); broadcastable ones stay as they are.
    A tensor shared by several layers' inputs (the mask, the rotary table) is expanded once."""
    if times == 1:
        return obj
    memo = {} if _memo is None else _memo
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            big = obj.ndim and obj.shape[0] == batch and batch > 1
            memo[id(obj)] = (obj, obj.repeat(times, *([1] * (obj.ndim - 1))) if big else obj)
        return memo[id(obj)][1]
    if isinstance(obj, tuple):
        return tuple(_expand(o, batch, times, memo) for o in obj)
    if isinstance(obj, list):
        return [_expand(o, batch, times, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _expand(v, batch, times, memo) for k, v in obj.items()}
    return obj


@dataclass
class CleanRun:
    """Everything a clean pass leaves for the interventions that resume from it."""

    batch: SentenceBatch
    resid_pre: list[torch.Tensor]          # per layer [B, T, d]
    layer_args: list[tuple]                # per layer: what the model passes each block besides the residual
    layer_kwargs: list[dict]
    final: torch.Tensor                    # [B, d] final residual (last layer resid_post) at the sentence end
    ctl: Controller


def layer_call_inputs(lm: LoadedModel, batch: SentenceBatch) -> tuple[torch.Tensor, list[tuple], list[dict]]:
    """(embeddings, per-layer extra positional args, per-layer kwargs): what the model passes each block.

    Per layer, not layer 0's reused: Gemma 3 (and Qwen 3 / Mistral-style sliding layers) give sliding and global
    layers different masks and rotary tables. One forward of the model's own body records them; it stops in the
    last block's pre-hook, so the last block, the final norm and the unembedding never run."""
    layers = layer_list(lm.hf_model)
    got: list = [None] * len(layers)

    def grab(i):
        def hook(mod, args, kwargs):
            got[i] = (args, kwargs)
            if i == len(layers) - 1:
                raise _Stop
        return hook

    handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        lm.adapter.body(lm.hf_model)(input_ids=batch.ids.to(lm.device), attention_mask=batch.mask.to(lm.device),
                                     use_cache=False)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    args0, kwargs0 = got[0]
    hidden = args0[0] if args0 else kwargs0["hidden_states"]
    extra_args = [tuple(a[1:]) if a else () for a, _ in got]
    extra_kwargs = [{k: v for k, v in kw.items() if not (k == "hidden_states" and not a)} for a, kw in got]
    return hidden, extra_args, extra_kwargs


def run_layers(lm: LoadedModel, hidden: torch.Tensor, start: int, args: list[tuple], kwargs: list[dict],
                record: list | None = None) -> torch.Tensor:
    layers = layer_list(lm.hf_model)
    for layer in range(start, lm.n_layers):
        if record is not None:
            record.append(hidden)
        out = layers[layer](hidden, *args[layer], **kwargs[layer])
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def at_end(x: torch.Tensor, end_pos: torch.Tensor) -> torch.Tensor:
    """[R, T, d] -> [R, d]: each row at its sentence end (index tensors on x's device)."""
    return x[torch.arange(x.shape[0], device=x.device), end_pos.to(x.device)]


def clean_run(lm: LoadedModel, batch: SentenceBatch, capture_final: bool = False) -> CleanRun:
    """The unedited forward, keeping each layer's input residual, the clean head outputs and attention mass."""
    ctl = Controller(end_pos=batch.end_pos, emotion_mask=batch.emotion_mask, capture_z=True,
                     token_mask=batch.mask.float(), capture_final=capture_final)
    with torch.inference_mode(), controlled(ctl):
        hidden, args, kwargs = layer_call_inputs(lm, batch)
        record: list = []
        out = run_layers(lm, hidden, 0, args, kwargs, record)
    return CleanRun(batch, record, args, kwargs, at_end(out, batch.end_pos), ctl)


def run_edited(lm: LoadedModel, clean: CleanRun, n_conditions: int, edits: dict[int, LayerEdit],
               record_mass: bool = True, start: int | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Resume from the clean residual at the first edited layer with n_conditions x B rows (condition-major).

    Returns the final residual at the sentence end [C*B, d] and the attention mass per layer >= start [C*B, H].
    """
    b = len(clean.batch)
    if start is None:
        start = min(edits) if edits else lm.n_layers - 1
    ctl = Controller(end_pos=clean.batch.end_pos.repeat(n_conditions), edits=edits,
                     emotion_mask=clean.batch.emotion_mask.repeat(n_conditions, 1) if record_mass else None)
    with torch.inference_mode(), controlled(ctl):
        hidden = clean.resid_pre[start].repeat(n_conditions, 1, 1)
        out = run_layers(lm, hidden, start, _expand(clean.layer_args, b, n_conditions),
                          _expand(clean.layer_kwargs, b, n_conditions))
    return at_end(out, ctl.end_pos), ctl.mass


def final_logprobs(lm: LoadedModel, final: torch.Tensor, token_sets: Sequence[Sequence[int]]) -> torch.Tensor:
    """[R, n_sets]: mean next-token log-probability of each token set, from final residuals [R, d]."""
    with torch.inference_mode():
        logits = lm.adapter.logits(lm.hf_model, final).float()
        logp = torch.log_softmax(logits, dim=-1)
    return torch.stack([logp[:, list(s)].mean(-1) for s in token_sets], dim=-1)


def lexicon_token_ids(tokenizer, lexicons: dict[str, list[str]], emotions: Sequence[str]) -> list[list[int]]:
    """First token of ' word' (the word as the next word of a text) for each lexicon word; sorted unique ids."""
    out = []
    for e in emotions:
        ids = {tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in lexicons[e]}
        out.append(sorted(ids))
    return out


# ------------------------------------------------------------------------------------------------------ screening
@dataclass(frozen=True)
class Readout:
    """Unit emotion directions [E, d] in the final residual, and lexicon token ids per emotion."""

    directions: np.ndarray
    token_sets: list[list[int]]


def readout_metrics(lm: LoadedModel, final: torch.Tensor, readout: Readout) -> tuple[np.ndarray, np.ndarray]:
    """(projections [R, E], lexicon log-probs [R, E]) as float32 numpy, whatever the model's device and dtype."""
    dirs = torch.as_tensor(readout.directions, dtype=torch.float32, device=final.device)
    proj = (final.float() @ dirs.T).cpu().numpy()
    return proj, final_logprobs(lm, final, readout.token_sets).cpu().numpy()


def mean_head_outputs(lm: LoadedModel, batches: Sequence[SentenceBatch]) -> dict[int, torch.Tensor]:
    """Dataset mean of each head's z over all real tokens: the value mean-ablation writes in. layer -> [H, dh]
    (float32, on the CPU like every edit; `Controller.apply` moves edits to the model's device)."""
    sums: dict[int, torch.Tensor] = {}
    n = 0
    for batch in batches:
        run = clean_run(lm, batch)
        for layer, s in run.ctl.z_sum.items():
            sums[layer] = sums.get(layer, 0) + s.double()
        n += int(batch.mask.sum())
    return {layer: (s / max(n, 1)).float().cpu() for layer, s in sums.items()}


def screen_batch(lm: LoadedModel, batch: SentenceBatch, readout: Readout, ablation: str = "zero",
                 means: dict[int, torch.Tensor] | None = None, layers: Sequence[int] | None = None,
                 progress=None) -> dict[str, np.ndarray]:
    """Ablate every head of every layer singly, one resumed forward per layer (all its heads as rows).

    Returns arrays indexed [layer, head, sentence(, emotion)]: proj/logprob deltas for every direction and
    lexicon, the head's clean attention mass on emotion words, and the change of the mean attention mass of the
    downstream heads (layers > L) when head (L, h) is ablated.
    """
    a = arch(lm)
    layers = list(range(a.n_layers)) if layers is None else list(layers)
    clean = CleanScreen.of(lm, batch, readout)
    b, e = len(batch), readout.directions.shape[0]
    out = {"proj_delta": np.zeros((a.n_layers, a.n_heads, b, e), np.float32),
           "logprob_delta": np.zeros((a.n_layers, a.n_heads, b, e), np.float32),
           "mass_clean": np.zeros((a.n_layers, a.n_heads, b), np.float32),
           "mass_downstream_delta": np.zeros((a.n_layers, a.n_heads, b), np.float32)}
    for layer in range(a.n_layers):
        out["mass_clean"][layer] = clean.mass_clean(layer)
    for layer in layers:
        for key, value in screen_layer(lm, clean, layer, readout, ablation, means).items():
            out[key][layer] = value
        if progress is not None:
            progress.update(1)
    return out


@dataclass
class CleanScreen:
    """A clean run plus its readout: what every layer's screening forward of one sentence batch compares to."""

    run: CleanRun
    proj0: np.ndarray
    logp0: np.ndarray

    @classmethod
    def of(cls, lm: LoadedModel, batch: SentenceBatch, readout: Readout) -> CleanScreen:
        run = clean_run(lm, batch)
        return cls(run, *readout_metrics(lm, run.final, readout))

    def mass_clean(self, layer: int) -> np.ndarray:
        """[H, B] attention mass of each head's sentence-end query on the emotion words."""
        return self.run.ctl.mass[layer].T.float().cpu().numpy()


def in_groups(n: int, size: int, run: Callable[[int, int], dict[str, np.ndarray]], what: str
              ) -> dict[str, np.ndarray]:
    """`run(lo, hi)` over consecutive groups of `size` of n items (one forward each), concatenated in order. On
    out-of-memory the group is halved and retried (logged): condition-expanded forwards (heads x sentences
    rows) are what outgrows a GPU first."""
    parts: list[dict[str, np.ndarray]] = []
    run_with_backoff(n, size, lambda lo, hi: parts.append(run(lo, hi)), what)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def screen_layer(lm: LoadedModel, clean: CleanScreen, layer: int, readout: Readout, ablation: str = "zero",
                 means: dict[int, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Every head of `layer` ablated singly, in one forward resumed at the layer (n_heads x B rows; fewer heads
    per forward after an out-of-memory back-off).

    Returns proj_delta / logprob_delta [H, B, E] and mass_downstream_delta [H, B].
    """
    a = arch(lm)
    b, e = len(clean.run.batch), readout.directions.shape[0]
    later = list(range(layer + 1, a.n_layers))

    def heads(lo: int, hi: int) -> dict[str, np.ndarray]:
        n = hi - lo
        keep = torch.ones(n, b, a.n_heads)
        for i, h in enumerate(range(lo, hi)):
            keep[i, :, h] = 0.0
        keep = keep.reshape(n * b, a.n_heads)
        edit = LayerEdit(keep=keep)
        if ablation == "mean":
            edit.add = (1.0 - keep)[:, :, None] * means[layer][None]
        final, mass = run_edited(lm, clean.run, n, {layer: edit})
        proj, logp = readout_metrics(lm, final, readout)
        out = {"proj_delta": proj.reshape(n, b, e) - clean.proj0[None],
               "logprob_delta": logp.reshape(n, b, e) - clean.logp0[None],
               "mass_downstream_delta": np.zeros((n, b), np.float32)}
        if later:
            ablated = torch.stack([mass[m].reshape(n, b, a.n_heads).mean(-1) for m in later]).mean(0)
            base = torch.stack([clean.run.ctl.mass[m].mean(-1) for m in later]).mean(0)
            out["mass_downstream_delta"] = (ablated - base[None]).float().cpu().numpy()
        return out

    return in_groups(a.n_heads, a.n_heads, heads, f"head screening {lm.name} layer {layer}")


def screen_one_by_one(lm: LoadedModel, batch: SentenceBatch, readout: Readout, layer: int, head: int,
                      ablation: str = "zero", means: dict[int, torch.Tensor] | None = None) -> np.ndarray:
    """Reference: one full, plain forward of the model with a single head ablated; proj delta [B, E]."""
    a = arch(lm)
    clean = clean_run(lm, batch)
    keep = torch.ones(len(batch), a.n_heads)
    keep[:, head] = 0.0
    edit = LayerEdit(keep=keep, add=(1 - keep)[:, :, None] * means[layer][None] if ablation == "mean" else None)
    ctl = Controller(end_pos=batch.end_pos, edits={layer: edit})
    with torch.inference_mode(), controlled(ctl):
        hidden, args, kwargs = layer_call_inputs(lm, batch)
        out = run_layers(lm, hidden, 0, args, kwargs)
    final = at_end(out, batch.end_pos)
    return readout_metrics(lm, final, readout)[0] - readout_metrics(lm, clean.final, readout)[0]


def attribution_batch(lm: LoadedModel, batch: SentenceBatch, directions: np.ndarray, ablation: str = "zero",
                      means: dict[int, torch.Tensor] | None = None) -> np.ndarray:
    """First-order (attribution-patching) estimate of every head's ablation effect, one forward + backward:
    delta(L, h) ~ sum_t (z_ablated - z)[t] . d(proj)/dz[t], with proj = final residual at the sentence end . the
    row's own direction ([B, d]). Returns [n_layers, n_heads, B]. Exact screening checks it (Spearman in metrics).
    """
    ctl = Controller(end_pos=batch.end_pos, keep_graph=True)
    params = [p for p in lm.hf_model.parameters() if p.requires_grad]
    with torch.no_grad():
        hidden, args, kwargs = layer_call_inputs(lm, batch)
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad(), controlled(ctl):
            out = run_layers(lm, hidden.detach().requires_grad_(True), 0, args, kwargs)
            final = at_end(out, batch.end_pos)
            (final * torch.as_tensor(directions, dtype=final.dtype, device=final.device)).sum().backward()
    finally:
        for p in params:
            p.requires_grad_(True)
    valid = batch.mask[:, None, :, None]
    result = []
    for layer in range(lm.n_layers):
        z = ctl.z_graph[layer].detach().float()  # [B, H, T, dh]
        target = (torch.zeros_like(z) if ablation == "zero"
                  else means[layer].to(z.device)[None, :, None, :].expand_as(z))
        grad = ctl.z_graph[layer].grad.float()
        result.append(((target - z) * grad * valid.to(z.device, z.dtype)).sum((2, 3)).T.cpu().numpy())
    return np.stack(result)


def summarise_screen(table: pd.DataFrame, metric: str = "proj_delta", ci: StatisticsParams | None = None,
                     seed: int = 0) -> pd.DataFrame:
    """Per (emotion, head): mean, std, n, standardized effect (mean/sd), the pipeline's bootstrap CI of the mean
    (`stats.intervals.interval`, params `statistics`; None = its defaults), and rank by -mean.

    Ablation that *removes* the emotion lowers the projection, so the most negative mean ranks first.
    """
    g = table.groupby(["emotion", "layer", "head"], sort=True)[metric]
    s = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    s["std"] = s["std"].fillna(0.0)
    s["d"] = np.where(s["std"] > 0, s["mean"] / s["std"].where(s["std"] > 0, 1.0), 0.0)
    bounds = [interval(v.to_numpy(dtype=float), None, ci or StatisticsParams(), seed) for _, v in g]
    s["ci_low"], s["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    s["rank"] = s.groupby("emotion")["mean"].rank(method="first").astype(int)
    s.insert(3, "head_label", [head_label(a, b) for a, b in zip(s["layer"], s["head"])])
    s.insert(0, "metric", metric)
    return s


# ------------------------------------------------------------------------------------------------------- patching
@dataclass
class SourceStats:
    """Mean source-run statistics per layer: z at the sentence end [H, dh], right-aligned values [H, K, dh]
    (K = offset from the sentence end, BOS excluded) and the sentence-end attention pattern (BOS weight [H] and
    right-aligned weights [H, K]) with per-offset counts [K]."""

    z: dict[int, torch.Tensor]
    values: dict[int, torch.Tensor]
    pattern_bos: dict[int, torch.Tensor]
    pattern: dict[int, torch.Tensor]
    counts: torch.Tensor


def source_stats(lm: LoadedModel, batches: Sequence[SentenceBatch], max_offset: int | None = None) -> SourceStats:
    """Means over source runs of what the patching modes write in (see the module docstring).

    Offsets reach back to the longest source sentence by default (K = its end position), so every key of
    every source sentence has a slot whatever the sentence length (a fixed K overflowed on long sentences).
    """
    a = arch(lm)
    if max_offset is None:
        max_offset = max((int(b.end_pos.max()) for b in batches if len(b)), default=0) or 1
    z = {m: torch.zeros(a.n_heads, a.d_head, dtype=torch.float64) for m in range(a.n_layers)}
    val = {m: torch.zeros(a.n_heads, max_offset, a.d_head, dtype=torch.float64) for m in range(a.n_layers)}
    pbos = {m: torch.zeros(a.n_heads, dtype=torch.float64) for m in range(a.n_layers)}
    pat = {m: torch.zeros(a.n_heads, max_offset, dtype=torch.float64) for m in range(a.n_layers)}
    counts = torch.zeros(max_offset, dtype=torch.float64)
    n = 0
    for batch in batches:
        run = clean_run(lm, batch, capture_final=True)
        z_final = {m: t.double().cpu() for m, t in run.ctl.z_final.items()}
        value = {m: t.double().cpu() for m, t in run.ctl.value.items()}
        pattern = {m: t.double().cpu() for m, t in run.ctl.pattern_final.items()}
        for i, end in enumerate(batch.end_pos.tolist()):
            offs = torch.arange(end, 0, -1) - 1  # positions 1..end -> offsets end-1..0
            pos = torch.arange(1, end + 1)
            near = offs < max_offset  # keys further from the end than max_offset: no source (the patch keeps own)
            offs, pos = offs[near], pos[near]
            counts[offs] += 1
            for m in range(a.n_layers):
                z[m] += z_final[m][i]
                val[m][:, offs] += value[m][i][:, pos]
                pbos[m] += pattern[m][i][:, 0]
                pat[m][:, offs] += pattern[m][i][:, pos]
            n += 1
    safe = counts.clamp(min=1)
    return SourceStats({m: (v / n).float() for m, v in z.items()},
                       {m: (v / safe[None, :, None]).float() for m, v in val.items()},
                       {m: (v / n).float() for m, v in pbos.items()},
                       {m: (v / safe[None]).float() for m, v in pat.items()}, counts.float())


def patch_edit(mode: str, stats: SourceStats, layer: int, head_rows: torch.Tensor, end_pos: torch.Tensor,
               a: Arch) -> LayerEdit:
    """A LayerEdit patching, for each row r, the heads with head_rows[r, h] = True at the sentence-end query."""
    sel = head_rows.bool()
    if mode not in PATCH_MODES:
        raise ValueError(f"unknown patch mode {mode!r} (allowed: {', '.join(PATCH_MODES)})")

    def aligned(t_len: int, end: torch.Tensor, source: torch.Tensor, own: torch.Tensor, fill_mask: bool):
        # source [H, K(, dh)] by offset -> [R, H, T(, dh)] by target position; uncovered positions keep `own`.
        source = source.to(own.device)
        pos = torch.arange(t_len, device=own.device)[None, :]
        off = end[:, None] - pos                                  # [R, T] offset from the sentence end
        covered = (pos >= 1) & (off >= 0) & (off < source.shape[1])
        covered &= stats.counts.to(own.device)[off.clamp(0, source.shape[1] - 1)] > 0
        src = source[:, off.clamp(0, source.shape[1] - 1)]        # [H, R, T(, dh)]
        src = src.transpose(0, 1)                                # [R, H, T(, dh)]
        cov = covered[:, None, :, None] if src.ndim == 4 else covered[:, None, :]
        if fill_mask:
            return torch.where(cov, src.to(own.dtype), own), covered
        return torch.where(cov, src.to(own.dtype), torch.zeros_like(own)), covered

    def final(pattern_final, value, z_final):
        end = end_pos.to(z_final.device)
        if mode == "result":
            new = stats.z[layer].to(z_final.device, z_final.dtype)[None].expand_as(z_final)
        else:
            v_src, _ = aligned(value.shape[2], end, stats.values[layer], value, True)
            if mode == "v_only":
                new = torch.einsum("rht,rhtd->rhd", pattern_final, v_src)
            else:
                p, _ = aligned(value.shape[2], end, stats.pattern[layer], pattern_final, False)
                p = p.clone()
                p[:, :, 0] = stats.pattern_bos[layer].to(p.device, p.dtype)[None]
                p = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
                new = torch.einsum("rht,rhtd->rhd", p, v_src)
        return torch.where(sel[:, :, None].to(z_final.device), new, z_final)

    return LayerEdit(final=final)


def head_set_edits(head_sets: Sequence[Sequence[tuple[int, int]]], b: int, a: Arch, kind: str,
                   means: dict[int, torch.Tensor] | None = None, stats: SourceStats | None = None,
                   end_pos: torch.Tensor | None = None) -> dict[int, LayerEdit]:
    """Edits for C head sets (condition-major rows C*B): `zero`, `mean` ablation or a patch mode per set."""
    c = len(head_sets)
    layers = sorted({m for s in head_sets for m, _ in s})
    edits = {}
    for m in layers:
        sel = torch.zeros(c, b, a.n_heads)
        for i, s in enumerate(head_sets):
            for layer, h in s:
                if layer == m:
                    sel[i, :, h] = 1.0
        sel = sel.reshape(c * b, a.n_heads)
        if kind == "zero":
            edits[m] = LayerEdit(keep=1.0 - sel)
        elif kind == "mean":
            edits[m] = LayerEdit(keep=1.0 - sel, add=sel[:, :, None] * means[m][None])
        else:
            edits[m] = patch_edit(kind, stats, m, sel, end_pos.repeat(c), a)
    return edits


def run_head_sets(lm: LoadedModel, batch: SentenceBatch, readout: Readout, head_sets, kind: str,
                  means=None, stats=None, chunk: int = 16, clean: CleanRun | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(proj_delta, logprob_delta) [C, B, E] of editing each head set jointly, chunk sets per forward.
    `clean`: the batch's clean run when the caller already has it (it edits many set lists on one batch)."""
    a = arch(lm)
    clean = clean_run(lm, batch) if clean is None else clean
    proj0, logp0 = readout_metrics(lm, clean.final, readout)

    def sets(lo: int, hi: int) -> dict[str, np.ndarray]:
        edits = head_set_edits(head_sets[lo:hi], len(batch), a, kind, means, stats, batch.end_pos)
        final, _ = run_edited(lm, clean, hi - lo, edits, record_mass=False)
        proj, logp = readout_metrics(lm, final, readout)
        return {"proj": proj.reshape(hi - lo, len(batch), -1) - proj0[None],
                "logp": logp.reshape(hi - lo, len(batch), -1) - logp0[None]}

    out = in_groups(len(head_sets), chunk, sets, f"head sets ({kind}) {lm.name}")
    return out["proj"], out["logp"]


def random_unit_sets(grid: tuple[int, int], size: int, n: int, seed: int, exclude=()) -> list[list[tuple[int, int]]]:
    """n seeded random sets of `size` distinct (layer, index) units of a [n_layers, units per layer] grid (heads or
    MLP neurons), never drawing from `exclude` (the units under test); each set sorted."""
    rng = np.random.default_rng(seed)
    per_layer = grid[1]
    pool = np.setdiff1d(np.arange(grid[0] * per_layer), [m * per_layer + k for m, k in exclude])
    return [sorted((int(j // per_layer), int(j % per_layer)) for j in
                   rng.choice(pool, size=min(size, len(pool)), replace=False)) for _ in range(n)]
