"""Phase 2: residual-stream activations at every layer, at the sentence end and at emotion-word tokens.

Design: one forward per batch, hooks only on the requested hook points, each hook reduces [batch, pos,
d_model] to [batch, d_model] on the spot (so nothing per-token is kept), and the forward is aborted right
after the last requested hook fired: the final norm and the 49k-wide unembedding are never computed.
Batches use right padding; with a causal mask (or an encoder's attention mask) the real tokens never see
the pads, so batched == one-by-one up to float rounding (tested).

Memory is bounded by design, not by the out-of-memory back-off (which only sees CUDA errors): every row is
checked against min(`dataset.max_tokens`, the model's context) before any forward, and a batch holds at most
`activations.max_batch_tokens` padded tokens (rows sorted longest first, so a long row shares its batch with
few others), so the per-layer peak (attention scores ~ batch x heads x length^2) depends on those two knobs,
never on the longest text of the dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from emotion_circuits.data import find_word_spans
from emotion_circuits.model.hooks import hook_name, residual_hooks
from emotion_circuits.model.lengths import check_token_counts
from emotion_circuits.model.loading import LoadedModel, load_model
from emotion_circuits.model.site import Site
from emotion_circuits.params import ActivationParams, ExecutionParams
from emotion_circuits.runtime.resources import peak_rss_mb, run_with_backoff
from emotion_circuits.store.activations import ShardWriter, model_dirname, save_index

Reducer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TokenizedRow:
    """Token ids of one text plus the positions activations are read at."""

    input_ids: list[int]
    end_pos: int
    emotion_positions: list[int]
    fallback: bool  # True when the row has no emotion words and emotion_positions = all text tokens


def tokenize_row(tokenizer, text: str, emotion_words: Sequence[str], prepend_bos: bool, causal: bool) -> TokenizedRow:
    """Tokenise with character offsets and map emotion words to the tokens that overlap them.

    Causal models get an explicit BOS when `prepend_bos` (never twice); encoders get their own special
    tokens ([CLS] ... [SEP]). Position 'sentence_end' is the last token of the text itself (not [SEP]).
    """
    emotion_words = [str(w) for w in emotion_words]  # parquet gives numpy arrays
    enc = tokenizer(text, add_special_tokens=not causal, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    special = list(enc["special_tokens_mask"])
    if causal and prepend_bos and tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id, *ids]
        offsets = [(0, 0), *offsets]
        special = [1, *special]
    text_positions = [i for i, s in enumerate(special) if not s]
    if not text_positions:
        raise ValueError(f"text produced no tokens: {text!r}")
    spans = [span for word in emotion_words for span in find_word_spans(text, word)]
    positions = sorted({i for i in text_positions for (s, e) in spans
                        if offsets[i][0] < e and offsets[i][1] > s})
    if emotion_words and not positions:
        raise ValueError(f"emotion words {list(emotion_words)} map to no token in {text!r}")
    return TokenizedRow(ids, text_positions[-1], positions or text_positions, fallback=not positions)


def pad_right(rows: Sequence[TokenizedRow], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of tokenised rows, right-padded."""
    from emotion_circuits.model.padding import pad_with_mask

    return pad_with_mask([r.input_ids for r in rows], pad_id, "right")


def position_reducers(rows: Sequence[TokenizedRow], width: int, positions: Sequence[str]) -> dict[str, Reducer]:
    """[batch, pos, d] -> [batch, d] readers for each position mode, built once per batch."""
    reducers: dict[str, Reducer] = {}
    if "sentence_end" in positions:
        end = torch.tensor([r.end_pos for r in rows])
        arange = torch.arange(len(rows))
        reducers["sentence_end"] = lambda x: x[arange, end.to(x.device)]
    if "emotion_tokens" in positions:
        weights = torch.zeros((len(rows), width))
        for i, r in enumerate(rows):
            weights[i, r.emotion_positions] = 1.0 / len(r.emotion_positions)
        reducers["emotion_tokens"] = lambda x: torch.einsum("bt,btd->bd", weights.to(x.device, x.dtype), x)
    return reducers


class _StopForward(Exception):
    """Raised from the last needed hook: everything after it (final norm, unembedding) is skipped."""


