"""GPU benchmark: the steering engine and batched head screening on CUDA, with tokens/s and MFU; skipped on CPU.

Runs the measurements of benchmarks/steering.py and benchmarks/heads.py on the first CUDA device, in bfloat16
(the GPU default, `dtype: auto`) and float32, against a bf16/fp32 GEMM peak measured on that device in the same
run. Without CUDA it prints why it skipped and exits 0. Where the packaged SmolLM2 weights are not installed (a
bare GPU box), a model of exactly SmolLM2-135M's shape with random weights stands in: speed depends on shape, not
on weight values. Head screening reads bundled sentences (data/emotions.jsonl) and, so that it needs no pipeline
outputs, random unit readout directions.
Usage (from the repo root): python benchmarks/gpu.py [--conditions 1024] [--batch-size 512] [--naive 16]
                            [--head-sentences 8] [--parts steering,heads]
"""

from __future__ import annotations

import argparse
import sys

import torch


def smollm2_shaped(device: str, dtype: str):
    """SmolLM2-135M's architecture (30 layers, d 576, 9 heads / 3 KV heads, vocab 49152) with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from emotion_circuits.model.loading import LoadedModel, ModelSpec, byte_tokenizer

    tok = byte_tokenizer()
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device=device, dtype=getattr(torch, dtype)).eval()
    spec = ModelSpec("smollm2-135m-shape", "tiny", "smollm2-shape")
    return LoadedModel("smollm2-135m-shape (random weights)", spec, model, tok, None, 30, 576)


def load(device: str, dtype: str):
    """The packaged SmolLM2 (plain HF), or its shape with random weights where the package is absent."""
    from emotion_circuits.errors import UserError
    from emotion_circuits.model.loading import load_model

    try:
        return load_model("smollm2-135m", device=device, dtype=dtype, use_bridge=False)
    except (UserError, ImportError, OSError) as exc:
        print(f"(packaged SmolLM2 unavailable here: {type(exc).__name__}; using its shape with random weights)")
        return smollm2_shaped(device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conditions", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--naive", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--head-sentences", type=int, default=8)
    parser.add_argument("--parts", default="steering,heads")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU benchmark skipped (run benchmarks/steering.py and benchmarks/heads.py on CPU)")
        return
    import pandas as pd

    import steering as bench_steering  # benchmarks/ is on sys.path
    from activations import matmul_peak

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32: token identity is checked
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    prompts = pd.read_json(bench_steering.PROMPTS, lines=True)["text"].tolist()
    parts = args.parts.split(",")
    for dtype in args.dtypes.split(","):
        peak = matmul_peak(device="cuda", dtype=getattr(torch, dtype))
        if "steering" in parts:
            lm = load("cuda", dtype)
            conds = bench_steering.workload(lm, args.conditions, prompts)
            r = bench_steering.run(lm, conds, args.tokens, args.batch_size, args.naive, peak)
            bench_steering.report(r, f"{lm.name} on cuda", len(conds), args.tokens, args.batch_size, peak, dtype)
            del lm
        if "heads" in parts:
            heads(dtype, args.head_sentences, peak)
        torch.cuda.empty_cache()
        sys.stdout.flush()


def heads(dtype: str, n: int, peak: float) -> None:
    """Batched head screening vs one forward per head, on the GPU, in `dtype`."""
    import numpy as np
    import pandas as pd

    import heads as bench_heads
    from emotion_circuits import EMOTIONS
    from emotion_circuits.heads import engine as H

    lm, plain = load("cuda", dtype), load("cuda", dtype)  # the naive loop keeps the default attention
    H.prepare(lm)
    data = pd.read_json("data/emotions.jsonl", lines=True)
    df = data[data["emotion"].isin(EMOTIONS)].sample(n=n, random_state=0)
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((len(EMOTIONS), lm.d_model)).astype(np.float32)
    readout = H.Readout(dirs / np.linalg.norm(dirs, axis=1, keepdims=True),
                        [sorted(rng.choice(1000, 5, replace=False).tolist()) for _ in EMOTIONS])
    batch = H.make_batch(lm, df["text"].tolist(), [[] for _ in range(n)])
    r = bench_heads.measure(lm, plain, batch, readout, peak)
    bench_heads.report(r, f"{lm.name} on cuda", n, int(batch.mask.sum()), H.arch(lm), dtype)
    del lm, plain

if __name__ == "__main__":
    main()
