"""Orchestration of the head / neuron / circuit stages: which sentences, which readout, which tables.

The engines (`heads`, `neurons`, `circuits`) take arrays and return arrays; this module turns stage params and the
upstream results into their inputs and their outputs into the parquet tables and metrics the stages write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from emotion_circuits import EMOTIONS
from emotion_circuits.heads import engine as H
from emotion_circuits.stats import samples as S
from emotion_circuits.stats.nulls import vs_null
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.runtime.executor import chunked, imap_chunks
from emotion_circuits.store.activations import model_dirname
from emotion_circuits.store.io import read_tensors
from emotion_circuits.model.lengths import check_token_counts
from emotion_circuits.model.loading import LoadedModel, load_model
from emotion_circuits.model.site import Site
from emotion_circuits.params import (CircuitParams, ExecutionParams, HeadParams, HeadPatchingParams,
                                    HeadScreeningParams)

# heads listed per emotion in the screening's metrics (top heads, attribution top-k overlap, seeds' attention):
# a fixed report size, so that no patching knob (`head_patching.top_k`) reruns the screening
REPORT_TOP = 5


def for_heads(sentences: pd.DataFrame, hp: HeadParams) -> pd.DataFrame:
    """The sentences of `heads.source` (default hand-written: every head stage reads clean, word-marked sentences,
    and the screening's cost stays that of one source); `both` keeps every row."""
    if hp.source == "both" or "source" not in sentences:
        return sentences
    rows = sentences[sentences["source"] == hp.source].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"heads.source={hp.source!r}: results/dataset/sentences.parquet has no such rows "
                        f"(dataset.source={sorted(set(sentences['source']))}); set heads.source accordingly")
    return rows


def select_sentences(sentences: pd.DataFrame, split: str, n_per_label: int, seed: int,
                     labels: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """A seeded sample of n sentences per label from `split` (0 = all), in label then id order."""
    pool = sentences if split == "all" else sentences[sentences["split"] == split]
    parts = []
    for i, label in enumerate(labels):
        rows = pool[pool["emotion"] == label].sort_values("id")
        if rows.empty:
            raise DataError(f"no {label!r} sentences in split {split!r} of results/dataset/sentences.parquet")
        if n_per_label and len(rows) > n_per_label:
            pick = np.sort(np.random.default_rng(seed + i).choice(len(rows), n_per_label, replace=False))
            rows = rows.iloc[pick]
        parts.append(rows)
    return pd.concat(parts).reset_index(drop=True)


def head_model(hp: HeadParams, seed: int) -> LoadedModel:
    """The head stages' model (`heads.model`, `heads.device`, `heads.dtype`): plain HF, because the engine edits
    heads inside its attention function, and causal, because every readout is a next-token position."""
    lm = load_model(hp.model, hp.device, hp.dtype, seed, use_bridge=False)
    if not lm.causal:
        raise ParamsError(f"heads.model {hp.model!r} is an encoder; the head stages need a causal model")
    H.prepare(lm)
    return lm


def ablation_means(lm: LoadedModel, sentences: pd.DataFrame, emo: pd.DataFrame, hp: HeadParams, ablation: str,
                   seed: int):
    """With `head_screening.ablation: mean`, each head's mean output over the screened emotional and neutral
    sentences (what mean-ablation writes in); None for zero-ablation."""
    if ablation != "mean":
        return None
    neutral = select_sentences(sentences, hp.split, hp.n_sentences, seed, ["neutral"])
    both = pd.concat([emo, neutral], ignore_index=True)
    return H.mean_head_outputs(lm, [b for b, _ in make_batches(lm, both, hp.batch_size, hp.prepend_bos)])


def load_readout(vectors_dir: Path, lm: LoadedModel, lexicons: dict[str, list[str]]) -> H.Readout:
    """Unit emotion directions of the final residual (last layer resid_post, sentence_end) + lexicon token ids."""
    path = Path(vectors_dir) / model_dirname(lm.name) / "sentence_end.safetensors"
    if not path.exists():
        raise DataError(f"{path} is missing: run the vectors stage with {lm.name!r} in `models`")
    key = Site(lm.n_layers - 1, "resid_post").key("emotion_vectors")
    vecs = read_tensors(path)[key].numpy().astype(np.float32)
    dirs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return H.Readout(dirs, H.lexicon_token_ids(lm.tokenizer, lexicons, EMOTIONS))


def layer_directions(vectors_dir: Path, lm: LoadedModel, hook: str = "resid_post") -> np.ndarray:
    """[n_layers, E, d] unit emotion vectors at every layer (sentence_end)."""
    tensors = read_tensors(Path(vectors_dir) / model_dirname(lm.name) / "sentence_end.safetensors")
    out = np.stack([tensors[Site(m, hook).key("emotion_vectors")].numpy() for m in range(lm.n_layers)])
    return (out / np.linalg.norm(out, axis=-1, keepdims=True)).astype(np.float32)


def token_counts(lm: LoadedModel, texts: Sequence[str], prepend_bos: bool) -> list[int]:
    """Tokens each sentence takes in a forward (the explicit BOS included)."""
    bos = int(prepend_bos and lm.tokenizer.bos_token_id is not None)
    return [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) + bos for t in texts]