def run_capture(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                names: Sequence[str], reducers: dict[str, Reducer]) -> dict[str, dict[str, torch.Tensor]]:
    """Run one forward and return {hook_name: {position: [batch, d_model]}} for the requested hooks only."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    last = max(names, key=lambda n: (Site.parse(n).layer, n.endswith("resid_post")))

    def recorder(name: str):
        def record(x: torch.Tensor) -> None:
            out[name] = {pos: fn(x).float().cpu() for pos, fn in reducers.items()}
            if name == last:
                raise _StopForward
        return record

    device = lm.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    with torch.inference_mode(), residual_hooks(lm, {n: recorder(n) for n in names}):
        try:
            lm.adapter.body(lm.hf_model)(input_ids=input_ids, attention_mask=attention_mask)
        except _StopForward:
            pass
    missing = set(names) - set(out)
    if missing:
        raise RuntimeError(f"hooks did not fire: {sorted(missing)[:4]}")
    return out


@dataclass
class ExtractionResult:
    """activations[position][hook_name] = float32 array [n_rows, d_model], rows in input order.

    Empty when the rows were streamed to a `ShardWriter` instead of being held in memory.
    """

    activations: dict[str, dict[str, np.ndarray]]
    rows: list[TokenizedRow]
    n_tokens: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0  # the batch size that finally ran (smaller than asked after an out-of-memory back-off)


Sink = Callable[[list[int], dict[str, dict[str, torch.Tensor]]], None]


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) slices of rows sorted longest first: at most `batch_size` rows and at most
    `max_batch_tokens` padded tokens (rows x the first row's length) each; a single row always forms a batch.
    With rows of at most max_batch_tokens / batch_size tokens the cut is every `batch_size` rows, as before."""
    out, lo = [], 0
    while lo < len(lengths):
        fit = batch_size if max_batch_tokens is None else max(1, max_batch_tokens // max(1, lengths[lo]))
        hi = min(lo + min(batch_size, fit), len(lengths))
        out.append((lo, hi))
        lo = hi
    return out


def tokenize_rows(lm: LoadedModel, texts: Sequence[str], emotion_words: Sequence[Sequence[str]], prepend_bos: bool,
                  max_tokens: int | None, row_ids: Sequence | None = None) -> list[TokenizedRow]:
    """Every row tokenised, after one clear error for a row over min(`max_tokens`, the model's context)
    (`row_ids` name the offender; positions if None)."""
    rows = [tokenize_row(lm.tokenizer, t, w, prepend_bos, lm.causal) for t, w in zip(texts, emotion_words)]
    check_token_counts(lm, [len(r.input_ids) for r in rows], row_ids if row_ids is not None else range(len(rows)),
                       max_tokens, f"activations {lm.name}")
    return rows


def extract(lm: LoadedModel, texts: Sequence[str], emotion_words: Sequence[Sequence[str]], hooks: Sequence[str],
            positions: Sequence[str], batch_size: int, prepend_bos: bool = True,
            progress: bool = True, sink: Sink | None = None, max_tokens: int | None = None,
            row_ids: Sequence | None = None, max_batch_tokens: int | None = None) -> ExtractionResult:
    """Residuals for every row at every layer; batches are length-sorted so padding is minimal.

    With a `sink` (e.g. `ShardWriter.add`) each batch is handed over as soon as it is computed and nothing is
    accumulated, so memory stays bounded by one batch whatever the model width, depth or dataset size. Every
    row is checked against min(`max_tokens`, the model's context) before the first forward (`row_ids` name
    the offender); batches hold at most `max_batch_tokens` padded tokens (`plan_batches`).
    """
    rows = tokenize_rows(lm, texts, emotion_words, prepend_bos, max_tokens, row_ids)
    names = [hook_name(layer, h) for layer in range(lm.n_layers) for h in hooks]
    acts: dict[str, dict[str, np.ndarray]] = {}
    if sink is None:
        acts = {pos: {n: np.zeros((len(rows), lm.d_model), dtype=np.float32) for n in names} for pos in positions}

        def sink(idx: list[int], captured: dict[str, dict[str, torch.Tensor]]) -> None:
            for name, by_pos in captured.items():
                for pos, values in by_pos.items():
                    acts[pos][name][idx] = values.numpy()

    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i].input_ids), i))
    start = time.perf_counter()
    bar = tqdm(total=len(rows), desc=f"activations {lm.name}", unit="row", disable=not progress, mininterval=1.0)

    def run(lo: int, hi: int) -> None:
        idx = order[lo:hi]
        batch = [rows[i] for i in idx]
        ids, mask = pad_right(batch, lm.tokenizer.pad_token_id)
        sink(idx, run_capture(lm, ids, mask, names, position_reducers(batch, ids.shape[1], positions)))
        bar.update(len(idx))

    used = batch_size  # an out-of-memory halving sticks for the batches after it
    for lo, hi in plan_batches([len(rows[i].input_ids) for i in order], batch_size, max_batch_tokens):
        used = run_with_backoff(hi - lo, used, lambda a, b: run(lo + a, lo + b), f"activations {lm.name}")
    bar.close()
    seconds = time.perf_counter() - start
    return ExtractionResult(acts, rows, sum(len(r.input_ids) for r in rows), seconds, batch_size=used)


