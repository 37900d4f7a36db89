"""Steering experiments: build condition grids with their controls, run them, and turn scores into effects.

Every emotion condition has an unsteered baseline on the same prompt (alpha = 0) and, where random controls run,
random directions with exactly the steered vector's L2 norm at the same layer and setting: the effect of an
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
from emotion_circuits.steering.settings import Setting


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

    def append(self, condition: Condition, **meta) -> None:
        """A condition built elsewhere (a `steering.settings.Setting`), with its metadata row."""
        self.conditions.append(condition)
        self.rows.append(meta)

    def table(self) -> tuple[list[Condition], pd.DataFrame]:
        return self.conditions, pd.DataFrame(self.rows)


def build_grid(prompts: pd.DataFrame, settings: Sequence[Setting],
               directions: Mapping[str, Mapping[Site, EmotionDirections]], common: SteeringCommonParams,
               grid_params: SteeringSweepParams, seed: int) -> tuple[list[Condition], pd.DataFrame]:
    """Conditions and their metadata rows: one baseline per prompt, then per setting emotion x layer x alpha on
    every prompt, and for `random_settings` the equal-norm random band at every layer and alpha (on the first
    `random_prompts` prompts). `directions[setting.name][Site(layer)]` are the directions a setting steers with.

    A band's random directions are shared by the emotions (each emotion's own metric is read off the same rows):
    their norm is the mean of the emotions' vector norms at that layer, so the band costs one emotion's worth."""
    g = grid_params
    grid = ConditionSet(common)
    for prompt in prompts.itertuples():
        grid.append(Condition(prompt.text), prompt_id=prompt.id, kind="baseline", emotion="none", setting="none",
                    layer=-1, alpha=0.0, random_id=-1)
    random_rows = prompts.head(g.random_prompts or len(prompts))
    for s_index, setting in enumerate(settings):
        for layer in setting.layers:
            dirs = directions[setting.name][Site(layer)]
            for emotion in common.emotions:
                v = dirs[emotion].vector
                for prompt in prompts.itertuples():
                    for alpha in setting.alphas:
                        grid.append(setting.condition(prompt.text, layer, alpha, v), prompt_id=prompt.id,
                                    kind="emotion", emotion=emotion, setting=setting.name, layer=layer,
                                    alpha=float(alpha), random_id=-1)
            if setting.name not in g.random_settings or not g.n_random:
                continue
            norm = float(np.mean([np.linalg.norm(dirs[e].vector) for e in common.emotions]))
            d_model = len(dirs[common.emotions[0]].vector)
            reference = np.full(d_model, norm / np.sqrt(d_model))  # only its norm matters
            for j, r in enumerate(random_directions(reference, g.n_random, seed + 1000 * layer + 17 * s_index)):
                for prompt in random_rows.itertuples():
                    for alpha in setting.alphas:
                        grid.append(setting.condition(prompt.text, layer, alpha, r), prompt_id=prompt.id,
                                    kind="random", emotion="any", setting=setting.name, layer=layer,
                                    alpha=float(alpha), random_id=j)
    return grid.table()


def setting_directions(vectors_dir: Path, model: str, settings: Sequence[Setting]
                       ) -> dict[str, dict[Site, EmotionDirections]]:
    """{setting name: {Site(layer): directions}}: each setting's vectors (position, method, unit) at its layers."""
    from emotion_circuits.directions.store import load_directions

    out = {}
    for setting in settings:
        position, method, unit = setting.vectors
        out[setting.name] = load_directions(vectors_dir, model, position, [Site(L) for L in setting.layers],
                                            method, unit)
    return out


def pick_directions(vectors_dir: Path, model: str, picks: Mapping[str, Mapping[str, dict]],
                    settings: Mapping[str, Setting]) -> dict[tuple[str, int], EmotionDirections]:
    """{(setting name, layer): directions} of every picked cell (the confirmation stage's vectors)."""
    from emotion_circuits.directions.store import load_directions

    out = {}
    for entry in picks.values():
        for cell in entry.values():
            key = (cell["setting"], int(cell["layer"]))
            if key not in out:
                position, method, unit = settings[key[0]].vectors
                out[key] = load_directions(vectors_dir, model, position, [Site(key[1])], method, unit)[Site(key[1])]
    return out


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
    scores = score_all(evaluators, texts, tokens)
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
                      ci: StatisticsParams | None = None,
                      random_keys: Sequence[str] = ("emotion", "layer", "alpha")) -> pd.DataFrame:
    """One row per (emotion, layer, alpha, *extra_keys) of `kind` rows: mean effect per metric family with the
    pipeline's bootstrap CI over prompts (`stats.intervals.interval`, params `statistics`; None = its defaults),
    the random-direction null of the rows that share `random_keys` (where run), fluency (NLL rise, repetition,
    degenerate share rise), and a `broken` flag. The effect is measured on the target emotion's own metric."""
    rows = []
    emo = table[table["kind"] == kind]
    rnd = table[table["kind"] == "random"]
    keys = ["emotion", "layer", "alpha", *extra_keys]
    for values_key, g in emo.groupby(keys, sort=True):
        row = {**dict(zip(keys, values_key)), "n": len(g)}
        row.update(layer=int(row["layer"]), alpha=float(row["alpha"]), nll_delta=float(g["effect_nll"].mean()),
                   repetition=float(g["repetition"].mean()))
        if "effect_degenerate" in g:
            row["degenerate_delta"] = float(g["effect_degenerate"].mean())
        row["broken"] = bool(row["nll_delta"] > nll_threshold)
        r = rnd
        for k in random_keys:
            r = r[r[k] == row[k]]
        for family in families:
            col = f"effect_{own_metric(row['emotion'], family)}"
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