def check_lengths(lm: LoadedModel, sentences: pd.DataFrame, max_tokens: int | None, prepend_bos: bool,
                  what: str) -> list[int]:
    """One clear error, before any forward, for a sentence over min(`dataset.max_tokens`, the context); else
    each sentence's token count."""
    ids = sentences["id"].tolist() if "id" in sentences else list(range(len(sentences)))
    counts = token_counts(lm, sentences["text"].tolist(), prepend_bos)
    check_token_counts(lm, counts, ids, max_tokens, what)
    return counts


def make_batches(lm: LoadedModel, df: pd.DataFrame, batch_size: int, prepend_bos: bool
                 ) -> list[tuple[H.SentenceBatch, np.ndarray]]:
    """Length-sorted batches (little padding) and the frame rows each holds; a sentence over the model's context
    is one clear error (the stages check `dataset.max_tokens` up front with `check_lengths`)."""
    lengths = check_lengths(lm, df, None, prepend_bos, f"heads {lm.name}")  # BOS adds the same 1 to every row
    order = sorted(range(len(df)), key=lambda i: (lengths[i], i))
    out = []
    for start in range(0, len(order), batch_size):
        idx = np.array(order[start: start + batch_size])
        part = df.iloc[idx]
        out.append((H.make_batch(lm, part["text"].tolist(), [list(w) for w in part["emotion_words"]], prepend_bos),
                    idx))
    return out


def parse_head(label: str) -> tuple[int, int]:
    m = re.fullmatch(r"L(\d+)H(\d+)", label)
    if not m:
        raise ParamsError(f"not a head label: {label!r} (expected e.g. 'L3H5')")
    return int(m.group(1)), int(m.group(2))


# ---------------------------------------------------------------------------------------------------- screening
class ScreenWorker:
    """Screens chunks of (batch index, layer) items; one clean run per sentence batch per chunk (items come
    batch-major), then one resumed forward per layer with all its heads ablated as rows.

    `frame` (text, emotion_words), the readout and the ablation means are the data; `hp` and `screening` are the
    frozen params sections, which is all the configuration a worker, a Ray actor included, receives."""

    def __init__(self, lm: LoadedModel, hp: HeadParams, screening: HeadScreeningParams, frame: pd.DataFrame,
                 readout: H.Readout, means: dict[int, np.ndarray] | None = None, on_item=None):
        self.lm, self.ablation, self.on_item = lm, screening.ablation, on_item
        self.batches = [b for b, _ in make_batches(lm, frame, hp.batch_size, hp.prepend_bos)]
        self.readout = readout
        self.means = None if means is None else {m: torch.as_tensor(v) for m, v in means.items()}

    def __call__(self, items: list[tuple[int, int]]) -> list[tuple[int, int, dict[str, np.ndarray]]]:
        out, current, clean = [], None, None
        for b, layer in items:
            if b != current:
                current, clean = b, H.CleanScreen.of(self.lm, self.batches[b], self.readout)
            arrays = H.screen_layer(self.lm, clean, layer, self.readout, self.ablation, self.means)
            arrays["mass_clean"] = clean.mass_clean(layer)
            out.append((b, layer, arrays))
            if self.on_item is not None:
                self.on_item(1)
        return out


def load_screen_worker(hp: HeadParams, screening: HeadScreeningParams, seed: int, frame: pd.DataFrame,
                       readout: H.Readout, means: dict[int, np.ndarray] | None) -> ScreenWorker:
    """A worker with its own model (`heads.model` on `heads.device`: `auto` resolves on the actor's machine)."""
    return ScreenWorker(head_model(hp, seed), hp, screening, frame, readout, means)