def activation_metadata(lm: LoadedModel, prepend_bos: bool) -> dict:
    return {"model": lm.name, "backend": lm.backend, "n_layers": lm.n_layers, "d_model": lm.d_model,
            "prepend_bos": prepend_bos, "dtype": "float32"}


# ------------------------------------------------------------------------------------ many models, any executor
@dataclass(frozen=True)
class ActivationChunk:
    """One unit of work: some dataset rows (in dataset order) of one model."""

    model: str
    index: tuple[int, ...]
    texts: tuple[str, ...]
    emotion_words: tuple[tuple[str, ...], ...]
    ids: tuple[str, ...] = ()  # the rows' dataset ids, for the too-long error; positions if empty
    # A model's first chunk carries all of its rows (ids, texts, emotion words): their lengths are checked
    # before that model's first forward, so a too-long last row fails the stage at once, not after hours.
    preflight: tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]] | None = None


@dataclass
class ChunkResult:
    """What a worker sends back for a chunk: the rows' tokenisation and every batch's reduced residuals."""

    model: str
    metadata: dict
    rows: list[TokenizedRow]
    batches: list[tuple[list[int], dict[str, dict[str, torch.Tensor]]]]  # (dataset row indices, captured)
    n_tokens: int
    load_s: float
    extract_s: float
    batch_size: int
    peak_rss_mb: float
    device: str  # where the worker ran it (`device: auto` resolves on each Ray actor's own machine)


class ActivationWorker:
    """Extracts chunks of any model; holds one model at a time and loads each model once (chunks come
    model-major), so a Ray actor or the local process never keeps two models in memory. Built from the frozen
    `activations` params and the seed (random-weight models), which is all Ray ships to an actor; device/dtype
    `auto` resolve where the worker loads its model."""

    def __init__(self, p: ActivationParams, seed: int, on_rows: Callable[[int], None] | None = None,
                 max_tokens: int | None = None):
        self.p, self.seed, self.on_rows, self.max_tokens = p, seed, on_rows, max_tokens
        self.lm: LoadedModel | None = None
        self.name: str | None = None

    def _model(self, name: str) -> tuple[LoadedModel, float]:
        if name == self.name:
            return self.lm, 0.0
        import gc

        self.lm = None
        gc.collect()
        start = time.perf_counter()
        self.lm = load_model(name, self.p.device, self.p.dtype, self.seed)
        self.name = name
        return self.lm, time.perf_counter() - start

    def __call__(self, chunk: ActivationChunk) -> ChunkResult:
        p = self.p
        lm, load_s = self._model(chunk.model)
        if chunk.preflight is not None:
            ids, texts, words = chunk.preflight
            tokenize_rows(lm, texts, words, p.prepend_bos, self.max_tokens, ids)
        batches: list = []

        def sink(local: list[int], captured: dict[str, dict[str, torch.Tensor]]) -> None:
            batches.append(([chunk.index[i] for i in local], captured))
            if self.on_rows is not None:
                self.on_rows(len(local))

        result = extract(lm, chunk.texts, chunk.emotion_words, p.hooks, p.positions, p.batch_size, p.prepend_bos,
                         progress=False, sink=sink, max_tokens=self.max_tokens, row_ids=chunk.ids or chunk.index,
                         max_batch_tokens=p.max_batch_tokens)
        return ChunkResult(lm.name, activation_metadata(lm, p.prepend_bos),
                           result.rows, batches, result.n_tokens, load_s, result.seconds, result.batch_size,
                           peak_rss_mb(), str(lm.device))


