"""Phase 5 engine: add alpha * direction to the residual stream over a token window during greedy generation.

Many conditions (prompt x layer x alpha x direction x window) run in one batched generate with a KV cache:
each row carries its own layer, delta and window. Prompts are left-padded with explicit position ids, so every
row computes exactly what it would compute alone (tested token for token).

Units: by default a direction is the raw emotion vector (mean emotion - mean neutral, as in the seeds), so
alpha = 1 moves a neutral residual as far as the average emotional sentence sits from neutral. Unit-norm
directions with alpha ~1-2 do nothing on these models (residual norms are 10^2-10^3).

Band and mode exist to trade effect against fluency: a band spreads the same total delta over several layers
(smaller kicks per layer), and the norm / project modes change *how* the delta enters the residual so the
stream's scale (norm) or its existing emotion component (project) does not simply pile up with alpha.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from emotion_circuits.errors import SteeringError
from emotion_circuits.model.hooks import residual_hooks
from emotion_circuits.model.lengths import context_length
from emotion_circuits.model.loading import LoadedModel
from emotion_circuits.model.padding import pad_rows, pad_with_mask
from emotion_circuits.model.site import Site
from emotion_circuits.runtime.resources import run_with_backoff

WINDOWS = ("last", "positions", "generated", "all")
SCHEDULES = ("constant", "linear", "exp")
MODES = ("add", "norm", "project")


@dataclass(frozen=True)
class Window:
    """Where the delta is added. last: the last `n` prompt tokens; positions: explicit prompt token indices
    (0 = first prompt token, BOS included); generated: every generated token only; all: prompt and generated."""

    kind: str = "last"
    n: int = 3
    positions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in WINDOWS:
            raise ValueError(f"unknown window {self.kind!r} (allowed: {', '.join(WINDOWS)})")
        if self.kind == "last" and self.n < 1:
            raise ValueError("window n must be >= 1")


@dataclass(frozen=True)
class Condition:
    """One generation: a prompt, and optionally a steering delta at `layer` (None = unsteered)."""

    prompt: str
    layer: int = 0
    alpha: float = 0.0
    direction: np.ndarray | None = field(default=None, compare=False)
    window: Window = Window()
    schedule: str = "constant"
    decay: float = 0.7
    iterative: bool = False  # re-apply at every generated step (not only over the prompt window)
    band: int = 1  # steer resid_pre of layers layer .. layer + band - 1, each with direction / band
    mode: str = "add"  # add: x + c d; norm: then rescale to ||x||; project: x - (x.u)u + c d (see _steer_fn)

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, (int, float)) or not np.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r} (allowed: {', '.join(SCHEDULES)})")
        if isinstance(self.band, bool) or not isinstance(self.band, (int, np.integer)) or self.band < 1:
            raise ValueError(f"band must be an integer >= 1, got {self.band!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r} (allowed: {', '.join(MODES)})")

    @property
    def layers(self) -> range:
        """The layers whose resid_pre this condition steers."""
        return range(self.layer, self.layer + int(self.band))


def schedule_weights(schedule: str, length: int, decay: float) -> np.ndarray:
    """Per-position multipliers over a window: constant 1, linear 1 -> 1/length, or decay**i."""
    i = np.arange(length, dtype=np.float64)
    if schedule == "constant":
        return np.ones(length)
    if schedule == "linear":
        return 1.0 - i / max(length, 1)
    return decay**i


def prompt_coefficients(c: Condition, prompt_len: int) -> np.ndarray:
    """alpha x schedule over the prompt tokens this condition steers."""
    coef = np.zeros(prompt_len)
    if c.window.kind == "last":
        idx = np.arange(max(0, prompt_len - c.window.n), prompt_len)
    elif c.window.kind == "positions":
        idx = np.array([p for p in c.window.positions if 0 <= p < prompt_len], dtype=int)
    elif c.window.kind == "all":
        idx = np.arange(prompt_len)
    else:
        idx = np.array([], dtype=int)
    coef[idx] = c.alpha * schedule_weights(c.schedule, len(idx), c.decay)
    return coef


def generated_coefficients(c: Condition, steps: int) -> np.ndarray:
    """alpha x schedule over the generated tokens (window generated/all, or iterative re-application)."""
    if c.window.kind in ("generated", "all") or c.iterative:
        return c.alpha * schedule_weights(c.schedule, steps, c.decay)
    return np.zeros(steps)


def tokenize_prompt(lm: LoadedModel, prompt: str, prepend_bos: bool = True) -> list[int]:
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = lm.tokenizer.bos_token_id
    return [bos, *ids] if prepend_bos and bos is not None else list(ids)


def validate(lm: LoadedModel, conditions: Sequence[Condition]) -> None:
    """Clear errors for conditions that cannot run on this model."""
    if not lm.causal:
        raise SteeringError(f"{lm.name} is an encoder: it cannot generate, so it cannot be steered")
    for c in conditions:
        if c.direction is None:
            continue
        if not 0 <= c.layer < lm.n_layers:
            raise SteeringError(f"layer {c.layer} out of range for {lm.name} (0..{lm.n_layers - 1})")
        if c.layer + c.band - 1 >= lm.n_layers:
            raise SteeringError(f"layer {c.layer} with band {c.band} steers layers {c.layer}..{c.layer + c.band - 1},"
                                f" out of range for {lm.name} (0..{lm.n_layers - 1})")
        if np.shape(c.direction) != (lm.d_model,):
            raise SteeringError(f"direction has shape {np.shape(c.direction)}, expected ({lm.d_model},)")


def check_prompt_lengths(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, prepend_bos: bool) -> None:
    """Every prompt plus its `max_new_tokens` continuation fits the model's context: one clear error before any
    generation (past the context the position table overflows mid-run, an IndexError deep in the model)."""
    ctx = context_length(lm)
    if ctx is None:
        return
    for prompt in dict.fromkeys(prompts):
        n = len(tokenize_prompt(lm, prompt, prepend_bos))
        if n + max_new_tokens > ctx:
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            raise SteeringError(f"steering {lm.name}: prompt {shown!r} has {n} tokens; with max_new_tokens="
                                f"{max_new_tokens} that is {n + max_new_tokens}, over the model's context of {ctx} "
                                f"tokens (shorten the prompt or lower max_new_tokens)")


def _steer_fn(state: dict, delta: torch.Tensor, unit: torch.Tensor, norm_rows: torch.Tensor | None,
              project_rows: torch.Tensor | None):
    """The resid_pre edit of one layer, row by row: coef[row, pos] * delta[row] added (mode add); for project rows,
    x's component along unit[row] removed first; for norm rows, the result rescaled to x's per-position norm.

    Project and norm act only where the row steers this layer at that position (coef != 0), so every other row and
    position keeps x bit for bit: a row computes the same in any batch (batched == alone) and unsteered prefixes stay
    shareable. Reductions are elementwise-then-sum over d_model (no matmul), so they do not depend on the batch.
    """
    def steer(x: torch.Tensor) -> torch.Tensor:
        coef = state["coef"].to(x.dtype)[:, :, None]
        add = coef * delta[:, None, :]
        if norm_rows is None and project_rows is None:
            return x + add
        steered = coef != 0
        base = x
        if project_rows is not None:
            u = unit[:, None, :]
            removed = x - (x * u).sum(-1, keepdim=True) * u
            base = torch.where(project_rows[:, None, None] & steered, removed, x)
        y = base + add
        if norm_rows is not None:
            nx = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            ny = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            scale = torch.where(ny > 0, nx / ny.clamp(min=torch.finfo(ny.dtype).tiny), torch.ones_like(ny))
            y = torch.where(norm_rows[:, None, None] & steered, y * scale, y)
        return y

    return steer


@contextlib.contextmanager
def _steering(lm: LoadedModel, conditions: Sequence[Condition], state: dict) -> None:
    """Per-layer hooks at resid_pre, each editing the rows whose band covers that layer (see `_steer_fn`).

    `state["coef"]` holds the [batch, positions] coefficients of the positions the current forward processes;
    a row steering a band of B layers adds direction / B at each of them.
    """
    device, dtype = lm.device, next(lm.hf_model.parameters()).dtype
    steering = [c.direction is not None and c.alpha != 0 for c in conditions]
    hooks = {}
    for layer in sorted({k for c, on in zip(conditions, steering) if on for k in c.layers}):
        n = len(conditions)
        delta, unit = np.zeros((n, lm.d_model)), np.zeros((n, lm.d_model))
        norm_rows, project_rows = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for i, c in enumerate(conditions):
            if c.direction is not None and layer in c.layers:
                delta[i] = np.asarray(c.direction, dtype=np.float64) / c.band
                length = np.linalg.norm(delta[i])
                unit[i] = delta[i] / length if length > 0 else 0.0
                norm_rows[i], project_rows[i] = c.mode == "norm", c.mode == "project"
        delta_t = torch.as_tensor(delta, dtype=dtype).to(device)
        unit_t = torch.as_tensor(unit, dtype=dtype).to(device)
        norm_t = torch.as_tensor(norm_rows).to(device) if norm_rows.any() else None
        project_t = torch.as_tensor(project_rows).to(device) if project_rows.any() else None
        hooks[Site(layer, "resid_pre").name] = _steer_fn(state, delta_t, unit_t, norm_t, project_t)
    with residual_hooks(lm, hooks):
        yield


def shared_prefix_split(prompts: Sequence[list[int]], coefs: Sequence[np.ndarray]) -> int:
    """Length T of the per-row prompt suffix that must run with steering; everything before it is unsteered.

    A row's tokens before its first steered position compute the same keys/values in every condition with that
    prompt, so the prompt-sharing part is prefilled once per distinct prompt and the KV cache is fanned out.
    At least the last prompt token stays in the suffix: its logits start generation.
    """
    tail = 1
    for p, k in zip(prompts, coefs):
        steered = np.flatnonzero(k)
        first = int(steered[0]) if len(steered) else len(p)
        tail = max(tail, len(p) - min(first, len(p) - 1))
    return tail


class _Greedy:
    """Greedy decoding state of one batch: the chosen tokens, and which rows have emitted EOS (then pad)."""

    def __init__(self, lm: LoadedModel, n_rows: int, max_new_tokens: int):
        self.pad, self.eos = lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id
        self.tokens = torch.full((n_rows, max_new_tokens), self.pad, dtype=torch.long, device=lm.device)
        self.done = torch.zeros(n_rows, dtype=torch.bool, device=lm.device)

    def take(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Greedy token of each row at `step` (pad once a row has emitted EOS); marks rows that are done."""
        nxt = logits.float().argmax(-1)
        nxt = torch.where(self.done, torch.full_like(nxt, self.pad), nxt)
        self.tokens[:, step] = nxt
        if self.eos is not None:
            torch.logical_or(self.done, nxt == self.eos, out=self.done)
        return nxt

    def result(self) -> list[list[int]]:
        """Each row's tokens up to and including its EOS."""
        out = []
        for row in self.tokens.tolist():
            out.append(row[: row.index(self.eos) + 1] if self.eos is not None and self.eos in row else row)
        return out


