"""Stage `steering`: one alpha (top-level `alpha`, try `dvc exp run -S alpha=2`) at `steering.layer`, over neutral
prompts and the real-world texts: sentence-end vs emotion-token vectors, prompt-only vs iterative patching, swap
patching of emotional texts and random controls (cross-model directions: stage `cross_steering`)."""

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import single as single_alpha
from emotion_circuits.steering import sweep
from emotion_circuits.evaluation.catalog import families_in
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet
from emotion_circuits.model.site import Site
from emotion_circuits.directions.store import load_directions
from emotion_circuits.model.info import stage_model
from emotion_circuits.directions.methods import METHODS
from emotion_circuits.params import POSITIONS


def _directions(s, layer: int) -> tuple[dict, dict]:
    """(the stage's direction method at each vector position, the other methods at `vector_position`)."""
    site = Site(layer)
    by_position = {pos: load_directions(paths.VECTORS, s.model, pos, [site], s.direction, s.unit)[site]
                   for pos in POSITIONS}
    alternatives = {m: load_directions(paths.VECTORS, s.model, s.vector_position, [site], m, s.unit)[site]
                    for m in METHODS.names() if m != s.direction}  # each other registered method: a variant
    return by_position, alternatives


def run(params, args) -> None:
    s, single, alpha = params.steering_common, params.steering, float(params.alpha)
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    info = stage_model(s.model, "steering_common.model", params.models, s.max_new_tokens)
    Site(single.layer).within(info.n_layers, "steering.layer")
    prompts = single_alpha.single_prompts(read_parquet(paths.DATASET / "steering_prompts.parquet"),
                                          read_parquet(paths.DATASET / "real_world.parquet"), single.n_prompts)
    conds, meta = single_alpha.build_single_grid(prompts, *_directions(s, single.layer), s, single, alpha,
                                                 params.seed)
    lm = sweep.load_steered_model(s, params.seed)
    evaluators = sweep.stage_evaluators(s, paths.DATASET, params.seed)
    with staged_outputs(*paths.STAGES["steering"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        table, seconds = sweep.run_experiment(lm, conds, meta, evaluators, s, params.seed, params.execution,
                                              progress=not args.no_progress)
        parts = single_alpha.single_summaries(table, families_in(table), s.nll_threshold, params.seed,
                                              params.statistics)
        write_parquet(out / "generations.parquet", table)
        for name, frame in parts.items():
            write_parquet(out / f"summary_{name}.parquet", frame)
        live.log_metrics(report_steering.single_metrics(parts, s, single, alpha, len(conds)))
        live.log_timing(report_steering.generation_timing(seconds, int(table["n_new_tokens"].sum())))


if __name__ == "__main__":
    cli.main("steering", __doc__, run)
