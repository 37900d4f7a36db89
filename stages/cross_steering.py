"""Stage `cross_steering`: each causal model's emotion vectors carried into each other causal model through the
alignment stage's saved map (same reduction, ridge selection and variant as it scored) and steered there at the
top-level `alpha` with `steering_common`'s window and generation settings; against source-space equal-norm
random directions carried through the same map, next to the target's native vector on the same prompts."""

import dataclasses

import pandas as pd

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import sweep
from emotion_circuits.steering import cross as X
from emotion_circuits.alignment.maps import load_direction_map
from emotion_circuits.directions.geometry import layer_pairs
from emotion_circuits.evaluation.catalog import families_in
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet
from emotion_circuits.model.info import model_info, stage_model
from emotion_circuits.model.loading import is_causal
from emotion_circuits.model.site import Site
from emotion_circuits.stats.samples import SAMPLE_COLUMNS
from emotion_circuits.directions.store import load_directions, n_layers_of


def _vectors(model: str, position: str, layer: int, hook: str):
    """The model's emotion vectors (mean difference, raw) at blocks.{layer}.hook_<hook>."""
    site = Site(layer, hook)
    return load_directions(paths.VECTORS, model, position, [site], "vector", "raw")[site]


def run_target(target: str, sources: list[str], params, prompts, evaluators, progress: bool):
    """Every source -> `target` pair on one load of the target model: (pairs, tables, summaries, geometry)."""
    c, a = params.cross_steering, params.alignment
    s = dataclasses.replace(params.steering_common, model=target)  # the engine knobs, on the target model
    lm = sweep.load_steered_model(s, params.seed)
    out = []
    for source in sources:
        n_source = n_layers_of(paths.VECTORS, source, a.position)
        la, lb = X.choose_layer_pair(layer_pairs(n_source, lm.n_layers, a.n_layer_pairs), lm.n_layers, c.depth)
        pair = X.CrossPair(source, target, la, lb)
        dmap = load_direction_map(paths.ALIGNMENT / "maps", source, target, la, lb)
        native = _vectors(target, a.position, pair.steer_layer, "resid_pre")
        mapped, randoms = X.map_directions(dmap.apply, _vectors(source, a.position, la, a.hook), pair, c.n_random,
                                           params.seed + 17)
        grid = X.build_conditions(prompts, pair, native, mapped, randoms, float(params.alpha), s)
        conds, meta = grid.table()
        table = sweep.run_experiment(lm, conds, meta, evaluators, s, params.seed, params.execution,
                                     progress)[0].assign(pair=pair.key)
        fams = families_in(table)
        summary = pd.concat([
            sweep.summarise_effects(table, fams, s.nll_threshold, params.seed, kind="mapped", ci=params.statistics),
            sweep.summarise_effects(table[table["kind"] != "random"], fams, s.nll_threshold, params.seed,
                                    kind="native", ci=params.statistics)],
            keys=["mapped", "native"], names=["kind", None]).reset_index(level=0).reset_index(drop=True).assign(pair=pair.key)
        info = {"source_layer": Site(la, a.hook).name, "target_layer": Site(lb, a.hook).name,
                "steer_site": pair.steer_site.name, "map": dmap.info(), "geometry": X.geometry(native, mapped),
                "n_conditions": len(conds)}
        out.append((pair, table, summary, info))
    return out


def run(params, args) -> None:
    s, c = params.steering_common, params.cross_steering
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    for m in params.models:  # each known (auto then keeps the causal ones); an explicit list's must generate
        model_info(m)
    for m in () if c.models == "auto" else c.models:
        stage_model(m, "cross_steering.models", params.models, s.max_new_tokens)
    prompts = read_parquet(paths.DATASET / "steering_prompts.parquet").head(c.n_prompts)
    evaluators = sweep.stage_evaluators(s, paths.DATASET, params.seed)
    with staged_outputs(*paths.STAGES["cross_steering"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        tables, summaries, samples, pairs = [], [], [], {}
        models = [m for m in params.models if is_causal(m)] if c.models == "auto" else list(c.models)
        for target in models if len(models) > 1 else []:
            for pair, table, summary, info in run_target(target, [m for m in models if m != target], params,
                                                         prompts, evaluators, not args.no_progress):
                tables.append(table)
                summaries.append(summary)
                samples.append(X.effect_samples(table, pair, params.statistics.metric_families))
                pairs[pair.key] = {**info, **report_steering.cross_entries(summary, s.primary_metric)}
        empty = pd.DataFrame()
        write_parquet(out / "generations.parquet", pd.concat(tables, ignore_index=True) if tables else empty)
        write_parquet(out / "summary.parquet", pd.concat(summaries, ignore_index=True) if summaries else empty)
        write_parquet(out / "effect_samples.parquet", pd.concat(samples, ignore_index=True) if samples else
                      pd.DataFrame(columns=list(SAMPLE_COLUMNS)))
        live.log_metrics({
            "alpha": float(params.alpha), "primary_metric": s.primary_metric, "models": models,
            "n_prompts": int(len(prompts)), "n_random": c.n_random, "window": s.window, "iterative": s.iterative,
            "reading": "mapped: the source's emotion vector through the alignment map, against source-space random "
                       "directions of the same norm through the same map (p_vs_random); native: the target's own "
                       "vector at the same site, against 0 (CI over prompts)",
            "pairs": pairs, **({} if pairs else {"note": "skipped: cross-model steering needs two causal models"})})
        # wall/CPU seconds and peak RSS: live's timing.json (not a DVC out), so reruns keep metrics.json's bytes


if __name__ == "__main__":
    cli.main("cross_steering", __doc__, run)
