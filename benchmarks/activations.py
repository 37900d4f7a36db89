"""Benchmark activation extraction against a plain HF forward and a naive per-sentence loop, in one run.

Prints tokens/s, the two speed-up ratios, and MFU against a float32 matmul peak measured here.
Usage: python benchmarks/activations.py [--model smollm2-135m] [--n 256] [--naive-n 48]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from emotion_circuits.model.extraction import extract, hook_name, pad_right, tokenize_row
from emotion_circuits.data import read_records, validate_sentences
from emotion_circuits.model.loading import load_model


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Best-of GEMM throughput in FLOP/s on this device and dtype: the ceiling MFU is measured against."""
    if device != "cpu":
        n = max(n, 8192)  # a GPU needs a large product to reach its peak
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best


def timed(fn, device: str = "cpu") -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def block_params(model) -> tuple[int, int]:
    """(matmul parameters inside the transformer blocks, unembedding parameters)."""
    layers = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))
    inside = sum(p.numel() for p in layers.parameters() if p.dim() == 2)
    head = model.get_output_embeddings()
    return inside, (head.weight.numel() if head is not None else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=256, help="sentences for the batched runs")
    parser.add_argument("--naive-n", type=int, default=48, help="sentences for the naive loop")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)

    df, _ = validate_sentences(read_records("data/emotions.jsonl"))
    df = df.sample(n=min(args.n, len(df)), random_state=0)
    texts, words = df["text"].tolist(), [list(w) for w in df["emotion_words"]]
    peak = matmul_peak()

    lm = load_model(args.model)
    plain = load_model(args.model, use_bridge=False)  # an untouched HF copy, default (sdpa) attention
    hooks, positions = ("resid_pre", "resid_post"), ("sentence_end", "emotion_tokens")
    extract(lm, texts[:16], words[:16], hooks, positions, args.batch_size, progress=False)  # warm-up
    result = extract(lm, texts, words, hooks, positions, args.batch_size, progress=False)
    tokens = result.n_tokens
    ours = tokens / result.seconds

    rows = [tokenize_row(plain.tokenizer, t, w, True, plain.causal) for t, w in zip(texts, words)]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].input_ids))
    batches = [pad_right([rows[i] for i in order[b:b + args.batch_size]], plain.tokenizer.pad_token_id)
               for b in range(0, len(order), args.batch_size)]
    with torch.inference_mode():
        seconds = timed(lambda: [plain.hf_model(input_ids=ids, attention_mask=mask) for ids, mask in batches])
    full = tokens / seconds

    names = [hook_name(layer, h) for layer in range(lm.n_layers) for h in hooks]
    naive_rows = rows[: args.naive_n]
    naive_tokens = sum(len(r.input_ids) for r in naive_rows)
    with torch.inference_mode():
        def naive() -> None:  # the textbook loop: one sentence, full forward with logits, cache, index
            for r in naive_rows:
                _, cache = lm.bridge.run_with_cache(torch.tensor([r.input_ids]), names_filter=lambda n: n in names)
                for pos in positions:
                    idx = [r.end_pos] if pos == "sentence_end" else r.emotion_positions
                    _ = [cache[n][0, idx].mean(0) for n in names]
        naive_rate = naive_tokens / timed(naive)

    inside, head = block_params(plain.hf_model)
    mfu_ours = ours * 2 * inside / peak
    mfu_full = full * 2 * (inside + head) / peak
    print(f"model                 {args.model} ({lm.n_layers} layers, d_model {lm.d_model}, backend {lm.backend})")
    print(f"matmul peak           {peak / 1e9:8.1f} GFLOP/s (float32 {torch.get_num_threads()} threads)")
    print(f"extraction            {ours:8.1f} tokens/s  MFU {mfu_ours:5.1%}  ({tokens} tokens, {len(texts)} rows)")
    print(f"plain HF forward      {full:8.1f} tokens/s  MFU {mfu_full:5.1%}  (logits included, same batches)")
    print(f"naive per-sentence    {naive_rate:8.1f} tokens/s  ({len(naive_rows)} rows, run_with_cache + logits)")
    r_full, r_naive = ours / full, ours / naive_rate
    print(f"ratio vs plain forward {r_full:6.2f}x  (target >= 1.2x: {'ok' if r_full >= 1.2 else 'MISSED'})")
    print(f"ratio vs naive loop    {r_naive:6.2f}x  (target >= 5x:   {'ok' if r_naive >= 5 else 'MISSED'})")
    assert np.isfinite(result.activations["sentence_end"][names[-1]]).all()


if __name__ == "__main__":
    main()