def screen(lm: LoadedModel, df: pd.DataFrame, readout: H.Readout, hp: HeadParams, screening: HeadScreeningParams,
           seed: int, means=None, progress: bool = True,
           execution: ExecutionParams = ExecutionParams()) -> pd.DataFrame:
    """Per (head, sentence): own-emotion proj/logprob deltas, deltas on every direction, attention mass.

    The (sentence batch, layer) items are cut into `execution.chunk_size` chunks and screened here or on Ray
    actors (`execution.executor`); each item's numbers do not depend on where it ran, so neither do the outs.
    """
    batches = make_batches(lm, df, hp.batch_size, hp.prepend_bos)
    frame = pd.DataFrame({"text": list(df["text"]),
                          "emotion_words": [[str(w) for w in ws] for ws in df["emotion_words"]]})
    readout = H.Readout(np.asarray(readout.directions), [list(t) for t in readout.token_sets])
    means_np = None if means is None else {m: v.numpy() for m, v in means.items()}
    items = [(b, layer) for b in range(len(batches)) for layer in range(H.arch(lm).n_layers)]
    bar = tqdm(total=len(items), desc=f"head screening {lm.name}", unit="layer", disable=not progress,
               mininterval=1.0)
    local = execution.executor == "local"
    results = {}
    for part in imap_chunks(partial(load_screen_worker, hp, screening, seed, frame, readout, means_np),
                            chunked(items, execution.chunk_size), execution, what=f"head screening {lm.name}",
                            local_factory=lambda: ScreenWorker(lm, hp, screening, frame, readout, means_np,
                                                               on_item=bar.update)):
        for b, layer, arrays in part:
            results[(b, layer)] = arrays
        if not local:
            bar.update(len(part))
    bar.close()
    return _screen_table(lm, df, batches, results)


def _screen_table(lm: LoadedModel, df: pd.DataFrame, batches, results: dict) -> pd.DataFrame:
    """The per-(head, sentence) rows of the screened (batch, layer) arrays, in a fixed order."""
    a = H.arch(lm)
    frames = []
    emo_index = np.array([EMOTIONS.index(e) for e in df["emotion"]])
    for b, (batch, idx) in enumerate(batches):
        own = emo_index[idx]
        rows = np.arange(len(idx))
        for layer in range(a.n_layers):
            out = results[(b, layer)]
            for head in range(a.n_heads):
                pd_ = out["proj_delta"][head]
                lp = out["logprob_delta"][head]
                frame = {"unit": idx, "layer": layer, "head": head,
                         "proj_delta": pd_[rows, own], "logprob_delta": lp[rows, own],
                         "mass_clean": out["mass_clean"][head],
                         "mass_downstream_delta": out["mass_downstream_delta"][head]}
                for j, e in enumerate(EMOTIONS):
                    frame[f"proj_delta_{e}"] = pd_[:, j]
                # own direction minus the other emotions' directions: removes unspecific disruption (early heads
                # that move the massive-activation dimensions shift every projection)
                others = (pd_.sum(axis=1) - pd_[rows, own]) / (pd_.shape[1] - 1)
                frame["proj_delta_specific"] = pd_[rows, own] - others
                frames.append(pd.DataFrame(frame))
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "emotion", df["emotion"].to_numpy()[table["unit"]])
    table.insert(1, "sentence_id", df["id"].to_numpy()[table["unit"]])
    table.insert(4, "head_label", [H.head_label(m, h) for m, h in zip(table["layer"], table["head"])])
    return table.sort_values(["emotion", "layer", "head", "unit"]).reset_index(drop=True)


def screen_summary(table: pd.DataFrame, ci=None, seed: int = 0) -> pd.DataFrame:
    """Per (metric, emotion, head): mean, std, n, d, CI, rank; plus the head's mean attention-mass figures."""
    mass = table.groupby(["emotion", "layer", "head"], sort=True)[["mass_clean", "mass_downstream_delta"]].mean()
    parts = []
    for metric in ("proj_delta", "proj_delta_specific", "logprob_delta"):
        s = H.summarise_screen(table, metric, ci, seed)
        parts.append(s.merge(mass.reset_index(), on=["emotion", "layer", "head"]))
    return pd.concat(parts, ignore_index=True)


def emotion_word_attention(lm: LoadedModel, df: pd.DataFrame, batch_size: int, prepend_bos: bool) -> np.ndarray:
    """[rows, layers, heads]: the mean attention weight the sentence-end query puts on one of the row's
    emotion-word tokens (on one of its text tokens where the row has no emotion words, e.g. neutral rows), from
    each head's attention pattern on the clean run. Per token, so short and long sentences compare."""
    out = np.zeros((len(df), lm.n_layers, H.arch(lm).n_heads), np.float32)
    for batch, idx in make_batches(lm, df, batch_size, prepend_bos):
        run = H.clean_run(lm, batch)
        n_tokens = batch.emotion_mask.sum(-1, keepdim=True).clamp(min=1)  # [B, 1]
        for layer, mass in run.ctl.mass.items():
            out[idx, layer] = (mass.float().cpu() / n_tokens).numpy()
    return out


