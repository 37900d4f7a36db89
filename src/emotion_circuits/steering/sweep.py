"""Steering experiments: build condition grids with their controls, run them, and turn scores into effects.

Every emotion condition has an unsteered baseline on the same prompt (alpha = 0) and, at `random_alphas`,
`n_random` random directions with exactly the emotion vector's L2 norm at the same layer: the effect of an
emotion direction is only a result next to the distribution of those random effects.
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS
from emotion_circuits.data import load_lexicons
from emotion_circuits.evaluation.catalog import build_evaluators, metric_columns
from emotion_circuits.evaluation.text import continuation_nll, score_all
from emotion_circuits.runtime.executor import map_chunks
from emotion_circuits.model.loading import LoadedModel, load_model
from emotion_circuits.params import ExecutionParams, StatisticsParams, SteeringCommonParams, SteeringSweepParams
from emotion_circuits.stats.effects import own_metric
from emotion_circuits.stats.intervals import interval
from emotion_circuits.stats.nulls import vs_null
from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.model.site import Site
from emotion_circuits.store.io import read_parquet
from emotion_circuits.steering.engine import Condition, Window, decode, generate, random_directions, tokenize_prompt


@dataclass
class ConditionSet:
    """Conditions and their metadata rows, appended together so row i always describes condition i; how each
    direction is applied (window, schedule, iterative) comes from the stages' shared `steering_common` knobs."""

    common: SteeringCommonParams
    conditions: list[Condition] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.common
        self.window = Window(c.window, c.window_n, tuple(c.positions))

    def add(self, text: str, layer: int, alpha: float, direction, iterative: bool | None = None, **meta) -> None:
        """One condition; `meta` (prompt id, kind, emotion, ...) goes to its row, followed by layer and alpha."""
        c = self.common
        self.conditions.append(Condition(text, layer, float(alpha), direction, self.window, c.schedule, c.decay,
                                         c.iterative if iterative is None else iterative))
        self.rows.append({**meta, "layer": layer, "alpha": float(alpha)})

    def table(self) -> tuple[list[Condition], pd.DataFrame]:
        return self.conditions, pd.DataFrame(self.rows)


def build_grid(prompts: pd.DataFrame, directions: Mapping[Site, EmotionDirections], common: SteeringCommonParams,
               grid_params: SteeringSweepParams, seed: int) -> tuple[list[Condition], pd.DataFrame]:
    """Conditions and their metadata rows: one baseline per prompt, emotion x layer x alpha, random controls.
    `directions[Site(layer)]` are the emotion directions at each grid layer's `resid_pre`."""
    g = grid_params
    emotions, layers, alphas, n_random, random_alphas, random_prompts = (
        common.emotions, g.layers, g.alphas, g.n_random, g.random_alphas, g.random_prompts)
    grid = ConditionSet(common)

    def add(prompt, kind, emotion, layer, alpha, direction, random_id=-1):
        grid.add(prompt.text, layer, alpha, direction, prompt_id=prompt.id, kind=kind, emotion=emotion,
                 random_id=random_id)

    for prompt in prompts.itertuples():
        add(prompt, "baseline", "none", -1, 0.0, None)
    for emotion in emotions:
        for layer in layers:
            v = directions[Site(layer)][emotion].vector
            randoms = random_directions(v, n_random, seed + 1000 * layer + EMOTIONS.index(emotion))
            for prompt in prompts.itertuples():
                for alpha in alphas:
                    if alpha != 0:
                        add(prompt, "emotion", emotion, layer, alpha, v)
            for prompt in prompts.head(random_prompts or len(prompts)).itertuples():
                for alpha in random_alphas:
                    for j, r in enumerate(randoms):
                        add(prompt, "random", emotion, layer, alpha, r, j)
    return grid.table()


def load_steered_model(common: SteeringCommonParams, seed: int) -> LoadedModel:
    """`common.model` as plain HF + module hooks (same hook points as the bridge, faster decoding); `seed` only
    matters for random-weight models."""
    return load_model(common.model, device=common.device, dtype=common.dtype, seed=seed, use_bridge=False)


class GenerationWorker:
    """Greedy continuations plus their unsteered NLL (fluency) for one chunk of conditions. Ray actors build it
    from the frozen params dataclass itself (`GenerationWorker.load(common, seed)`): no twin config type."""

    def __init__(self, lm: LoadedModel, common: SteeringCommonParams, progress: bool = False):
        self.lm, self.common, self.progress = lm, common, progress

    @classmethod
    def load(cls, common: SteeringCommonParams, seed: int) -> GenerationWorker:
        return cls(load_steered_model(common, seed), common)

    def __call__(self, conds: Sequence[Condition]) -> tuple[list[list[int]], np.ndarray]:
        c = self.common
        tokens = generate(self.lm, conds, c.max_new_tokens, c.batch_size, c.prepend_bos, progress=self.progress)
        prompts = [tokenize_prompt(self.lm, cond.prompt, c.prepend_bos) for cond in conds]
        return tokens, continuation_nll(self.lm, prompts, tokens)