def activation_chunks(models: Sequence[str], texts: Sequence[str], emotion_words: Sequence[Sequence[str]],
                      chunk_size: int, ids: Sequence[str] = ()) -> list[ActivationChunk]:
    """Model-major chunks of `chunk_size` consecutive dataset rows: the same cut under every executor, so the
    batches (length-sorted within a chunk), and therefore the bytes, are the same whoever computes them."""
    out = []
    all_words = tuple(tuple(str(w) for w in ws) for ws in emotion_words)
    all_ids = tuple(str(i) for i in ids) if len(ids) else tuple(range(len(texts)))
    for model in models:
        for lo in range(0, len(texts), chunk_size):
            idx = tuple(range(lo, min(lo + chunk_size, len(texts))))
            first = lo == 0 and len(texts) > chunk_size  # a single chunk checks its rows in extract() anyway
            out.append(ActivationChunk(model, idx, tuple(texts[i] for i in idx), tuple(all_words[i] for i in idx),
                                       tuple(str(ids[i]) for i in idx) if len(ids) else (),
                                       (all_ids, tuple(texts), all_words) if first else None))
    return out


class _ModelOutput:
    """One model's shards, row index and metrics, filled chunk by chunk in chunk order."""

    def __init__(self, out_dir, first: ChunkResult, p: ActivationParams):
        from pathlib import Path

        self.dir, self.meta, self.p = Path(out_dir) / model_dirname(first.model), first.metadata, p
        self.writer = ShardWriter(self.dir, p.positions, first.metadata, p.shard_rows)
        self.rows: list[TokenizedRow] = []
        self.n_tokens, self.load_s, self.extract_s, self.worker_rss = 0, 0.0, 0.0, 0.0
        self.batch_size = p.batch_size
        self.devices: set[str] = set()

    def add(self, res: ChunkResult) -> None:
        for idx, captured in res.batches:
            self.writer.add(idx, captured)
        self.rows.extend(res.rows)
        self.n_tokens += res.n_tokens
        self.load_s += res.load_s
        self.extract_s += res.extract_s
        self.batch_size = min(self.batch_size, res.batch_size)
        self.worker_rss = max(self.worker_rss, res.peak_rss_mb)
        self.devices.add(res.device)

    def close(self, sentences) -> tuple[dict, dict]:
        self.writer.close()
        save_index(self.dir, self.rows, sentences)
        m, rows = self.meta, self.rows
        metrics = {"backend": m["backend"], "n_rows": len(rows), "n_layers": m["n_layers"], "d_model": m["d_model"],
                   "n_tokens": self.n_tokens, "hooks": list(self.p.hooks), "positions": list(self.p.positions),
                   "emotion_token_fallback_rows": sum(r.fallback for r in rows)}
        timing = {"load_s": round(self.load_s, 2), "extract_s": round(self.extract_s, 2),
                  "tokens_per_s": round(self.n_tokens / max(self.extract_s, 1e-9), 1),
                  "batch_size": self.batch_size, "peak_rss_mb": max(self.worker_rss, peak_rss_mb()),
                  "devices": sorted(self.devices)}
        return metrics, timing


def extract_models(models: Sequence[str], sentences, p: ActivationParams, seed: int, execution: ExecutionParams,
                   out_dir, progress: bool = True, max_tokens: int | None = None) -> tuple[dict, dict]:
    """Stream every model's activations into `<out_dir>/<model>/` shards (`p.shard_rows` rows each); chunks run
    locally or on Ray actors (`execution`), results are written in chunk order. Rows over min(`max_tokens`
    (= `dataset.max_tokens`), the model's context) are one clear error. Returns (per-model metrics, per-model
    timing)."""
    from functools import partial

    from emotion_circuits.runtime.executor import imap_chunks

    texts, words = sentences["text"].tolist(), sentences["emotion_words"].tolist()
    ids = sentences["id"].tolist() if "id" in sentences else ()
    chunks = activation_chunks(models, texts, words, execution.chunk_size, ids)
    bar = tqdm(total=len(texts) * len(models), desc="activations", unit="row", disable=not progress,
               mininterval=1.0)
    local = execution.executor == "local"
    results = imap_chunks(partial(ActivationWorker, p, seed, max_tokens=max_tokens), chunks, execution,
                          what="activations",
                          local_factory=lambda: ActivationWorker(p, seed, on_rows=bar.update, max_tokens=max_tokens))
    metrics, timing = {}, {}
    current: _ModelOutput | None = None

    def finish() -> None:
        if current is not None:
            metrics[current.meta["model"]], timing[current.meta["model"]] = current.close(sentences)

    try:
        for chunk, res in zip(chunks, results):
            if current is None or current.meta["model"] != res.model:
                finish()
                current = _ModelOutput(out_dir, res, p)
            current.add(res)
            if not local:
                bar.update(len(chunk.index))
        finish()
    finally:
        bar.close()  # before any error line, so that the error starts a line of its own
    return metrics, timing
