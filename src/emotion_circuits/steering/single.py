"""The single-alpha experiment (stage `steering`): one alpha at one layer over neutral prompts and real-world texts,
its variants (iterative, the other vector position, the other direction methods), swap patching of emotional
texts, and equal-norm random directions as the null.

Each condition row says whether the random null is its matched control (`null_matched`): the random directions
have the steering vector's norm and are applied prompt-only, so they match the prompt-only vector and every other
direction method (rescaled to the vector's norm), not the iterative variant, the other position's vector (its own
norm) or swap directions. The statistics read the flag, so a new direction method cannot silently lose its null.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from emotion_circuits import EMOTIONS
from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.params import POSITIONS, StatisticsParams, SteeringCommonParams, SteeringParams
from emotion_circuits.steering.engine import Condition, random_directions
from emotion_circuits.steering.sweep import ConditionSet, summarise_effects



def single_prompts(neutral: pd.DataFrame, real_world: pd.DataFrame, n_prompts: int) -> pd.DataFrame:
    """The first `n_prompts` neutral openings, then every real-world text (with its emotion label)."""
    return pd.concat([neutral.head(n_prompts).assign(prompt_set="neutral", label="neutral"),
                      real_world[["id", "text", "label"]].assign(prompt_set="real_world")], ignore_index=True)


def add_prompt(add, p, common: SteeringCommonParams, by_position: Mapping[str, EmotionDirections],
               alternatives: Mapping[str, EmotionDirections]) -> None:
    """One prompt's baseline, emotion conditions (variants on neutral prompts only: cost) and swap patching."""
    own = by_position[common.vector_position]
    other = [pos for pos in POSITIONS if pos != common.vector_position][0]
    add(p, "baseline", "none", None, null_matched=False)
    for e in EMOTIONS:
        add(p, "emotion", e, own[e].vector, "prompt_only", null_matched=True)
        if p.prompt_set == "neutral":
            add(p, "emotion", e, own[e].vector, "iterative", iterative=True, null_matched=False)
            add(p, "emotion", e, by_position[other][e].vector, f"vector_{other}", null_matched=False)
            for method, dirs in alternatives.items():  # same norm as the vector: the random null matches
                add(p, "emotion", e, dirs[e].vector, f"direction_{method}", null_matched=True)
    if p.label in EMOTIONS:  # swap patching: replace the text's emotion component by another emotion's
        for e in EMOTIONS:
            if e != p.label:
                add(p, "swap", e, (own[e] - own[p.label]).vector, "swap", source=p.label,
                    null_matched=False)


def build_single_grid(prompts: pd.DataFrame, by_position: Mapping[str, EmotionDirections],
                      alternatives: Mapping[str, EmotionDirections], common: SteeringCommonParams, single: SteeringParams, alpha: float, seed: int
                      ) -> tuple[list[Condition], pd.DataFrame]:
    """Conditions and rows of the single-alpha stage at `single.layer` and `alpha`.

    `by_position[pos]`: the stage's direction method at each vector position; `alternatives[method]`: the other
    direction methods at `common.vector_position` (each becomes variant `direction_<method>`)."""
    grid = ConditionSet(common)
    layer = single.layer

    def add(p, kind, emotion, direction, variant="prompt_only", iterative=False, source="none", random_id=-1,
            null_matched=False):
        grid.add(p.text, layer, alpha if direction is not None else 0.0, direction, iterative, prompt_id=p.id,
                 prompt_set=p.prompt_set, label=p.label, kind=kind, emotion=emotion, source_emotion=source,
                 variant=variant, random_id=random_id, null_matched=null_matched)

    for p in prompts.itertuples():
        add_prompt(add, p, common, by_position, alternatives)
    for e in EMOTIONS:
        randoms = random_directions(by_position[common.vector_position][e].vector, single.n_random, seed + 7)
        for p in prompts[prompts["prompt_set"] == "neutral"].itertuples():
            for j, r in enumerate(randoms):
                add(p, "random", e, r, "random", random_id=j)
    return grid.table()


def single_summaries(table: pd.DataFrame, families: list[str], nll_threshold: float, seed: int,
                     ci: StatisticsParams | None = None) -> dict[str, pd.DataFrame]:
    """summary_<name>.parquet tables: neutral and real-world prompts per variant, and swap patching (swap
    directions v_target - v_source have their own norm: no equal-norm random null there); CIs as `statistics`."""
    neutral = table[table["prompt_set"] == "neutral"]
    real = table[table["prompt_set"] == "real_world"]
    return {"neutral": summarise_effects(neutral, families, nll_threshold, seed, extra_keys=("variant",), ci=ci),
            "real_world": summarise_effects(real, families, nll_threshold, seed, extra_keys=("variant",), ci=ci),
            "swap": summarise_effects(table[table["kind"] != "random"], families, nll_threshold, seed, kind="swap",
                                      extra_keys=("source_emotion",), ci=ci)}