def run_and_score(lm: LoadedModel, conds: Sequence[Condition], meta: pd.DataFrame, evaluators,
                  common: SteeringCommonParams, seed: int, execution: ExecutionParams = ExecutionParams(),
                  progress: bool = False) -> pd.DataFrame:
    """Generate every condition (in chunks, locally or on Ray actors), decode, score, add fluency (NLL).

    `lm` is the already-loaded `common.model`: the local executor reuses it, Ray actors load their own copy.
    """
    parts = map_chunks(partial(GenerationWorker.load, common, seed), conds, execution,
                       what=f"steering {common.model}", local_factory=lambda: GenerationWorker(lm, common, progress))
    tokens = [t for part, _ in parts for t in part]
    nll = np.concatenate([n for _, n in parts]) if parts else np.zeros(0)
    texts = decode(lm, tokens)
    table = meta.reset_index(drop=True).copy()
    table["text"] = texts
    table["n_new_tokens"] = [len(t) for t in tokens]
    scores = score_all(evaluators, texts)
    scores["nll"] = nll
    return pd.concat([table, scores], axis=1)


def stage_evaluators(common: SteeringCommonParams, dataset_dir: Path, seed: int):
    """The evaluators `common.evaluators` names, built on the dataset stage's lexicons and judge training rows."""
    return build_evaluators(common.evaluators, load_lexicons(Path(dataset_dir) / "lexicons.json"),
                            read_parquet(Path(dataset_dir) / "judge_train.parquet"), seed)


def run_experiment(lm: LoadedModel, conds: Sequence[Condition], meta: pd.DataFrame, evaluators,
                   common: SteeringCommonParams, seed: int, execution: ExecutionParams,
                   progress: bool = False) -> tuple[pd.DataFrame, float]:
    """The one generation path of every steering stage: generate and score every condition, then each score's
    effect against the same prompt's unsteered baseline. Returns (table, generation seconds)."""
    start = time.perf_counter()
    table = run_and_score(lm, conds, meta, evaluators, common, seed, execution, progress)
    seconds = time.perf_counter() - start
    return add_effects(table, metric_columns(table)), seconds


def add_effects(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """effect_<metric> = score - the same prompt's unsteered baseline score."""
    base = table[table["kind"] == "baseline"].set_index("prompt_id")
    out = table.copy()
    for m in metrics:
        out[f"effect_{m}"] = out[m].to_numpy() - base.loc[out["prompt_id"], m].to_numpy()
    return out


def summarise_effects(table: pd.DataFrame, families: Sequence[str], nll_threshold: float, seed: int,
                      kind: str = "emotion", extra_keys: Sequence[str] = (),
                      ci: StatisticsParams | None = None) -> pd.DataFrame:
    """One row per (emotion, layer, alpha, *extra_keys) of `kind` rows: mean effect per metric family with the
    pipeline's bootstrap CI over prompts (`stats.intervals.interval`, params `statistics`; None = its defaults),
    the random-direction null at the same emotion norm, layer and alpha (where run),
    fluency, and a `broken` flag. The effect is measured on the target emotion's own metric."""
    rows = []
    emo = table[table["kind"] == kind]
    rnd = table[table["kind"] == "random"]
    keys = ["emotion", "layer", "alpha", *extra_keys]
    for values_key, g in emo.groupby(keys, sort=True):
        emotion, layer, alpha = values_key[:3]
        row = {**dict(zip(keys, values_key)), "layer": int(layer), "alpha": float(alpha), "n": len(g),
               "nll_delta": float(g["effect_nll"].mean()), "repetition": float(g["repetition"].mean())}
        row["broken"] = bool(row["nll_delta"] > nll_threshold)
        r = rnd[(rnd["emotion"] == emotion) & (rnd["layer"] == layer) & (rnd["alpha"] == alpha)]
        for family in families:
            col = f"effect_{own_metric(emotion, family)}"
            if col not in g:
                continue
            values = g[col].to_numpy(dtype=float)
            row[f"{family}_effect"] = float(values.mean())
            row[f"{family}_ci_low"], row[f"{family}_ci_high"] = interval(values, None, ci or StatisticsParams(), seed)
            if len(r):
                prompts = set(r["prompt_id"])
                paired = float(g[g["prompt_id"].isin(prompts)][col].mean())
                v = vs_null(paired, r.groupby("random_id")[col].mean().to_numpy(), "two-sided")
                row.update({f"{family}_effect_on_random_prompts": paired, f"{family}_random_mean": v["null_mean"],
                            f"{family}_random_q95": v["q95"], f"{family}_random_q05": v["q05"],
                            f"{family}_z": v["z"], f"{family}_p": v["p"]})
        rows.append(row)
    return pd.DataFrame(rows)


def best_rows(summary: pd.DataFrame, primary: str, random_alphas: Sequence[float]) -> dict[str, dict]:
    """Per emotion: `with_controls` = the best non-broken layer at an alpha that has random controls, and
    `strongest` = the largest non-broken positive-alpha effect anywhere in the grid (no null at most alphas)."""
    out = {}
    for emotion, g in summary.groupby("emotion", sort=True):
        entry = {}
        pools = (("with_controls", g[g["alpha"].isin(list(random_alphas))]), ("strongest", g[g["alpha"] > 0]))
        for name, pool in pools:
            ok = pool[~pool["broken"]]
            pick = (ok if len(ok) else pool).sort_values([f"{primary}_effect", "layer", "alpha"],
                                                        ascending=[False, True, True])
            if len(pick):
                entry[name] = pick.iloc[0]
        out[emotion] = entry
    return out
