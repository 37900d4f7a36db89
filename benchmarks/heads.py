"""Benchmark batched head screening against one plain forward per head, in one run, on the same sentences.

Batched: `heads.screen_batch` (clean pass once, then per layer one resumed forward with every head of the layer as
rows). Naive (the seeds' loop): for every (layer, head) a full HF forward (default sdpa attention) with that head
zeroed by a pre-hook on the output projection. Prints both timings, the ratio, the largest difference of the
projection deltas, and the projected time for the full dataset.
Usage: python benchmarks/heads.py [--model smollm2-135m] [--n 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from emotion_circuits import head_runs
from emotion_circuits import heads as H
from emotion_circuits.data import load_lexicons
from emotion_circuits.hooks import layer_list
from emotion_circuits.models import load_model


def naive(lm, batch: H.SentenceBatch, readout: H.Readout) -> np.ndarray:
    """[n_layers, n_heads, B, E] projection deltas, one full forward per head."""
    a = H.arch(lm)
    layers = layer_list(lm.hf_model)
    dirs = torch.as_tensor(readout.directions)
    rows = torch.arange(len(batch))

    def final(head=None):
        got = {}
        handles = [layers[-1].register_forward_hook(lambda m, i, o: got.__setitem__("x", o[0] if isinstance(
            o, tuple) else o))]
        if head is not None:
            layer, h = head
            attn = getattr(layers[layer], "self_attn", None) or layers[layer].attn
            proj = getattr(attn, "o_proj", None) or attn.c_proj

            def zero(mod, args):
                z = args[0].clone()
                z[..., h * a.d_head:(h + 1) * a.d_head] = 0
                return (z,)
            handles.append(proj.register_forward_pre_hook(zero))
        try:
            with torch.inference_mode():
                lm.hf_model(input_ids=batch.ids, attention_mask=batch.mask)
        finally:
            for handle in handles:
                handle.remove()
        return (got["x"][rows, batch.end_pos].float() @ dirs.T).numpy()

    base = final()
    out = np.zeros((a.n_layers, a.n_heads, len(batch), dirs.shape[0]), np.float32)
    for layer in range(a.n_layers):
        for h in range(a.n_heads):
            out[layer, h] = final((layer, h)) - base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=4, help="sentences (both methods screen all heads on them)")
    args = parser.parse_args()
    sentences = pd.read_parquet("results/dataset/sentences.parquet")
    emo = head_runs.select_sentences(sentences, "all", 0, 0)
    df = emo.sample(n=args.n, random_state=0)
    lexicons = load_lexicons("results/dataset/lexicons.json")

    plain = load_model(args.model, use_bridge=False)  # default attention, the naive loop's model
    lm = load_model(args.model, use_bridge=False)
    H.prepare(lm)
    readout = head_runs.load_readout("results/vectors", lm, lexicons)
    batch = H.make_batch(lm, df["text"].tolist(), [list(w) for w in df["emotion_words"]])
    a = H.arch(lm)

    start = time.perf_counter()
    fast = H.screen_batch(lm, batch, readout)["proj_delta"]
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = naive(plain, batch, readout)
    t_slow = time.perf_counter() - start

    own = np.array([head_runs.EMOTIONS.index(e) for e in df["emotion"]])
    start = time.perf_counter()
    approx = H.attribution_batch(lm, batch, readout.directions[own])
    t_attr = time.perf_counter() - start
    exact_own = fast[:, :, np.arange(args.n), own]
    rho = float(spearmanr(approx.ravel(), exact_own.ravel()).statistic)

    diff = float(np.abs(fast - slow).max())
    scale = float(np.abs(slow).max())
    n_emotional = int(sentences["emotion"].isin(head_runs.EMOTIONS).sum())
    per_sentence = t_fast / args.n
    print(f"model                  {args.model}: {a.n_layers} layers x {a.n_heads} heads ({a.n_kv_heads} KV heads), "
          f"{torch.get_num_threads()} threads")
    print(f"sentences              {args.n} ({int(batch.mask.sum())} tokens), {a.n_layers * a.n_heads} heads each")
    print(f"batched screening      {t_fast:8.1f} s  ({per_sentence:.1f} s per sentence for all heads)")
    print(f"one forward per head   {t_slow:8.1f} s")
    print(f"ratio                  {t_slow / t_fast:8.2f}x")
    print(f"max |delta difference| {diff:.2e} (largest delta {scale:.1f}; eager vs sdpa rounding)")
    print(f"attribution (1st order) {t_attr:7.1f} s  ratio vs one-per-head {t_slow / t_attr:.0f}x, Spearman vs exact "
          f"{rho:.2f}")
    print(f"full dataset           {n_emotional} emotional sentences -> ~{per_sentence * n_emotional / 60:.0f} min batched,"
          f" ~{t_slow / args.n * n_emotional / 60:.0f} min one-per-head, ~{t_attr / args.n * n_emotional / 60:.1f} min "
          f"attribution (projected from this run)")
    assert diff <= 1e-3 * max(scale, 1.0), "batched and one-per-head screening disagree"


if __name__ == "__main__":
    main()
