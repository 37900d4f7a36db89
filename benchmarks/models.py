"""Throughput of the packaged causal models side by side, in one run: load, activation extraction, generation.

For each model: cached load time; extraction tokens/s (every layer's resid_pre + resid_post at both positions,
the pipeline's workload); greedy generation tokens/s through the steering engine (KV cache, half the
conditions steered). Wall time and CPU time (time.process_time, all threads) are both reported, so runs on a
shared machine can be read. Usage (from the repo root):
python benchmarks/models.py [--models smollm2-135m gemma3-270m] [--n 128] [--conditions 16] [--tokens 20]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from emotion_circuits.model.extraction import extract
from emotion_circuits.data import read_records, validate_sentences
from emotion_circuits.model.loading import load_model
from emotion_circuits.steering.engine import Condition, Window, generate


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process across all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench_model(name: str, texts: list[str], words: list[list[str]], prompts: list[str], n_conditions: int,
                tokens: int, batch_size: int) -> dict[str, float]:
    lm, load_wall, load_cpu = timed(lambda: load_model(name))
    hooks, positions = ("resid_pre", "resid_post"), ("sentence_end", "emotion_tokens")
    extract(lm, texts[:8], words[:8], hooks, positions, batch_size, progress=False)  # warm-up
    result, ex_wall, ex_cpu = timed(lambda: extract(lm, texts, words, hooks, positions, batch_size, progress=False))
    assert np.isfinite(result.activations["sentence_end"][f"blocks.{lm.n_layers - 1}.hook_resid_post"]).all()

    direction = np.random.default_rng(0).standard_normal(lm.d_model).astype(np.float32) * 4
    conds = [Condition(prompts[i % len(prompts)]) if i % 2 == 0 else
             Condition(prompts[i % len(prompts)], lm.n_layers // 2, 2.0, direction, Window("last", 3))
             for i in range(n_conditions)]
    generate(lm, conds[:2], max_new_tokens=2)  # warm-up
    out, gen_wall, gen_cpu = timed(lambda: generate(lm, conds, max_new_tokens=tokens, batch_size=n_conditions))
    generated = sum(len(t) for t in out)
    params_m = sum(p.numel() for p in lm.hf_model.parameters()) / 1e6
    return {"n_layers": lm.n_layers, "d_model": lm.d_model, "params_m": params_m,
            "load_wall_s": load_wall, "load_cpu_s": load_cpu,
            "extract_tokens": result.n_tokens, "extract_tok_s_wall": result.n_tokens / ex_wall,
            "extract_tok_per_cpu_s": result.n_tokens / ex_cpu,
            "gen_tokens": generated, "gen_tok_s_wall": generated / gen_wall, "gen_tok_per_cpu_s": generated / gen_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--n", type=int, default=128, help="sentences for extraction")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--conditions", type=int, default=16, help="generations, all in one batch")
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per generation")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.manual_seed(0)
    df, _ = validate_sentences(read_records("data/emotions.jsonl"))
    df = df.sample(n=min(args.n, len(df)), random_state=0)
    texts, words = df["text"].tolist(), [list(w) for w in df["emotion_words"]]
    prompts = [r["text"] for r in map(json.loads, open("data/steering_prompts.jsonl", encoding="utf-8"))]
    results = {m: bench_model(m, texts, words, prompts, args.conditions, args.tokens, args.batch_size)
               for m in args.models}
    print(f"{torch.get_num_threads()} torch threads; extraction: {len(texts)} sentences, every layer, "
          f"resid_pre+resid_post, 2 positions; generation: {args.conditions} conditions x {args.tokens} tokens, "
          f"one batch, KV cache")
    print(f"{'model':14} {'params':>7} {'load s':>7} {'extract tok/s':>14} {'(per CPU-s)':>11} "
          f"{'generate tok/s':>15} {'(per CPU-s)':>11}")
    for m, r in results.items():
        print(f"{m:14} {r['params_m']:6.0f}M {r['load_wall_s']:7.1f} {r['extract_tok_s_wall']:14.0f} "
              f"{r['extract_tok_per_cpu_s']:11.0f} {r['gen_tok_s_wall']:15.1f} {r['gen_tok_per_cpu_s']:11.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
