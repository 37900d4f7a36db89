"""Stage `steering_sweep`: layers x alphas x emotions over neutral prompts, with equal-norm random controls."""

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import sweep
from emotion_circuits.evaluation.catalog import families_in
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet
from emotion_circuits.model.site import Site
from emotion_circuits.directions.store import load_directions
from emotion_circuits.model.info import stage_model


def run(params, args) -> None:
    s, g = params.steering_common, params.steering_sweep
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    info = stage_model(s.model, "steering_common.model", params.models, s.max_new_tokens)
    for layer in g.layers:
        Site(layer).within(info.n_layers, "steering_sweep.layers")
    prompts = read_parquet(paths.DATASET / "steering_prompts.parquet").head(g.n_prompts)
    directions = load_directions(paths.VECTORS, s.model, s.vector_position, [Site(L) for L in g.layers],
                                 s.direction, s.unit)
    conds, meta = sweep.build_grid(prompts, directions, s, g, params.seed)
    evaluators = sweep.stage_evaluators(s, paths.DATASET, params.seed)
    with staged_outputs(*paths.STAGES["steering_sweep"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        lm = sweep.load_steered_model(s, params.seed)
        table, seconds = sweep.run_experiment(lm, conds, meta, evaluators, s, params.seed, params.execution,
                                              progress=not args.no_progress)
        summary = sweep.summarise_effects(table, families_in(table), s.nll_threshold, params.seed,
                                          ci=params.statistics)
        write_parquet(out / "generations.parquet", table)
        write_parquet(out / "summary.parquet", summary)
        report_steering.write_sweep_plots(summary, live, s.primary_metric)
        live.log_metrics(report_steering.sweep_metrics(summary, s, g, len(conds)))
        live.log_timing(report_steering.generation_timing(seconds, int(table["n_new_tokens"].sum())))


if __name__ == "__main__":
    cli.main("steering_sweep", __doc__, run)
