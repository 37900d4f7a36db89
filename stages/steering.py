"""Stage `steering`: one alpha (top-level `alpha`, try `dvc exp run -S alpha=2`) at `steering.layer`, over neutral
prompts and the real-world texts: sentence-end vs emotion-token vectors, prompt-only vs iterative patching, swap
patching of emotional texts and random controls (cross-model directions: stage `cross_steering`)."""

import time

import pandas as pd

from emotion_circuits import EMOTIONS, cli
from emotion_circuits.store import paths
from emotion_circuits.steering import tables as report_steering
from emotion_circuits.steering import sweep
from emotion_circuits.data import load_lexicons
from emotion_circuits.errors import UserError
from emotion_circuits.evaluation.evaluators import build_evaluators
from emotion_circuits.store.io import read_parquet, staged_outputs, write_json, write_parquet
from emotion_circuits.runtime.executor import execution_config
from emotion_circuits.model.loading import load_model
from emotion_circuits.params import POSITIONS
from emotion_circuits.steering.engine import random_directions


def run(params, args) -> None:
    s, alpha, layer = params.steering, float(params.alpha), params.steering.layer
    spec = report_steering.spec_from_params(s)
    neutral = read_parquet(paths.DATASET / "steering_prompts.parquet").head(s.single_prompts)
    real = read_parquet(paths.DATASET / "real_world.parquet")
    prompts = pd.concat([neutral.assign(prompt_set="neutral", label="neutral"),
                         real[["id", "text", "label"]].assign(prompt_set="real_world")], ignore_index=True)
    dirs = {pos: sweep.load_directions(paths.VECTORS, s.model, pos, [layer], s.unit, s.direction) for pos in POSITIONS}
    other_kind = "pca1" if s.direction == "vector" else "vector"
    alt = sweep.load_directions(paths.VECTORS, s.model, s.vector_position, [layer], s.unit, other_kind)
    lm = load_model(s.model, device=s.device, dtype=s.dtype, seed=params.seed, use_bridge=False)
    if not 0 <= layer < lm.n_layers:
        raise UserError(f"steering.layer {layer} out of range for {s.model} (0..{lm.n_layers - 1})")
    grid = sweep.ConditionSet(spec)

    def add(p, kind, emotion, direction, variant="prompt_only", iterative=False, source="none", random_id=-1):
        grid.add(p.text, layer, alpha if direction is not None else 0.0, direction, iterative, prompt_id=p.id,
                 prompt_set=p.prompt_set, label=p.label, kind=kind, emotion=emotion, source_emotion=source,
                 variant=variant, random_id=random_id)

    for p in prompts.itertuples():
        add(p, "baseline", "none", None)
        for e in EMOTIONS:
            add(p, "emotion", e, dirs[s.vector_position][(e, layer)], "prompt_only")
            if p.prompt_set == "neutral":  # variants compared on the neutral prompts only (cost)
                add(p, "emotion", e, dirs[s.vector_position][(e, layer)], "iterative", iterative=True)
                other = [pos for pos in POSITIONS if pos != s.vector_position][0]
                add(p, "emotion", e, dirs[other][(e, layer)], f"vector_{other}")
                add(p, "emotion", e, alt[(e, layer)], f"direction_{other_kind}")
        if p.label in EMOTIONS:  # swap patching: replace the text's emotion component by another emotion's
            for e in EMOTIONS:
                if e != p.label:
                    v = dirs[s.vector_position][(e, layer)] - dirs[s.vector_position][(p.label, layer)]
                    add(p, "swap", e, v, "swap", source=p.label)
    for e in EMOTIONS:
        randoms = random_directions(dirs[s.vector_position][(e, layer)], s.single_random, params.seed + 7)
        for p in prompts[prompts["prompt_set"] == "neutral"].itertuples():
            for j, r in enumerate(randoms):
                add(p, "random", e, r, "random", random_id=j)
    conds, meta = grid.table()
    evaluators = build_evaluators(s.evaluators, load_lexicons(paths.DATASET / "lexicons.json"),
                                  read_parquet(paths.DATASET / "sentences.parquet"), params.seed)
    with staged_outputs(*paths.STAGES["steering"].targets()) as (out, metrics_path):
        out.mkdir()
        start = time.perf_counter()
        table = sweep.run_and_score(lm, conds, meta, evaluators, sweep.generation_task(s, params.seed),
                                    execution_config(params), progress=not args.no_progress)
        seconds = time.perf_counter() - start
        table = sweep.add_effects(table, report_steering.metric_columns(table))
        fams = report_steering.families(table)
        neutral_rows = table[table["prompt_set"] == "neutral"]
        parts = {"neutral": sweep.summarise_effects(neutral_rows, fams, s.nll_threshold, params.seed,
                                                    extra_keys=("variant",)),
                 "real_world": sweep.summarise_effects(table[table["prompt_set"] == "real_world"], fams,
                                                       s.nll_threshold, params.seed, extra_keys=("variant",)),
                 # swap directions (v_target - v_source) have their own norm: no equal-norm random null here
                 "swap": sweep.summarise_effects(table[table["kind"] != "random"], fams, s.nll_threshold,
                                                 params.seed, kind="swap", extra_keys=("source_emotion",))}
        write_parquet(out / "generations.parquet", table)
        for name, frame in parts.items():
            write_parquet(out / f"summary_{name}.parquet", frame)
        write_json(metrics_path, report_steering.single_metrics(parts, s, alpha, len(conds), seconds))


if __name__ == "__main__":
    cli.main("steering", __doc__, run)
