"""Cross-model steering: model A's emotion vector carried into model B through the alignment stage's own fitted
map, steered in B, against A-space random directions carried through the same map and rescaled to the mapped
vector's norm.

Why the null is mapped too: a ridge map mixes axes, so the question "does A's emotion direction still steer B
after the map?" is only answered next to what the map does to arbitrary A directions, at the same size where
they are added. B's native vector at the same layer is steered on the same prompts, so the report shows mapped and native
side by side.

Layers: the maps are fitted on `blocks.{la}.hook_resid_post` (A) -> `blocks.{lb}.hook_resid_post` (B); steering
adds at `blocks.{lb + 1}.hook_resid_pre`, which is the same tensor as `blocks.{lb}.hook_resid_post`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emotion_circuits import EMOTIONS
from emotion_circuits.errors import DataError
from emotion_circuits.model.site import Site
from emotion_circuits.directions.emotion_directions import EmotionDirections
from emotion_circuits.steering.engine import random_directions
from emotion_circuits.params import SteeringCommonParams
from emotion_circuits.steering.sweep import ConditionSet


@dataclass(frozen=True)
class CrossPair:
    """One direction of cross-model steering: source vectors at `source_layer` (resid_post) mapped into the
    target's `target_layer` (resid_post) and added at the target's `blocks.{target_layer + 1}.hook_resid_pre`."""

    source: str
    target: str
    source_layer: int
    target_layer: int

    @property
    def steer_layer(self) -> int:
        return self.target_layer + 1

    @property
    def steer_site(self) -> Site:
        return Site(self.steer_layer, "resid_pre")

    @property
    def key(self) -> str:
        return f"{self.source}->{self.target}"


def choose_layer_pair(pairs: Sequence[tuple[int, int]], n_target_layers: int, depth: float) -> tuple[int, int]:
    """The alignment layer pair whose target layer is nearest `depth` (0..1) of the target's depth, among the
    pairs that leave a next layer to steer at (ties: the shallower pair)."""
    usable = [(a, b) for a, b in pairs if b + 1 < n_target_layers]
    if not usable:
        raise DataError(f"no alignment layer pair below the target's last layer (pairs: {list(pairs)})")
    return min(usable, key=lambda ab: (abs(ab[1] / max(n_target_layers - 1, 1) - depth), ab[1]))


def build_conditions(prompts: pd.DataFrame, pair: CrossPair, native: EmotionDirections,
                     mapped: EmotionDirections, mapped_random: dict[str, np.ndarray], alpha: float,
                     common: SteeringCommonParams) -> ConditionSet:
    """Baseline, native, mapped and mapped-random conditions of one target model, on the same prompts.

    `mapped_random[e]` is [n_random, d_target]: random source-space directions with the source emotion vector's
    norm, carried through the same map (row j is random direction j of every prompt: paired design)."""
    grid = ConditionSet(common)
    layer = pair.steer_layer
    for p in prompts.itertuples():
        grid.add(p.text, layer, 0.0, None, prompt_id=p.id, kind="baseline", emotion="none", random_id=-1)
        for e in EMOTIONS:
            grid.add(p.text, layer, alpha, native[e].vector, prompt_id=p.id, kind="native", emotion=e, random_id=-1)
            grid.add(p.text, layer, alpha, mapped[e].vector, prompt_id=p.id, kind="mapped", emotion=e, random_id=-1)
            for j, r in enumerate(mapped_random[e]):
                grid.add(p.text, layer, alpha, r, prompt_id=p.id, kind="random", emotion=e, random_id=j)
    return grid


def map_directions(apply, source: EmotionDirections, pair: CrossPair, n_random: int, seed: int
                   ) -> tuple[EmotionDirections, dict[str, np.ndarray]]:
    """(the source's emotion directions carried into the target at `pair.steer_site`, and per emotion mapped
    random directions [n_random, d_target]).

    The random directions are drawn in the source space and carried through the same map (so they are
    directions the map can produce), then rescaled to exactly the mapped emotion vector's norm: the map keeps
    only the source's top PCA axes, so a random source direction loses most of its length on the way and,
    unrescaled, would be a null of near-zero steering that anything beats."""
    mapped, randoms = [], {}
    for i, e in enumerate(source.emotions):
        v = source[e].vector
        mapped.append(np.asarray(apply(v), dtype=np.float32).reshape(-1))
        rnd = np.asarray(apply(random_directions(v, n_random, seed + 31 * i)), dtype=np.float64).reshape(n_random, -1)
        rnd *= np.linalg.norm(mapped[-1].astype(np.float64)) / np.linalg.norm(rnd, axis=1, keepdims=True)
        randoms[e] = rnd.astype(np.float32)
    carried = source.mapped(pair.target, pair.steer_site, np.stack(mapped), f"mapped:{source.model}/{source.method}")
    return carried, randoms


def geometry(native: EmotionDirections, mapped: EmotionDirections) -> dict[str, dict[str, float]]:
    """Per emotion: cosine of the mapped source vector with the target's native vector, and their norm ratio."""
    out = {}
    for e in EMOTIONS:
        a, b = mapped[e].vector.astype(np.float64), native[e].vector.astype(np.float64)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        out[e] = {"cosine_mapped_native": float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0,
                  "norm_mapped_over_native": float(na / nb) if nb > 0 else float("nan")}
    return out


def effect_samples(table: pd.DataFrame, pair: CrossPair, metric_families: Sequence[str]) -> pd.DataFrame:
    """effect_samples rows of one pair: the mapped vector against the mapped random directions (null rows: every
    (prompt, random direction) run, unit = prompt), and the native vector against 0 (its own null lives in the
    steering stages)."""
    from emotion_circuits.stats.effects import own_metric, with_labels
    from emotion_circuits.stats.samples import SAMPLE_COLUMNS, sample_rows

    unit = {p: i for i, p in enumerate(sorted(table["prompt_id"].unique()))}
    site = pair.steer_site
    parts = []
    for e in EMOTIONS:
        for fam in metric_families:
            metric = own_metric(e, fam)
            col = f"effect_{metric}"
            if col not in table:
                continue
            for kind in ("mapped", "native"):
                g = table[(table["kind"] == kind) & (table["emotion"] == e)]
                effect = f"{pair.key}/{e}/{site}/{kind}/{metric}"
                parts.append(sample_rows("cross_steering", effect, e, metric, "effect", g["prompt_id"].map(unit),
                                         g[col]))
                if kind == "mapped":
                    r = table[(table["kind"] == "random") & (table["emotion"] == e)]
                    parts.append(sample_rows("cross_steering", effect, e, metric, "null", r["prompt_id"].map(unit),
                                             r[col]))
    return pd.concat(with_labels(parts, site), ignore_index=True) if parts else pd.DataFrame(
        columns=list(SAMPLE_COLUMNS))