def seeds_attention_scores(lm: LoadedModel, emo: pd.DataFrame, neutral: pd.DataFrame, batch_size: int,
                           prepend_bos: bool) -> pd.DataFrame:
    """The seeds' screening metric, next to the ablation effect: per (emotion, head) the mean attention on
    emotion-word tokens in that emotion's sentences minus the mean attention per text token in neutral
    sentences (`delta_attn`), with both means and their sample counts."""
    a = H.arch(lm)
    att_e = emotion_word_attention(lm, emo, batch_size, prepend_bos)
    neutral_mean = emotion_word_attention(lm, neutral, batch_size, prepend_bos).mean(0)  # [L, H]
    layer, head = np.meshgrid(np.arange(a.n_layers), np.arange(a.n_heads), indexing="ij")
    frames = []
    for emotion in EMOTIONS:
        rows = (emo["emotion"] == emotion).to_numpy()
        if not rows.any():
            continue
        mean_e = att_e[rows].mean(0)
        frames.append(pd.DataFrame({
            "emotion": emotion, "layer": layer.ravel(), "head": head.ravel(),
            "head_label": [H.head_label(m, h) for m, h in zip(layer.ravel(), head.ravel())],
            "delta_attn": (mean_e - neutral_mean).ravel(), "emotion_mean_attn": mean_e.ravel(),
            "neutral_mean_attn": neutral_mean.ravel(), "samples_emotion": int(rows.sum()),
            "samples_neutral": len(neutral)}))
    return pd.concat(frames, ignore_index=True)


def top_heads(summary: pd.DataFrame, k: int, metric: str = "proj_delta") -> dict[str, list[tuple[int, int]]]:
    """The k heads per emotion whose ablation lowers the emotion projection most (rank 1..k)."""
    s = summary[summary["metric"] == metric]
    out = {}
    for emotion in EMOTIONS:
        g = s[s["emotion"] == emotion].sort_values("rank").head(k)
        out[emotion] = [(int(m), int(h)) for m, h in zip(g["layer"], g["head"])]
    return out


def screen_effect_samples(table: pd.DataFrame, ablation: str) -> pd.DataFrame:
    rows = []
    for metric in ("proj_delta", "proj_delta_specific", "logprob_delta"):
        effect = table["emotion"] + "/" + table["head_label"] + f"/{ablation}/{metric}"
        rows.append(S.sample_rows("head_screening", effect.to_numpy(), table["emotion"].to_numpy(), metric, "effect",
                                  table["unit"], table[metric]))
    return pd.concat(rows, ignore_index=True)


def evaluate_heads(lm: LoadedModel, heads: dict[str, list[tuple[int, int]]], df: pd.DataFrame, evaluators,
                   n_generate: int, max_new_tokens: int, prepend_bos: bool) -> pd.DataFrame:
    """Metric (c): greedy continuations of emotional sentences with each head zero-ablated vs clean; the change of
    the emotion's own evaluator scores (lex_<emotion>, p_<emotion> where the embedding evaluator runs)."""
    from emotion_circuits.evaluation.text import score_all
    from emotion_circuits.steering.engine import Condition, decode, generate

    a = H.arch(lm)
    rows = []
    for emotion, hs in heads.items():
        prompts = df[df["emotion"] == emotion].head(n_generate)
        conds = [Condition(t) for t in prompts["text"]]
        runs = {"clean": None, **{H.head_label(m, h): (m, h) for m, h in hs}}
        scores = {}
        for name, head in runs.items():
            edits = {}
            if head is not None:
                keep = torch.ones(1, a.n_heads)
                keep[0, head[1]] = 0.0
                edits = {head[0]: H.LayerEdit(keep=keep)}
            with H.controlled(H.Controller(end_pos=None, edits=edits)):
                tokens = generate(lm, conds, max_new_tokens, batch_size=len(conds), prepend_bos=prepend_bos)
            scores[name] = score_all(evaluators, decode(lm, tokens), tokens)
        metrics = [c for c in (f"lex_{emotion}", f"p_{emotion}") if c in scores["clean"]]
        for name in list(runs)[1:]:
            for metric in metrics:
                delta = scores[name][metric].to_numpy() - scores["clean"][metric].to_numpy()
                for unit, value in enumerate(delta):
                    rows.append({"emotion": emotion, "head_label": name, "metric": f"{metric}_delta",
                                 "unit": unit, "value": float(value)})
    return pd.DataFrame(rows, columns=["emotion", "head_label", "metric", "unit", "value"])


