"""Benchmark the batched steering engine against a naive loop (one condition per generate call), in one run.

The workload mixes prompts x alphas x layers x directions in every batch (256 conditions by default). The naive
loop runs a sample of the same conditions one at a time; the speed-up compares per-condition time, and the
script checks that the sampled outputs are token-identical.
Usage: python benchmarks/steering.py [--model smollm2-135m] [--conditions 256] [--naive 24] [--tokens 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from emotion_circuits.models import load_model
from emotion_circuits.steering import Condition, Window, generate, random_directions

from activations import block_params, matmul_peak  # noqa: E402  (benchmarks/ is the working directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--conditions", type=int, default=256)
    parser.add_argument("--naive", type=int, default=24, help="conditions run one by one (sampled evenly)")
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    lm = load_model(args.model, use_bridge=False)
    prompts = pd.read_json("data/steering_prompts.jsonl", lines=True)["text"].tolist()
    ref = np.random.default_rng(0).standard_normal(lm.d_model).astype(np.float32) * 4
    dirs = random_directions(ref, 8, seed=1)
    layers = [lm.n_layers // 4, lm.n_layers // 2, 3 * lm.n_layers // 4]
    rng = np.random.default_rng(2)
    conds = [Condition(prompts[i % len(prompts)], int(rng.choice(layers)), float(rng.choice([-2, -1, 0.5, 1, 2])),
                       dirs[i % len(dirs)], Window("last", 3)) for i in range(args.conditions)]
    peak = matmul_peak()
    generate(lm, conds[:4], 4)  # warm-up
    start = time.perf_counter()
    batched = generate(lm, conds, args.tokens, args.batch_size)
    engine_s = time.perf_counter() - start
    sample = list(range(0, len(conds), max(1, len(conds) // args.naive)))[: args.naive]
    start = time.perf_counter()
    naive = [generate(lm, [conds[i]], args.tokens, 1)[0] for i in sample]
    naive_s = (time.perf_counter() - start) / len(sample) * len(conds)
    identical = all(naive[j] == batched[i] for j, i in enumerate(sample))
    tokens = sum(len(t) for t in batched)
    inside, head = block_params(lm.hf_model)
    mfu = tokens * 2 * (inside + head) / engine_s / peak
    print(f"model              {args.model}  ({len(conds)} conditions x {args.tokens} tokens, batch {args.batch_size})")
    print(f"engine             {engine_s:8.1f} s   {tokens / engine_s:8.1f} generated tokens/s   MFU {mfu:5.1%}")
    print(f"naive loop         {naive_s:8.1f} s   (extrapolated from {len(sample)} conditions run one by one)")
    print(f"speed-up           {naive_s / engine_s:8.1f}x  (target >= 25x: {'ok' if naive_s / engine_s >= 25 else 'MISSED'})")
    print(f"outputs identical  {identical}  (sampled conditions, token for token)")
    print(f"matmul peak        {peak / 1e9:8.1f} GFLOP/s (float32, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
