"""Stage `activations`: resid_pre/resid_post at every layer, sentence end and emotion tokens, per model."""

import gc
import time
from pathlib import Path

from emotion_circuits import activations as acts
from emotion_circuits import cli
from emotion_circuits.io import read_parquet, staged_outputs, write_json
from emotion_circuits.models import RANDOM_INIT_SUFFIX, load_model
from emotion_circuits.resources import peak_rss_mb, resolve_device, resolve_dtype

DATASET = Path("results/dataset/sentences.parquet")
OUT = Path("results/activations")
METRICS = Path("metrics/activations.json")


def run(params, args) -> None:
    p = params.activations
    sentences = read_parquet(DATASET)
    metrics, timing = {}, {}
    with staged_outputs(OUT, METRICS) as (out, metrics_path):
        # Random-init copies are the alignment stage's null models (a map must not align them).
        names = [*params.models, *([m + RANDOM_INIT_SUFFIX for m in params.models] if p.random_init_controls else [])]
        device = resolve_device(p.device)
        for name in names:
            start = time.perf_counter()
            lm = load_model(name, device=device, dtype=resolve_dtype(p.dtype, device), seed=params.seed)
            load_s = time.perf_counter() - start
            model_out = out / acts.model_dirname(lm.name)
            writer = acts.ShardWriter(model_out, p.positions, acts.activation_metadata(lm, p.prepend_bos),
                                      p.shard_rows)
            result = acts.extract(lm, sentences["text"].tolist(), sentences["emotion_words"].tolist(), p.hooks,
                                  p.positions, p.batch_size, p.prepend_bos, progress=not args.no_progress,
                                  sink=writer.add)
            writer.close()
            acts.save_index(model_out, result.rows, sentences)
            metrics[lm.name] = {"backend": lm.backend, "n_rows": len(sentences), "n_layers": lm.n_layers,
                                "d_model": lm.d_model, "n_tokens": result.n_tokens, "hooks": list(p.hooks),
                                "positions": list(p.positions),
                                "emotion_token_fallback_rows": sum(r.fallback for r in result.rows)}
            timing[lm.name] = {"load_s": round(load_s, 2), "extract_s": round(result.seconds, 2),
                               "tokens_per_s": round(result.n_tokens / max(result.seconds, 1e-9), 1),
                               "batch_size": result.batch_size, "peak_rss_mb": peak_rss_mb()}
            del lm  # one model in memory at a time
            gc.collect()
        # `timing` (incl. peak RSS, which bounds memory: extraction streams shards of `shard_rows` rows) is the
        # only part of any out that differs between identical runs.
        write_json(metrics_path, {"models": metrics, "timing": {**timing, "device": device}})


if __name__ == "__main__":
    cli.main("activations", __doc__, run)
