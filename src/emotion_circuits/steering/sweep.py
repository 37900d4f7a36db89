"""Steering experiments: build condition grids with their controls, run them, and turn scores into effects.

Every emotion condition has an unsteered baseline on the same prompt (alpha = 0) and, at `random_alphas`,
`n_random` random directions with exactly the emotion vector's L2 norm at the same layer: the effect of an
emotion direction is only a result next to the distribution of those random effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from emotion_circuits import EMOTIONS
from emotion_circuits.errors import DataError
from emotion_circuits.evaluation.evaluators import continuation_nll, score_all
from emotion_circuits.runtime.executor import ExecutionConfig, map_chunks
from emotion_circuits.store.io import read_parquet, read_tensors
from emotion_circuits.model.loading import LoadSpec
from emotion_circuits.stats.effects import own_metric, vs_null
from emotion_circuits.steering.engine import Condition, Window, decode, generate, random_directions, tokenize_prompt


@dataclass(frozen=True)
class SteerSpec:
    """How directions are applied: window, schedule, iterative re-application, and the unit of alpha."""

    window: Window = Window()
    schedule: str = "constant"
    decay: float = 0.7
    iterative: bool = False
    unit: str = "raw"  # raw: the emotion vector itself; norm: unit direction x typical residual norm


def n_layers_of(vectors_dir: Path, model: str, position: str) -> int:
    """How many layers the vectors stage saw for `model` (from its tensor keys)."""
    from emotion_circuits.model.extraction import model_dirname

    path = Path(vectors_dir) / model_dirname(model) / f"{position}.safetensors"
    if not path.exists():
        raise DataError(f"{path} is missing: run the vectors stage with {model!r} in `models`")
    return len({k.split(".")[1] for k in read_tensors(path) if k.startswith("blocks.")})


def load_directions(vectors_dir: Path, model: str, position: str, layers: Sequence[int],
                    unit: str, kind: str = "vector", hook: str = "resid_pre") -> dict[tuple[str, int], np.ndarray]:
    """{(emotion, layer): direction at blocks.{layer}.hook_<hook>} from the vectors stage.

    kind `vector`: the emotion vector (mean emotion - mean neutral); `pca1`: the emotion's first principal axis
    (sign-aligned with the vector) rescaled to the vector's L2 norm, so alpha means the same displacement size.
    """
    from emotion_circuits.model.extraction import model_dirname

    tensors = read_tensors(Path(vectors_dir) / model_dirname(model) / f"{position}.safetensors")
    norms = read_parquet(Path(vectors_dir) / "norms.parquet")
    out = {}
    for layer in layers:
        key = f"blocks.{layer}.hook_{hook}.emotion_vectors"
        if key not in tensors:
            raise DataError(f"no emotion vectors {key} for {model} ({position}) in the vectors stage's outs")
        vecs = tensors[key].numpy()
        for i, emotion in enumerate(EMOTIONS):
            v = vecs[i].astype(np.float32)
            if kind == "pca1":
                axis = tensors[f"blocks.{layer}.hook_{hook}.pca.{emotion}.components"].numpy()[0]
                v = (axis / np.linalg.norm(axis) * np.linalg.norm(v)).astype(np.float32)
            elif kind != "vector":
                raise ValueError(f"unknown direction kind {kind!r} (allowed: vector, pca1)")
            if unit == "norm":
                row = norms[(norms["model"] == model) & (norms["position"] == position) &
                            (norms["hook"] == "resid_pre") & (norms["layer"] == layer)]
                v = v / np.linalg.norm(v) * float(row["mean_residual_l2"].iloc[0])
            out[(emotion, layer)] = v
    return out


@dataclass
class ConditionSet:
    """Conditions and their metadata rows, appended together so row i always describes condition i."""

    spec: SteerSpec
    conditions: list[Condition] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def add(self, text: str, layer: int, alpha: float, direction, iterative: bool | None = None, **meta) -> None:
        """One condition; `meta` (prompt id, kind, emotion, ...) goes to its row, followed by layer and alpha."""
        s = self.spec
        self.conditions.append(Condition(text, layer, float(alpha), direction, s.window, s.schedule, s.decay,
                                         s.iterative if iterative is None else iterative))
        self.rows.append({**meta, "layer": layer, "alpha": float(alpha)})

    def table(self) -> tuple[list[Condition], pd.DataFrame]:
        return self.conditions, pd.DataFrame(self.rows)


def build_grid(prompts: pd.DataFrame, directions: dict, emotions: Sequence[str], layers: Sequence[int],
               alphas: Sequence[float], n_random: int, random_alphas: Sequence[float], spec: SteerSpec,
               seed: int, random_prompts: int | None = None) -> tuple[list[Condition], pd.DataFrame]:
    """Conditions and their metadata rows: one baseline per prompt, emotion x layer x alpha, random controls."""
    grid = ConditionSet(spec)

    def add(prompt, kind, emotion, layer, alpha, direction, random_id=-1):
        grid.add(prompt.text, layer, alpha, direction, prompt_id=prompt.id, kind=kind, emotion=emotion,
                 random_id=random_id)

    for prompt in prompts.itertuples():
        add(prompt, "baseline", "none", -1, 0.0, None)
    for emotion in emotions:
        for layer in layers:
            v = directions[(emotion, layer)]
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


@dataclass(frozen=True)
class GenerationTask:
    """Everything a worker needs to generate chunks of conditions; small and picklable, so Ray can ship it."""

    model: str
    max_new_tokens: int = 30
    batch_size: int = 256
    prepend_bos: bool = True
    loading: LoadSpec = LoadSpec()

    def load(self) -> GenerationWorker:
        return GenerationWorker(self.loading.load(self.model, use_bridge=False), self)


def generation_task(s, seed: int) -> GenerationTask:
    """The generation settings of a `steering` params section."""
    return GenerationTask(s.model, s.max_new_tokens, s.batch_size, s.prepend_bos, LoadSpec(s.device, s.dtype, seed))


class GenerationWorker:
    """Greedy continuations plus their unsteered NLL (fluency) for one chunk of conditions."""

    def __init__(self, lm, task: GenerationTask, progress: bool = False):
        self.lm, self.task, self.progress = lm, task, progress

    def __call__(self, conds: Sequence[Condition]) -> tuple[list[list[int]], np.ndarray]:
        t = self.task
        tokens = generate(self.lm, conds, t.max_new_tokens, t.batch_size, t.prepend_bos, progress=self.progress)
        prompts = [tokenize_prompt(self.lm, c.prompt, t.prepend_bos) for c in conds]
        return tokens, continuation_nll(self.lm, prompts, tokens)


def run_and_score(lm, conds: Sequence[Condition], meta: pd.DataFrame, evaluators, task: GenerationTask,
                  execution: ExecutionConfig = ExecutionConfig(), progress: bool = False) -> pd.DataFrame:
    """Generate every condition (in chunks, locally or on Ray actors), decode, score, add fluency (NLL).

    `lm` is the already-loaded model: the local executor reuses it, Ray actors load their own copy.
    """
    parts = map_chunks(task.load, conds, execution, what=f"steering {task.model}",
                       local_factory=lambda: GenerationWorker(lm, task, progress))
    tokens = [t for part, _ in parts for t in part]
    nll = np.concatenate([n for _, n in parts]) if parts else np.zeros(0)
    texts = decode(lm, tokens)
    table = meta.reset_index(drop=True).copy()
    table["text"] = texts
    table["n_new_tokens"] = [len(t) for t in tokens]
    scores = score_all(evaluators, texts)
    scores["nll"] = nll
    return pd.concat([table, scores], axis=1)


def add_effects(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """effect_<metric> = score - the same prompt's unsteered baseline score."""
    base = table[table["kind"] == "baseline"].set_index("prompt_id")
    out = table.copy()
    for m in metrics:
        out[f"effect_{m}"] = out[m].to_numpy() - base.loc[out["prompt_id"], m].to_numpy()
    return out