def screen_metrics(summary: pd.DataFrame, k: int, evaluation: pd.DataFrame, info: dict,
                   attention: pd.DataFrame | None = None) -> dict:
    s = summary[summary["metric"] == "proj_delta"]
    att = None if attention is None else attention.set_index(["emotion", "layer", "head"])["delta_attn"]
    lp = summary[summary["metric"] == "logprob_delta"].set_index(["emotion", "layer", "head"])
    top = {}
    for emotion in EMOTIONS:
        g = s[s["emotion"] == emotion].sort_values("rank")
        entries = []
        for r in g.head(k).itertuples():
            entries.append({"head": r.head_label, "rank": int(r.rank), "proj_delta": r.mean, "ci_low": r.ci_low,
                            "ci_high": r.ci_high, "d": r.d, "n": int(r.n),
                            "logprob_delta": float(lp.loc[(emotion, r.layer, r.head), "mean"]),
                            "attention_mass_on_emotion_words": r.mass_clean,
                            "downstream_mass_delta": r.mass_downstream_delta,
                            "seeds_delta_attn": None if att is None else float(att.loc[(emotion, r.layer, r.head)])})
        spec = summary[(summary["metric"] == "proj_delta_specific") & (summary["emotion"] == emotion)]
        spec = spec.sort_values("rank").head(k)
        top[emotion] = {"top": entries, "top_specific": [
                            {"head": r.head_label, "proj_delta_specific": r.mean, "ci_low": r.ci_low,
                             "ci_high": r.ci_high, "d": r.d} for r in spec.itertuples()],
                        "all_heads_median_proj_delta": float(g["mean"].median()),
                        "all_heads_q05_proj_delta": float(g["mean"].quantile(0.05))}
    gen = {}
    if len(evaluation):
        for (emotion, head, metric), g in evaluation.groupby(["emotion", "head_label", "metric"], sort=True):
            gen.setdefault(emotion, {}).setdefault(head, {})[metric] = float(g["value"].mean())
    seeds = {}
    if attention is not None:
        for emotion, g in attention.groupby("emotion", sort=True):
            g = g.sort_values(["delta_attn", "layer", "head"], ascending=[False, True, True]).head(k)
            seeds[emotion] = [{"head": r.head_label, "delta_attn": float(r.delta_attn),
                               "emotion_mean_attn": float(r.emotion_mean_attn),
                               "neutral_mean_attn": float(r.neutral_mean_attn), "samples_emotion": int(r.samples_emotion),
                               "samples_neutral": int(r.samples_neutral)} for r in g.itertuples()]
    return {**info, "top_heads": top, "generation_deltas": gen, "seeds_attention_top": seeds,
            "reading": "proj_delta < 0: ablating the head lowers the final residual's projection on the emotion "
                       "direction (the head carries the emotion); CI: normal 95% over sentences"}


def heatmaps(summary: pd.DataFrame, n_layers: int, n_heads: int, live) -> pd.DataFrame:
    """Layer x head heatmap PNG of the mean projection delta per emotion (a `reporting.live.StageLive` image), and
    its table."""
    from emotion_circuits.reporting.plots import heatmap

    s = summary[summary["metric"] == "proj_delta"]
    for emotion in EMOTIONS:
        g = s[s["emotion"] == emotion]
        mat = np.zeros((n_layers, n_heads))
        mat[g["layer"].to_numpy(), g["head"].to_numpy()] = g["mean"].to_numpy()
        heatmap(mat, [str(m) for m in range(n_layers)], [str(h) for h in range(n_heads)],
                live.figures / f"heatmap_{emotion}.png",
                f"{emotion}: mean change of emotion projection when the head is ablated", "head", "layer")
    return s[["emotion", "layer", "head", "mean"]].rename(columns={"mean": "proj_delta"})


