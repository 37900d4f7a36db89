"""Stage `steering_confirm`: each emotion's picks from `steering_sweep` (the seeds' setting and the best setting
within `steering.nll_budget`) on the confirmation split of prompts, never seen by the selection, against
`n_random` equal-norm random directions in the same setting (paired by prompt, BH across emotions and picks),
with the dose-response over multiples of the picked alpha (negative ones included), the real-world texts before
and after, and example continuations."""

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.steering import confirm, sweep
from emotion_circuits.steering import plots as steering_plots
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering.prompts import split_prompts
from emotion_circuits.steering.settings import settings_from
from emotion_circuits.errors import DataError
from emotion_circuits.evaluation.catalog import families_in
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_json, read_parquet, staged_outputs, write_parquet
from emotion_circuits.model.info import stage_model
from emotion_circuits.store.integrity import checked


def run(params, args) -> None:
    s, g, cp, budget = params.steering_common, params.steering_sweep, params.steering_confirm, params.steering
    info = stage_model(s.model, "steering_common.model", params.models, s.max_new_tokens)
    settings = {x.name: x for x in settings_from(s, g.settings, g.layers, g.alphas, info.n_layers)}
    chosen = read_json(checked(paths.STEERING_SWEEP / "selection.json"))
    picks = chosen["picks"]
    unknown = sorted({c["setting"] for entry in picks.values() for c in entry.values()} - set(settings))
    if unknown:
        raise DataError(f"{paths.STEERING_SWEEP / 'selection.json'} picks settings {unknown} that "
                        f"steering_sweep.settings no longer has: rerun `dvc repro steering_sweep`")
    splits = split_prompts(read_parquet(paths.DATASET / "steering_prompts.parquet"), g.n_prompts, cp.n_prompts)
    prompts = splits["confirmation"]
    real_world = read_parquet(paths.DATASET / "real_world.parquet") if cp.real_world else None
    directions = sweep.pick_directions(paths.VECTORS, s.model, picks, settings)
    conds, meta = confirm.build_confirmation(prompts, real_world, picks, settings, directions, s, cp, params.seed)
    evaluators = sweep.stage_evaluators(s, paths.DATASET, params.seed)
    with staged_outputs(*paths.STAGES["steering_confirm"].targets()) as (out, live_dir), \
            stage_live(live_dir) as live:
        out.mkdir()
        lm = sweep.load_steered_model(s, params.seed)
        table, seconds = sweep.run_experiment(lm, conds, meta, evaluators, s, params.seed, params.execution,
                                              progress=not args.no_progress)
        res = confirm.analyse(table, picks, families_in(table), s.primary_metric,
                              (budget.nll_budget, budget.degenerate_budget), params.statistics, params.seed,
                              cp.n_examples)
        for name in ("table", "samples", "effects", "dose", "real_world", "examples"):
            write_parquet(out / ("generations.parquet" if name == "table" else
                                 "effect_samples.parquet" if name == "samples" else f"{name}.parquet"), res[name])
        steering_plots.write_confirm_plots(res, live, s.primary_metric)
        live.log_metrics(report_steering.confirm_metrics(res, picks, settings, s, cp, params.statistics,
                                                         list(prompts["id"]), list(splits["selection"]["id"]),
                                                         len(conds)))
        live.log_timing(report_steering.generation_timing(seconds, int(table["n_new_tokens"].sum())))


if __name__ == "__main__":
    cli.main("steering_confirm", __doc__, run)
