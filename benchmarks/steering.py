"""Benchmark the batched steering engine against a naive loop (one condition per generate call), in one run.

The workload mixes prompts x alphas x layers x directions in every batch (256 conditions by default). The naive
loop runs a sample of the same conditions one at a time; the speed-up compares per-condition time, and the
script checks that the sampled outputs are token-identical.
Usage (from the repo root): python benchmarks/steering.py [--model smollm2-135m] [--conditions 256] [--naive 24]
[--tokens 30] [--device cpu|cuda|auto] [--dtype float32|bfloat16|auto] [--layout grid|mixed]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from emotion_circuits.steering.engine import Condition, Window, generate, random_directions

from activations import timed, block_params, matmul_peak  # noqa: E402  (benchmarks/ is on sys.path)

PROMPTS = "data/steering_prompts.jsonl"


def workload(lm, n: int, prompts: list[str], layout: str = "grid") -> list[Condition]:
    """n conditions mixed in every batch.

    grid: the sweep's shape, prompts x 4 alphas x 2 layers x 4 equal-norm directions (n / 32 prompts, each
    steered 32 ways); mixed: every condition draws its own prompt (n / 4 prompts), layer, alpha and direction, so
    prompts repeat only 4 times and sharing their unsteered prefixes helps little.
    """
    ref = np.random.default_rng(0).standard_normal(lm.d_model).astype(np.float32) * 4
    dirs = random_directions(ref, 8, seed=1)
    layers = [lm.n_layers // 4, lm.n_layers // 2, 3 * lm.n_layers // 4]
    if layout == "grid":
        grid = [(L, a, d) for L in layers[1:] for a in (-2.0, -1.0, 1.0, 2.0) for d in range(4)]
        conds = [Condition(prompts[i // len(grid) % len(prompts)], grid[i % len(grid)][0], grid[i % len(grid)][1],
                           dirs[grid[i % len(grid)][2]], Window("last", 3)) for i in range(n)]
        order = np.random.default_rng(3).permutation(n)  # grid points and prompts interleaved across batches
        return [conds[i] for i in order]
    rng = np.random.default_rng(2)
    return [Condition(prompts[i % len(prompts)], int(rng.choice(layers)), float(rng.choice([-2, -1, 0.5, 1, 2])),
                      dirs[i % len(dirs)], Window("last", 3)) for i in range(n)]


def run(lm, conds: list[Condition], tokens: int, batch_size: int, naive_n: int, peak: float) -> dict:
    """Time the engine on all conditions and the naive loop on an even sample; check token identity."""
    device = str(lm.device)
    generate(lm, conds[:batch_size], 2)  # warm-up at full batch width (GPU kernels and allocator, CPU caches)
    generate(lm, conds[:1], 2)
    batched: list[list[int]] = []
    engine_s = timed(lambda: batched.extend(generate(lm, conds, tokens, batch_size)), device)
    sample = list(range(0, len(conds), max(1, len(conds) // naive_n)))[:naive_n]
    naive: list[list[int]] = []
    naive_s = timed(lambda: naive.extend(generate(lm, [conds[i]], tokens, 1)[0] for i in sample), device)
    naive_s = naive_s / len(sample) * len(conds)
    n_tokens = sum(len(t) for t in batched)
    inside, head = block_params(lm.hf_model)
    return {"engine_s": engine_s, "naive_s": naive_s, "speedup": naive_s / engine_s,
            "tokens_per_s": n_tokens / engine_s, "mfu": n_tokens * 2 * (inside + head) / engine_s / peak,
            "identical": all(naive[j] == batched[i] for j, i in enumerate(sample)), "n_sample": len(sample)}


def report(r: dict, label: str, n: int, tokens: int, batch_size: int, peak: float, dtype: str) -> None:
    print(f"model              {label}  ({n} conditions x {tokens} tokens, batch {batch_size})")
    print(f"engine             {r['engine_s']:8.1f} s   {r['tokens_per_s']:8.1f} generated tokens/s   "
          f"MFU {r['mfu']:5.1%}")
    print(f"naive loop         {r['naive_s']:8.1f} s   (extrapolated from {r['n_sample']} conditions run one by one)")
    print(f"speed-up           {r['speedup']:8.1f}x  (target >= 25x: {'ok' if r['speedup'] >= 25 else 'MISSED'})")
    print(f"outputs identical  {r['identical']}  (sampled conditions, token for token)")
    print(f"matmul peak        {peak / 1e9:8.1f} GFLOP/s ({dtype})")


def main() -> None:
    import pandas as pd

    from emotion_circuits.model.loading import load_model
    from emotion_circuits.runtime.resources import resolve_device, resolve_dtype

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--conditions", type=int, default=256)
    parser.add_argument("--naive", type=int, default=24, help="conditions run one by one (sampled evenly)")
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--layout", choices=("grid", "mixed"), default="grid",
                        help="grid: prompts x alphas x layers x directions (the sweep's shape); mixed: 4 per prompt")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    lm = load_model(args.model, device=device, dtype=dtype, use_bridge=False)
    prompts = pd.read_json(PROMPTS, lines=True)["text"].tolist()
    peak = matmul_peak(device=device, dtype=getattr(torch, dtype))
    conds = workload(lm, args.conditions, prompts, args.layout)
    r = run(lm, conds, args.tokens, args.batch_size, args.naive, peak)
    report(r, f"{args.model} on {device}, {args.layout} workload", len(conds), args.tokens, args.batch_size, peak,
           f"{dtype}, {torch.get_num_threads()} threads" if device == "cpu" else dtype)


if __name__ == "__main__":
    main()