# ----------------------------------------------------------------------------------------------------- patching
def patch_experiments(lm: LoadedModel, heads: dict[str, list[tuple[int, int]]], emo_df: pd.DataFrame,
                      neutral_df: pd.DataFrame, readout: H.Readout, hp: HeadParams, patching: HeadPatchingParams,
                      ablation: str, means, seed: int, progress: bool = True) -> pd.DataFrame:
    """Per emotion: ablation (singly, jointly) and patching (each mode, both directions) of its top heads, next to
    random-head controls of the same size. Returns per-unit rows (kind, set, group, unit, proj/logprob delta)."""
    a = H.arch(lm)
    e_idx = {e: i for i, e in enumerate(EMOTIONS)}
    neutral_batches = make_batches(lm, neutral_df, hp.batch_size, hp.prepend_bos)
    neutral_stats = H.source_stats(lm, [b for b, _ in neutral_batches]) if patching.patch_modes else None
    frames = []
    jobs = sum(1 + 2 * len(patching.patch_modes) for _ in heads)
    bar = tqdm(total=jobs, desc=f"head patching {lm.name}", unit="job", disable=not progress)
    for emotion, hs in heads.items():
        k = len(hs)
        rnd_single = H.random_unit_sets((a.n_layers, a.n_heads), 1, patching.n_random_sets, seed + 17 * e_idx[emotion], hs)
        rnd_joint = H.random_unit_sets((a.n_layers, a.n_heads), k, patching.n_random_sets, seed + 17 * e_idx[emotion] + 1,
                                       hs)
        sets = [[h] for h in hs] + [list(hs)] + rnd_single + rnd_joint
        names = ([H.head_label(*h) for h in hs] + [f"top{k}"] + [f"random1_{i}" for i in range(len(rnd_single))]
                 + [f"random{k}_{i}" for i in range(len(rnd_joint))])
        groups = ["effect"] * (k + 1) + ["null"] * (len(rnd_single) + len(rnd_joint))
        sizes = [1] * k + [k] + [1] * len(rnd_single) + [k] * len(rnd_joint)
        sub = emo_df[emo_df["emotion"] == emotion].reset_index(drop=True)
        emo_batches = make_batches(lm, sub, hp.batch_size, hp.prepend_bos)
        jobs_e = [(ablation, ablation, emo_batches, None)]  # ablation on the emotion's own sentences
        if patching.patch_modes:
            emo_stats = H.source_stats(lm, [b for b, _ in emo_batches])
            for mode in patching.patch_modes:
                jobs_e.append((mode, f"{mode}:emotion->neutral", neutral_batches, emo_stats))
                jobs_e.append((mode, f"{mode}:neutral->emotion", emo_batches, neutral_stats))
        # jobs grouped by the sentences they edit: each batch's clean pass runs once for all of its jobs
        for batches in (emo_batches, neutral_batches):
            mine = [job for job in jobs_e if job[2] is batches]
            for batch, idx in batches:
                clean = H.clean_run(lm, batch)
                for kind, label, _, stats in mine:
                    proj, logp = H.run_head_sets(lm, batch, readout, sets, kind, means=means, stats=stats,
                                                 clean=clean)
                    for i, name in enumerate(names):
                        frames.append(pd.DataFrame({
                            "emotion": emotion, "intervention": label, "set": name, "group": groups[i],
                            "size": sizes[i], "unit": idx.astype(np.int64), "proj_delta": proj[i, :, e_idx[emotion]],
                            "logprob_delta": logp[i, :, e_idx[emotion]]}))
            bar.update(len(mine))
    bar.close()
    return pd.concat(frames, ignore_index=True).sort_values(
        ["emotion", "intervention", "set", "unit"]).reset_index(drop=True)


