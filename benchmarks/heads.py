"""Benchmark batched head screening against one plain forward per head, in one run, on the same sentences.

Batched: `heads.screen_batch` (clean pass once, then per layer one resumed forward with every head of the layer as
rows). Naive (the seeds' loop): for every (layer, head) a full HF forward (default sdpa attention) with that head
zeroed by a pre-hook on the output projection. Prints both timings, the ratio, tokens/s and MFU of the batched
engine against a GEMM peak measured in the same run, the largest difference of the projection deltas, and the
projected time for the full dataset. `--device cuda` runs it on a GPU (benchmarks/gpu.py does, when one exists).
Usage: python benchmarks/heads.py [--model smollm2-135m] [--n 4] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from activations import timed, block_params, matmul_peak
from emotion_circuits.heads import runs as head_runs
from emotion_circuits.heads import engine as H
from emotion_circuits.data import load_lexicons
from emotion_circuits.model.hooks import layer_list
from emotion_circuits.model.loading import load_model


def naive(lm, batch: H.SentenceBatch, readout: H.Readout) -> np.ndarray:
    """[n_layers, n_heads, B, E] projection deltas, one full forward per head."""
    a = H.arch(lm)
    layers = layer_list(lm.hf_model)
    dirs = torch.as_tensor(readout.directions, device=lm.device)
    ids, mask = batch.ids.to(lm.device), batch.mask.to(lm.device)

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
                lm.hf_model(input_ids=ids, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
        return (H.at_end(got["x"], batch.end_pos).float() @ dirs.T).cpu().numpy()

    base = final()
    out = np.zeros((a.n_layers, a.n_heads, len(batch), dirs.shape[0]), np.float32)
    for layer in range(a.n_layers):
        for h in range(a.n_heads):
            out[layer, h] = final((layer, h)) - base
    return out


def screen_work(lm, batch: H.SentenceBatch) -> tuple[int, float]:
    """(head-ablated sentence tokens screened, FLOPs the batched engine spends on them).

    The engine runs the clean pass over every layer, then for layer L all n_heads x B rows through layers L..end,
    and the unembedding only at the sentence ends; matmul FLOPs = 2 x parameters x tokens (attention's own
    T^2 products are left out: the sentences are short).
    """
    a = H.arch(lm)
    inside, head = block_params(lm.hf_model)
    per_layer = inside / a.n_layers
    tokens = int(batch.mask.sum())
    layer_tokens = tokens * a.n_layers + sum(a.n_heads * tokens * (a.n_layers - m) for m in range(a.n_layers))
    readouts = len(batch) * (1 + a.n_layers * a.n_heads)
    return tokens * a.n_layers * a.n_heads, 2 * per_layer * layer_tokens + 2 * head * readouts


def measure(lm, plain, batch: H.SentenceBatch, readout: H.Readout, peak: float) -> dict:
    """Time the batched engine and the one-forward-per-head loop on the same batch (same device and dtype)."""
    device = str(lm.device)
    H.screen_batch(lm, H.make_batch(lm, ["Warm-up."], [[]]), readout)  # kernels, allocator
    fast: dict = {}
    t_fast = timed(lambda: fast.update(H.screen_batch(lm, batch, readout)), device)
    slow: dict = {}
    t_slow = timed(lambda: slow.update(x=naive(plain, batch, readout)), device)
    screened, flops = screen_work(lm, batch)
    diff = float(np.abs(fast["proj_delta"] - slow["x"]).max())
    return {"fast_s": t_fast, "slow_s": t_slow, "proj_delta": fast["proj_delta"], "diff": diff,
            "scale": float(np.abs(slow["x"]).max()), "tokens_per_s": screened / t_fast,
            "mfu": flops / t_fast / peak}


def report(r: dict, label: str, n: int, n_tokens: int, a: H.Arch, dtype: str) -> None:
    print(f"head screening {label} [{dtype}]: {n} sentences ({n_tokens} tokens) x {a.n_layers * a.n_heads} heads")
    print(f"  batched engine       {r['fast_s']:8.2f} s  {r['tokens_per_s']:10,.0f} screened tokens/s  "
          f"MFU {r['mfu']:5.1%}")
    print(f"  one forward per head {r['slow_s']:8.2f} s  ratio {r['slow_s'] / r['fast_s']:.2f}x")
    print(f"  max |delta difference| {r['diff']:.2e} (largest delta {r['scale']:.1f}; eager vs sdpa rounding)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=4, help="sentences (both methods screen all heads on them)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    sentences = pd.read_parquet("results/dataset/sentences.parquet")
    emo = head_runs.select_sentences(sentences, "all", 0, 0)
    df = emo.sample(n=args.n, random_state=0)
    lexicons = load_lexicons("results/dataset/lexicons.json")

    # default attention: the naive loop's model
    plain = load_model(args.model, args.device, args.dtype, use_bridge=False)
    lm = load_model(args.model, args.device, args.dtype, use_bridge=False)
    H.prepare(lm)
    readout = head_runs.load_readout("results/vectors", lm, lexicons)
    batch = H.make_batch(lm, df["text"].tolist(), [list(w) for w in df["emotion_words"]])
    a = H.arch(lm)
    peak = matmul_peak(device=args.device, dtype=getattr(torch, args.dtype))
    r = measure(lm, plain, batch, readout, peak)
    report(r, f"{args.model} on {args.device}", args.n, int(batch.mask.sum()), a, args.dtype)

    own = np.array([head_runs.EMOTIONS.index(e) for e in df["emotion"]])
    got: dict = {}
    t_attr = timed(lambda: got.update(x=H.attribution_batch(lm, batch, readout.directions[own])), args.device)
    approx = got["x"]
    exact_own = r["proj_delta"][:, :, np.arange(args.n), own]
    rho = float(spearmanr(approx.ravel(), exact_own.ravel()).statistic)
    n_emotional = int(sentences["emotion"].isin(head_runs.EMOTIONS).sum())
    per_sentence = r["fast_s"] / args.n
    print(f"  {torch.get_num_threads()} CPU threads; {a.n_kv_heads} KV heads per layer")
    print(f"  attribution (1st order) {t_attr:7.2f} s  ratio vs one-per-head {r['slow_s'] / t_attr:.0f}x, "
          f"Spearman vs exact {rho:.2f}")
    print(f"  full dataset         {n_emotional} emotional sentences -> ~{per_sentence * n_emotional / 60:.0f} min "
          f"batched, ~{r['slow_s'] / args.n * n_emotional / 60:.0f} min one-per-head, "
          f"~{t_attr / args.n * n_emotional / 60:.1f} min attribution (projected from this run)")
    tol = 1e-3 if args.dtype == "float32" else 5e-2
    assert r["diff"] <= tol * max(r["scale"], 1.0), "batched and one-per-head screening disagree"


if __name__ == "__main__":
    main()
