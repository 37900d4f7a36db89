"""Stage `steering_sweep`: layers x alphas x emotions over neutral prompts, with equal-norm random controls."""

import time

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import sweep
from emotion_circuits.data import load_lexicons
from emotion_circuits.evaluation.evaluators import build_evaluators
from emotion_circuits.store.io import read_parquet, staged_outputs, write_json, write_parquet
from emotion_circuits.runtime.executor import execution_config
from emotion_circuits.model.loading import load_model


def run(params, args) -> None:
    s = params.steering
    spec = report_steering.spec_from_params(s)
    prompts = read_parquet(paths.DATASET / "steering_prompts.parquet").head(s.n_prompts)
    directions = sweep.load_directions(paths.VECTORS, s.model, s.vector_position, s.layers, s.unit, s.direction)
    conds, meta = sweep.build_grid(prompts, directions, s.emotions, s.layers, s.alphas, s.n_random, s.random_alphas,
                                   spec, params.seed, s.random_prompts)
    evaluators = build_evaluators(s.evaluators, load_lexicons(paths.DATASET / "lexicons.json"),
                                  read_parquet(paths.DATASET / "sentences.parquet"), params.seed)
    with staged_outputs(*paths.STAGES["steering_sweep"].targets()) as (out, metrics_path, plots):
        out.mkdir()
        plots.mkdir()
        # plain HF + module hooks: same hook points as the bridge, faster decoding
        lm = load_model(s.model, device=s.device, dtype=s.dtype, seed=params.seed, use_bridge=False)
        start = time.perf_counter()
        table = sweep.run_and_score(lm, conds, meta, evaluators, sweep.generation_task(s, params.seed),
                                    execution_config(params), progress=not args.no_progress)
        seconds = time.perf_counter() - start
        table = sweep.add_effects(table, report_steering.metric_columns(table))
        summary = sweep.summarise_effects(table, report_steering.families(table), s.nll_threshold, params.seed)
        write_parquet(out / "generations.parquet", table)
        write_parquet(out / "summary.parquet", summary)
        report_steering.write_sweep_plots(summary, plots, out / "plots", s.primary_metric)
        write_json(metrics_path, report_steering.sweep_metrics(summary, evaluators, s, len(conds), int(
            table["n_new_tokens"].sum()), seconds))


if __name__ == "__main__":
    cli.main("steering_sweep", __doc__, run)