def patch_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (emotion, intervention, effect set): mean proj/logprob delta and where it falls among the random sets
    of the same size (null mean, q05, q95, z, two-sided empirical p)."""
    rows = []
    for (emotion, inter), g in table.groupby(["emotion", "intervention"], sort=True):
        for name, e in g[g["group"] == "effect"].groupby("set", sort=True):
            size = int(e["size"].iloc[0])
            null = g[(g["group"] == "null") & (g["size"] == size)]
            row = {"emotion": emotion, "intervention": inter, "set": name, "size": size, "n": len(e)}
            for metric in ("proj_delta", "logprob_delta"):
                value = float(e[metric].mean())
                v = vs_null(value, null.groupby("set")[metric].mean().to_numpy(), "two-sided")
                row.update({metric: value, f"{metric}_null_mean": v["null_mean"], f"{metric}_null_q05": v["q05"],
                            f"{metric}_null_q95": v["q95"], f"{metric}_z": v["z"], f"{metric}_p": v["p"]})
            rows.append(row)
    return pd.DataFrame(rows)


def patch_effect_samples(table: pd.DataFrame) -> pd.DataFrame:
    """Effect rows per head set; null rows = the per-unit mean over the random sets of the same size."""
    out = []
    for (emotion, inter), g in table.groupby(["emotion", "intervention"], sort=True):
        for name, e in g[g["group"] == "effect"].groupby("set", sort=True):
            null = g[(g["group"] == "null") & (g["size"] == int(e["size"].iloc[0]))]
            for metric in ("proj_delta", "logprob_delta"):
                out += S.effect_and_set_null("head_patching", f"{emotion}/{name}/{inter}/{metric}", emotion, metric,
                                             e, null)
    return pd.concat(out, ignore_index=True)


def patch_metrics(summary: pd.DataFrame, heads: dict, info: dict) -> dict:
    out = {}
    for r in summary.itertuples():
        key = f"{r.set}|{r.intervention}"
        out.setdefault(r.emotion, {})[key] = {
            "proj_delta": r.proj_delta, "null_mean": r.proj_delta_null_mean, "null_q05": r.proj_delta_null_q05,
            "null_q95": r.proj_delta_null_q95, "z": r.proj_delta_z, "p": r.proj_delta_p,
            "logprob_delta": r.logprob_delta, "beats_random": bool(
                r.proj_delta < r.proj_delta_null_q05 or r.proj_delta > r.proj_delta_null_q95)}
    return {**info, "heads": {e: [H.head_label(*h) for h in hs] for e, hs in heads.items()}, "effects": out,
            "reading": "ablation: proj_delta < 0 means the heads carry the emotion; emotion->neutral patching: > 0 "
                       "means the heads' emotional output writes the emotion; beats_random: outside the random "
                       "same-size head sets' 5-95% range"}



# ----------------------------------------------------------------------------------------- neurons and circuits
def neuron_experiments(lm: LoadedModel, emo_df: pd.DataFrame, readout: H.Readout, hp: HeadParams,
                       circuit: CircuitParams, seed: int, progress: bool = True) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Mean saliency [E, n_layers, d_mlp] per emotion, the top-neuron table, and per-unit ablation rows of the
    top n_neurons (jointly) next to n_random_sets random neuron sets of the same size."""
    from emotion_circuits.heads import neurons as N

    width = N.d_mlp(lm)
    batches = make_batches(lm, emo_df, hp.batch_size, hp.prepend_bos)
    e_idx = np.array([EMOTIONS.index(e) for e in emo_df["emotion"]])
    sal = np.zeros((len(emo_df), lm.n_layers, width), np.float32)
    for batch, idx in tqdm(batches, desc="neuron saliency", disable=not progress):
        sal[idx] = N.saliency(lm, batch, readout.directions[e_idx[idx]])
    mean_sal = np.stack([sal[e_idx == i].mean(0) for i in range(len(EMOTIONS))])
    top_rows, frames = [], []
    for i, emotion in enumerate(EMOTIONS):
        top = N.top_neurons(mean_sal[i], circuit.n_neurons)
        for rank, (m, n) in enumerate(sorted(top, key=lambda t: (-mean_sal[i, t[0], t[1]], t))):
            top_rows.append({"emotion": emotion, "rank": rank + 1, "layer": m, "neuron": n,
                             "hook": f"blocks.{m}.mlp.hook_post", "saliency": float(mean_sal[i, m, n])})
        sets = [top] + H.random_unit_sets((lm.n_layers, width), len(top), circuit.n_random_sets, seed + 31 * i, top)
        names = [f"top{len(top)}"] + [f"random{len(top)}_{j}" for j in range(circuit.n_random_sets)]
        sub = emo_df[emo_df["emotion"] == emotion].reset_index(drop=True)
        for batch, idx in make_batches(lm, sub, hp.batch_size, hp.prepend_bos):
            proj, logp = N.run_neuron_sets(lm, batch, readout, sets)
            for c, name in enumerate(names):
                frames.append(pd.DataFrame({"emotion": emotion, "set": name, "group": "effect" if c == 0 else "null",
                                            "unit": idx.astype(np.int64), "proj_delta": proj[c, :, i],
                                            "logprob_delta": logp[c, :, i]}))
    table = pd.concat(frames, ignore_index=True).sort_values(["emotion", "set", "unit"]).reset_index(drop=True)
    return mean_sal, pd.DataFrame(top_rows), table


def neuron_effect_samples(table: pd.DataFrame) -> pd.DataFrame:
    out = []
    for emotion, g in table.groupby("emotion", sort=True):
        eff, null = g[g["group"] == "effect"], g[g["group"] == "null"]
        for metric in ("proj_delta", "logprob_delta"):
            out += S.effect_and_set_null("neurons", f"{emotion}/{eff['set'].iloc[0]}/zero/{metric}", emotion, metric,
                                         eff, null)
    return pd.concat(out, ignore_index=True)