def _ci(values: np.ndarray, seed: int) -> tuple[float, float]:
    if len(values) < 3 or np.allclose(values, values[0]):
        return float(values.mean()), float(values.mean())
    res = stats.bootstrap((values,), np.mean, n_resamples=2000, vectorized=True, random_state=seed,
                          method="percentile")
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise_effects(table: pd.DataFrame, families: Sequence[str], nll_threshold: float, seed: int,
                      kind: str = "emotion", extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (emotion, layer, alpha, *extra_keys) of `kind` rows: mean effect per metric family with a
    bootstrap CI over prompts, the random-direction null at the same emotion norm, layer and alpha (where run),
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
            row[f"{family}_ci_low"], row[f"{family}_ci_high"] = _ci(values, seed)
            if len(r):
                prompts = set(r["prompt_id"])
                paired = float(g[g["prompt_id"].isin(prompts)][col].mean())
                v = vs_null(paired, r.groupby("random_id")[col].mean().to_numpy())
                row.update({f"{family}_effect_on_random_prompts": paired, f"{family}_random_mean": v["mean"],
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
        for name, pool in (("with_controls", g[g["alpha"].isin(list(random_alphas))]), ("strongest", g[g["alpha"] > 0])):
            ok = pool[~pool["broken"]]
            pick = (ok if len(ok) else pool).sort_values([f"{primary}_effect", "layer", "alpha"],
                                                        ascending=[False, True, True])
            if len(pick):
                entry[name] = pick.iloc[0]
        out[emotion] = entry
    return out
