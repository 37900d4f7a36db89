"""Stage `cross_steering`: each causal model's emotion vectors carried into each other causal model through the
alignment stage's saved map (same reduction, ridge selection and variant as it scored) and steered there at the
top-level `alpha` with the `steering` section's window and generation settings; against source-space equal-norm
random directions carried through the same map, next to the target's native vector on the same prompts."""

import time

import pandas as pd

from emotion_circuits import EMOTIONS, cli
from emotion_circuits.store import paths
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import sweep
from emotion_circuits.steering import cross as X
from emotion_circuits.alignment.core import layer_pairs, load_direction_map
from emotion_circuits.data import load_lexicons
from emotion_circuits.evaluation.evaluators import build_evaluators
from emotion_circuits.runtime.executor import execution_config
from emotion_circuits.store.io import read_parquet, staged_outputs, write_json, write_parquet
from emotion_circuits.model.loading import is_causal, load_model
from emotion_circuits.runtime.resources import peak_rss_mb
from emotion_circuits.stats.effects import SAMPLE_COLUMNS


def _vectors(model: str, position: str, layer: int, hook: str) -> dict:
    got = sweep.load_directions(paths.VECTORS, model, position, [layer], "raw", hook=hook)
    return {e: got[(e, layer)] for e in EMOTIONS}


def run_target(target: str, sources: list[str], params, prompts, evaluators, progress: bool):
    """Every source -> `target` pair on one load of the target model: (pairs, tables, summaries, geometry)."""
    s, c, a = params.steering, params.cross_steering, params.alignment
    lm = load_model(target, device=s.device, dtype=s.dtype, seed=params.seed, use_bridge=False)
    out = []
    for source in sources:
        n_source = sweep.n_layers_of(paths.VECTORS, source, a.position)
        la, lb = X.choose_layer_pair(layer_pairs(n_source, lm.n_layers, a.n_layer_pairs), lm.n_layers, c.depth)
        pair = X.CrossPair(source, target, la, lb)
        dmap = load_direction_map(paths.ALIGNMENT / "maps", source, target, la, lb)
        native = _vectors(target, a.position, pair.steer_layer, "resid_pre")
        mapped, randoms = X.map_directions(dmap.apply, _vectors(source, a.position, la, a.hook), c.n_random,
                                           params.seed + 17)
        grid = X.build_conditions(prompts, pair, native, mapped, randoms, float(params.alpha),
                                  report_steering.spec_from_params(s))
        conds, meta = grid.table()
        task = sweep.GenerationTask(target, s.max_new_tokens, s.batch_size, s.prepend_bos,
                                    sweep.generation_task(s, params.seed).loading)
        table = sweep.run_and_score(lm, conds, meta, evaluators, task, execution_config(params), progress=progress)
        table = sweep.add_effects(table, report_steering.metric_columns(table)).assign(pair=pair.key)
        fams = report_steering.families(table)
        summary = pd.concat([
            sweep.summarise_effects(table, fams, s.nll_threshold, params.seed, kind="mapped"),
            sweep.summarise_effects(table[table["kind"] != "random"], fams, s.nll_threshold, params.seed,
                                    kind="native")], keys=["mapped", "native"], names=["kind", None]
        ).reset_index(level=0).reset_index(drop=True).assign(pair=pair.key)
        info = {"source_layer": f"blocks.{la}.hook_{a.hook}", "target_layer": f"blocks.{lb}.hook_{a.hook}", "steer_site": f"blocks.{pair.steer_layer}.hook_resid_pre",
                "map": dmap.info(), "geometry": X.geometry(native, mapped), "n_conditions": len(conds)}
        out.append((pair, table, summary, info))
    return out


def run(params, args) -> None:
    s, c = params.steering, params.cross_steering
    prompts = read_parquet(paths.DATASET / "steering_prompts.parquet").head(c.n_prompts)
    evaluators = build_evaluators(s.evaluators, load_lexicons(paths.DATASET / "lexicons.json"),
                                  read_parquet(paths.DATASET / "sentences.parquet"), params.seed)
    with staged_outputs(*paths.STAGES["cross_steering"].targets()) as (out, metrics_path):
        out.mkdir()
        start = time.perf_counter()
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
        write_json(metrics_path, {
            "alpha": float(params.alpha), "primary_metric": s.primary_metric, "models": models,
            "n_prompts": int(len(prompts)), "n_random": c.n_random, "window": s.window, "iterative": s.iterative,
            "reading": "mapped: the source's emotion vector through the alignment map, against source-space random "
                       "directions of the same norm through the same map (p_vs_random); native: the target's own "
                       "vector at the same site, against 0 (CI over prompts)",
            "pairs": pairs, **({} if pairs else {"note": "skipped: cross-model steering needs two causal models"}),
            "timing": {"seconds": round(time.perf_counter() - start, 1),
                                       "peak_rss_mb": peak_rss_mb()}})


if __name__ == "__main__":
    cli.main("cross_steering", __doc__, run)
