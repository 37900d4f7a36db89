"""Stage `activations`: resid_pre/resid_post at every layer, sentence end and emotion tokens, per model.

Rows are cut into fixed chunks (`execution.chunk_size`) per model; with `executor: ray` the chunks of every model
run on Ray actors (one per GPU where GPUs exist), otherwise here. Either way the shards are written in chunk
order, so the outs are byte-identical.
"""


from emotion_circuits.model import extraction as acts
from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs
from emotion_circuits.model.names import RANDOM_INIT_SUFFIX


def run(params, args) -> None:
    p = params.activations
    sentences = read_parquet(paths.DATASET / "sentences.parquet")
    # Random-init copies are the alignment stage's null models (a map must not align them).
    names = [*params.models, *([m + RANDOM_INIT_SUFFIX for m in params.models] if p.random_init_controls else [])]
    with staged_outputs(*paths.STAGES["activations"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        # device/dtype `auto` resolve where each model is loaded: here, or on each Ray actor's machine
        metrics, timing = acts.extract_models(names, sentences, p, params.seed, params.execution, out,
                                              progress=not args.no_progress, max_tokens=params.dataset.max_tokens)
        # `timing` (incl. peak RSS, which bounds memory: extraction streams one chunk at a time into shards of
        # `shard_rows` rows) differs between identical runs: timing.json, not a DVC out, keeps metrics.json stable.
        live.log_metrics({"models": metrics})
        live.log_timing({"models": timing})


if __name__ == "__main__":
    cli.main("activations", __doc__, run)