def sentence_end_means(lm: LoadedModel, emo_df: pd.DataFrame, batch_size: int, prepend_bos: bool
                       ) -> dict[tuple[str, int], np.ndarray]:
    """{(emotion, layer): mean clean residual entering the layer at the sentence end}: the QK circuit's query."""
    sums: dict[tuple[str, int], np.ndarray] = {}
    emotions = emo_df["emotion"].to_numpy()
    for batch, idx in make_batches(lm, emo_df, batch_size, prepend_bos):
        run = H.clean_run(lm, batch)
        for m in range(lm.n_layers):
            x = H.at_end(run.resid_pre[m], batch.end_pos).float().cpu().numpy()
            for r, i in enumerate(idx):
                key = (emotions[i], m)
                sums[key] = sums.get(key, 0) + x[r].astype(np.float64)
    counts = emo_df["emotion"].value_counts()
    return {k: (v / counts[k[0]]).astype(np.float32) for k, v in sums.items()}


def circuit_metrics(top_neurons: pd.DataFrame, neuron_table: pd.DataFrame, ov: pd.DataFrame, qk_lex: pd.DataFrame,
                    info: dict) -> dict:
    neurons = {}
    for emotion, g in neuron_table.groupby("emotion", sort=True):
        eff = float(g[g["group"] == "effect"]["proj_delta"].mean())
        v = vs_null(eff, g[g["group"] == "null"].groupby("set")["proj_delta"].mean().to_numpy(), "two-sided")
        neurons[emotion] = {"top_proj_delta": eff, "random_mean": v["null_mean"], "random_q05": v["q05"],
                            "random_q95": v["q95"], "beats_random": bool(eff < v["q05"]),
                            "top_neurons": [f"L{r.layer}N{r.neuron}" for r in
                                            top_neurons[top_neurons["emotion"] == emotion].head(5).itertuples()]}
    ov_gain = {}
    if len(ov):
        for (emotion, head), g in ov[ov["side"] == "top"].groupby(["emotion", "head_label"], sort=True):
            ov_gain.setdefault(emotion, {})[head] = {"ov_gain": float(g["ov_gain"].iloc[0]),
                                                     "top_tokens": g.sort_values("rank")["token"].head(5).tolist()}
    qk = {}
    for r in qk_lex.itertuples():
        qk.setdefault(r.emotion, {})[r.head_label] = {"lexicon_z": r.lexicon_z,
                                                      "lexicon_percentile": r.lexicon_percentile}
    return {**info, "neurons": neurons, "ov": ov_gain, "qk_lexicon": qk,
            "reading": "neurons: top_proj_delta < random_q05 means zeroing the most salient neurons removes more of "
                       "the emotion projection than random neurons; qk lexicon_z > 0: the head's query at the "
                       "sentence end prefers the emotion's lexicon tokens over the average vocabulary token"}


def attribution_screen(lm: LoadedModel, df: pd.DataFrame, readout: H.Readout, ablation: str, batch_size: int,
                       prepend_bos: bool, means=None, progress: bool = True, ci=None, seed: int = 0) -> pd.DataFrame:
    """First-order screen of every head on many sentences: per (emotion, head) mean, std, n, d, rank."""
    a = H.arch(lm)
    e_idx = np.array([EMOTIONS.index(e) for e in df["emotion"]])
    est = np.zeros((a.n_layers, a.n_heads, len(df)), np.float32)
    for batch, idx in tqdm(make_batches(lm, df, batch_size, prepend_bos), desc="attribution screen",
                           disable=not progress):
        est[:, :, idx] = H.attribution_batch(lm, batch, readout.directions[e_idx[idx]], ablation, means)
    m, h, u = np.meshgrid(np.arange(a.n_layers), np.arange(a.n_heads), np.arange(len(df)), indexing="ij")
    table = pd.DataFrame({"emotion": df["emotion"].to_numpy()[u.ravel()], "layer": m.ravel(), "head": h.ravel(),
                          "attribution": est.ravel()})
    return H.summarise_screen(table, "attribution", ci, seed)


def attribution_agreement(exact: pd.DataFrame, attribution: pd.DataFrame, k: int) -> dict:
    """Per emotion: Spearman correlation of the per-head means (exact vs first-order) and top-k overlap."""
    from scipy.stats import spearmanr

    out = {}
    ex = exact[exact["metric"] == "proj_delta"]
    for emotion in EMOTIONS:
        a = ex[ex["emotion"] == emotion].set_index(["layer", "head"])["mean"]
        b = attribution[attribution["emotion"] == emotion].set_index(["layer", "head"])["mean"].reindex(a.index)
        top_a = set(ex[ex["emotion"] == emotion].sort_values("rank").head(k)["head_label"])
        top_b = set(attribution[attribution["emotion"] == emotion].sort_values("rank").head(k)["head_label"])
        out[emotion] = {"spearman_vs_exact": float(spearmanr(a.to_numpy(), b.to_numpy()).statistic),
                        "top_k_overlap": len(top_a & top_b), "top": sorted(top_b, key=lambda s: s)}
    return out