def _extend(mask: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mask and position ids grown by one generated token per row."""
    return (torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1),
            torch.cat([positions, positions[:, -1:] + 1], dim=1))


def _prefill_shared_prefixes(lm: LoadedModel, prompts: Sequence[list[int]], tail: int) -> tuple[object, torch.Tensor]:
    """KV cache and attention mask of the unsteered prompt prefixes (all but the last `tail` tokens of each row),
    each distinct prefix run once (no hooks: nothing is steered there) and its keys/values fanned out to its rows."""
    from transformers import DynamicCache

    pad, device = lm.tokenizer.pad_token_id, lm.device
    heads = [tuple(p[: max(0, len(p) - tail)]) for p in prompts]
    unique = sorted(set(heads))
    head_width = max(len(h) for h in unique)
    cache = DynamicCache()
    if not head_width:
        return cache, torch.zeros((len(prompts), 0), dtype=torch.long, device=device)
    head_ids, head_mask = (t.to(device) for t in pad_with_mask(unique, pad, "left", head_width))
    lm.hf_model(input_ids=head_ids, attention_mask=head_mask, position_ids=(head_mask.cumsum(-1) - 1).clamp(min=0),
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    row_of = {h: i for i, h in enumerate(unique)}
    index = torch.tensor([row_of[h] for h in heads], device=device)
    cache.batch_select_indices(index)
    return cache, head_mask[index]


def _generate_cached(lm: LoadedModel, conditions: Sequence[Condition], prompts: Sequence[list[int]],
                     coefs: Sequence[np.ndarray], gen_coef: torch.Tensor, greedy: _Greedy, max_new_tokens: int) -> None:
    """KV-cached decoding: shared unsteered prefixes once, then each row's steered suffix on top of its prefix's
    keys/values (a resumed forward), then one new token per step."""
    device, model, state = lm.device, lm.hf_model, {}
    tail = shared_prefix_split(prompts, coefs)
    cache, mask = _prefill_shared_prefixes(lm, prompts, tail)
    suffix = [p[max(0, len(p) - tail):] for p in prompts]
    ids, suffix_mask = (t.to(device) for t in pad_with_mask(suffix, lm.tokenizer.pad_token_id, "left", tail))
    mask = torch.cat([mask, suffix_mask], 1)
    state["coef"] = pad_rows([k[max(0, len(k) - tail):] for k in coefs], 0.0, torch.float32, "left", tail).to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with _steering(lm, conditions, state):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions[:, -tail:],
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        for step in range(max_new_tokens):
            nxt = greedy.take(logits, step)
            if bool(greedy.done.all()) or step == max_new_tokens - 1:
                break
            # only the new token goes through the model; earlier keys/values come from the cache
            mask, positions = _extend(mask, positions)
            state["coef"] = gen_coef[:, step: step + 1]
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions[:, -1:],
                           past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


def _generate_recomputed(lm: LoadedModel, conditions: Sequence[Condition], prompts: Sequence[list[int]],
                         coefs: Sequence[np.ndarray], gen_coef: torch.Tensor, greedy: _Greedy,
                         max_new_tokens: int) -> None:
    """Full recomputation at every step, no prefix sharing: the reference the cached path must reproduce."""
    device, state = lm.device, {}
    seq, mask = (t.to(device) for t in pad_with_mask(prompts, lm.tokenizer.pad_token_id, "left"))
    prompt_coef = pad_rows(coefs, 0.0, torch.float32, "left", seq.shape[1]).to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with _steering(lm, conditions, state):
        for step in range(max_new_tokens):
            state["coef"] = torch.cat([prompt_coef, gen_coef[:, :step]], dim=1)
            logits = lm.hf_model(input_ids=seq, attention_mask=mask, position_ids=positions, use_cache=False,
                                 logits_to_keep=1).logits[:, -1]
            nxt = greedy.take(logits, step)
            if bool(greedy.done.all()):
                break
            mask, positions = _extend(mask, positions)
            seq = torch.cat([seq, nxt[:, None]], dim=1)


def _generate_batch(lm: LoadedModel, conditions: Sequence[Condition], max_new_tokens: int,
                    prepend_bos: bool, use_cache: bool) -> list[list[int]]:
    """Greedy continuations of one batch of conditions, each row with its own layer, delta and window."""
    prompts = [tokenize_prompt(lm, c.prompt, prepend_bos) for c in conditions]
    coefs = [prompt_coefficients(c, len(p)) for p, c in zip(prompts, conditions)]
    gen_coef = torch.tensor(np.stack([generated_coefficients(c, max_new_tokens) for c in conditions]),
                            dtype=torch.float32).to(lm.device)
    greedy = _Greedy(lm, len(prompts), max_new_tokens)
    with torch.inference_mode():
        run = _generate_cached if use_cache else _generate_recomputed
        run(lm, conditions, prompts, coefs, gen_coef, greedy, max_new_tokens)
    return greedy.result()


def generate(lm: LoadedModel, conditions: Sequence[Condition], max_new_tokens: int = 30, batch_size: int = 64,
             prepend_bos: bool = True, use_cache: bool = True, progress: bool = False) -> list[list[int]]:
    """Greedy continuations (token ids) for every condition; many conditions per forward.

    Conditions are sorted by prompt length so rows in a batch pad little; results come back in input order.
    """
    validate(lm, conditions)
    check_prompt_lengths(lm, [c.prompt for c in conditions], max_new_tokens, prepend_bos)
    order = sorted(range(len(conditions)), key=lambda i: (len(conditions[i].prompt), i))
    results: list[list[int]] = [[] for _ in conditions]
    bar = tqdm(total=len(conditions), desc=f"steering {lm.name}", unit="cond", disable=not progress, mininterval=1.0)

    def run(lo: int, hi: int) -> None:
        idx = order[lo:hi]
        for i, tokens in zip(idx, _generate_batch(lm, [conditions[i] for i in idx], max_new_tokens, prepend_bos,
                                                  use_cache)):
            results[i] = tokens
        bar.update(len(idx))

    run_with_backoff(len(order), batch_size, run, f"steering {lm.name}")
    bar.close()
    return results


def decode(lm: LoadedModel, tokens: Sequence[Sequence[int]]) -> list[str]:
    return [lm.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


def random_directions(reference: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` Gaussian directions rescaled to exactly the L2 norm of `reference`: the equal-norm null."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n, reference.shape[-1]))
    dirs *= np.linalg.norm(reference) / np.linalg.norm(dirs, axis=1, keepdims=True)
    return dirs.astype(np.float32)
