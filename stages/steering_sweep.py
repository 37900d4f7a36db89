"""Stage `steering_sweep`: every named steering setting (the seeds' token-based vectors at every step, today's
sentence-end vectors over the last 3 prompt tokens, the frontier search's windows, bands, norm-preserving modes
and direction methods) x layers x alphas x emotions on the selection split of neutral prompts, the equal-norm
random band of `random_settings`, and per emotion the picks within the fluency budget that `steering_confirm`
tests on the disjoint confirmation split."""

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.steering import plots as steering_plots
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import selection, sweep
from emotion_circuits.steering.prompts import split_prompts
from emotion_circuits.steering.settings import settings_from
from emotion_circuits.evaluation.catalog import families_in
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_json, write_parquet
from emotion_circuits.model.info import stage_model
from emotion_circuits.model.site import Site

PEERS = "metrics/peers.json"  # benchmarks/peers.py's points (repeng, steering-vectors) for the frontier plot


def run(params, args) -> None:
    s, g, budget = params.steering_common, params.steering_sweep, params.steering
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    info = stage_model(s.model, "steering_common.model", params.models, s.max_new_tokens)
    for layer in g.layers:  # the grid every setting inherits; then each setting's own layers and band
        Site(layer).within(info.n_layers, "steering_sweep.layers")
    settings = settings_from(s, g.settings, g.layers, g.alphas, info.n_layers)
    prompts = split_prompts(read_parquet(paths.DATASET / "steering_prompts.parquet"), g.n_prompts,
                            params.steering_confirm.n_prompts)["selection"]
    directions = sweep.setting_directions(paths.VECTORS, s.model, settings)
    conds, meta = sweep.build_grid(prompts, settings, directions, s, g, params.seed)
    evaluators = sweep.stage_evaluators(s, paths.DATASET, params.seed)
    with staged_outputs(*paths.STAGES["steering_sweep"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        lm = sweep.load_steered_model(s, params.seed)
        table, seconds = sweep.run_experiment(lm, conds, meta, evaluators, s, params.seed, params.execution,
                                              progress=not args.no_progress)
        summary = sweep.summarise_effects(table, families_in(table), s.nll_threshold, params.seed,
                                          extra_keys=("setting",), ci=params.statistics,
                                          random_keys=("setting", "layer", "alpha"))
        picks = selection.pick(summary, s.primary_metric, budget.nll_budget, budget.degenerate_budget)
        write_parquet(out / "generations.parquet", table)
        write_parquet(out / "summary.parquet", summary)
        write_json(out / "selection.json", {"picks": picks, "settings": [x.to_dict() for x in settings],
                                            "prompts": list(prompts["id"]), "primary_metric": s.primary_metric,
                                            "nll_budget": budget.nll_budget,
                                            "degenerate_budget": budget.degenerate_budget})
        steering_plots.write_sweep_plots(summary, live, s.primary_metric, report_steering.read_peers(PEERS),
                                          budget.nll_budget)
        live.log_metrics(report_steering.sweep_metrics(summary, picks, settings, s, g, budget, len(conds)))
        live.log_timing(report_steering.generation_timing(seconds, int(table["n_new_tokens"].sum())))


if __name__ == "__main__":
    cli.main("steering_sweep", __doc__, run)
