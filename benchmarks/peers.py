"""Benchmark the project's steering against the field's tools (repeng 0.4.0, steering-vectors 0.12), in one run.

Why: a steering result only means something next to what the common tools get on the same model, prompts and
judge. Every system here continues the SAME neutral openings (the selection split of data/steering_prompts.jsonl,
the same BOS-prepended token ids), greedy, 30 new tokens; every continuation is judged by the same fixed keyword
judge (`evaluation.keyword.keyword_hits`) and the same fluency measure (per-token NLL of the continuation under the
unsteered model, minus the unsteered continuations' NLL). Systems:

- engine: `steering.engine.generate`, the project's mean-difference vector (sentence_end), window all, layer 15;
- engine-seeds: the same engine with the sweep's `seeds` setting: the emotion_tokens mean-difference vector, window
  all, resid_pre layer 15 (the project's own best setting, next to the peers);
- repeng-pca: repeng's `ControlVector.train` (PCA of paired differences) on the project's handwritten emotion vs
  neutral fit sentences, on layers 13-25 (repeng's customary `range(-5, -18, -1)` on a 30-layer model);
- repeng-project: the project's direction through repeng's `ControlModel` on block 14 (= resid_pre of layer 15);
- sv-meandiff: steering-vectors' `train_steering_vector` (mean of paired differences, one layer: block 14);
- sv-project: the project's direction through steering-vectors' `SteeringVector` on block 14.

The *-project systems inject what the engine injects, where it injects it, so their continuations should match the
engine's token for token: the run reports that agreement, which makes the CPU comparison like for like. Each system
runs batched per strength (one generate call of all prompts per strength). CPU time (`time.process_time`, the
generation only, not the judge or NLL) is the cost measure: wall time on a shared machine swings 2x; the load
average is recorded next to it. Printed per system: its frontier, the best keyword rate within NLL +0.25 and +0.5
nats/token (the unsteered point counts for every system), and CPU-seconds per condition (one prompt, one strength).
Points go to metrics/peers.json. Needs the `bench` extra, installed with --no-deps (its metadata caps numpy<2 and
transformers<5, which would downgrade the project): pip install --no-deps repeng==0.4.0 "steering-vectors==0.12.*".

`--systems NAME ...` runs only those systems (the unsteered baseline always runs: every frontier needs it);
`--merge` then replaces only their points, frontier and checks in the existing --out file and keeps the rest, so one
system is added without rerunning the others (the run's n_prompts, tokens, model and --quick must match the file's).
`run.invocations` lists which systems each invocation ran, with its load average and CPU seconds.

Usage (from the repo root): python benchmarks/peers.py [--prompts 64] [--emotions gratitude anger apology]
[--quick] [--systems engine-seeds ...] [--merge] [--out metrics/peers.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

PROMPTS = "data/steering_prompts.jsonl"
SENTENCES = "results/dataset/sentences.parquet"
VECTORS = "results/vectors"
MODEL = "smollm2-135m"
LAYER = 15  # resid_pre of layer 15 = output of block 14, where the peers' block-output hooks add
BLOCK = LAYER - 1
REPENG_LAYERS = tuple(range(13, 26))  # repeng's README range(-5, -18, -1) on SmolLM2's 30 layers
SYSTEMS = ("engine", "engine-seeds", "repeng-pca", "repeng-project", "sv-meandiff", "sv-project")
CHECK_KEYS = {  # run_emotion's checks, by the system whose run produces them (what --merge replaces)
    "engine-seeds": ("engine_seeds_cos_project",),
    "repeng-pca": ("repeng_pca_cos_project",),
    "repeng-project": ("repeng-project",),
    "sv-meandiff": ("sv_meandiff_cos_project", "sv_meandiff_norm_over_project"),
    "sv-project": ("sv-project",),
}
MERGE_KEYS = ("model", "n_prompts", "max_new_tokens", "quick")  # run fields that must match for --merge
BUDGETS = (0.25, 0.5)  # nats/token over the unsteered continuations
STRENGTHS = {  # per system, batched per strength; few, to keep the default run near 20 CPU-min on 2 cores.
    "engine": (1.0, 2.0),  # alpha x the raw mean-difference vector (issue 17: +0.26 / +0.95 nats at 1 / 2)
    "engine-seeds": (0.75, 1.0),  # alpha x the raw emotion_tokens vector (the sweep's tokens_generated alphas)
    "repeng-pca": (4.0, 16.0),  # repeng's vector is unit norm, added at each of 13 layers
    "repeng-project": (2.0,),  # the engine's vector and alpha: must reproduce the engine's continuations
    "sv-meandiff": (0.5, 1.0),  # 1 = its customary multiplier; its vector is ~2.8x the project vector's norm
    "sv-project": (2.0,),
}
SETTINGS = {
    "unsteered": "no steering",
    "engine": f"sentence_end mean-difference vector, window all, resid_pre L{LAYER}",
    "engine-seeds": f"emotion_tokens mean-difference vector (seeds), window all, resid_pre L{LAYER}",
    "repeng-pca": f"repeng pca_diff vectors, ControlModel layers {REPENG_LAYERS[0]}-{REPENG_LAYERS[-1]}",
    "repeng-project": f"project vector via repeng ControlModel, block {BLOCK} output",
    "sv-meandiff": f"steering-vectors mean_aggregator, decoder_block {BLOCK}",
    "sv-project": f"project vector via steering-vectors SteeringVector, decoder_block {BLOCK}",
}


# --- pure helpers (tested without the peers installed) -------------------------------------------------------------

def trim_at_eos(rows: Sequence[Sequence[int]], eos: int | None) -> list[list[int]]:
    """Each row up to and including its first EOS: what the engine returns, so NLL compares like for like."""
    out = []
    for row in rows:
        row = list(row)
        out.append(row[: row.index(eos) + 1] if eos is not None and eos in row else row)
    return out


def contrast_pairs(sentences: pd.DataFrame, emotion: str) -> list[tuple[str, str]]:
    """(emotion, neutral) handwritten fit sentences paired in id order: the peers' contrastive training sets."""
    fit = sentences[(sentences["split"] == "fit") & (sentences["source"] == "handwritten")]
    pos = fit[fit["emotion"] == emotion].sort_values("id")["text"].tolist()
    neg = fit[fit["emotion"] == "neutral"].sort_values("id")["text"].tolist()
    if not pos or not neg:
        raise ValueError(f"no handwritten fit sentences for {emotion!r} and neutral in {SENTENCES}")
    return list(zip(pos, neg))


def frontier(points: Sequence[dict], budgets: Sequence[float] = BUDGETS) -> dict:
    """{system: {emotion: {"nll+B": best point within budget B}}}: highest rate, then lowest NLL rise, then lowest
    strength. The unsteered point of an emotion is a candidate for every system (steering may only cost)."""
    base = {p["emotion"]: p for p in points if p["system"] == "unsteered"}
    out: dict = {}
    for system in sorted({p["system"] for p in points} - {"unsteered"}):
        for emotion in sorted({p["emotion"] for p in points if p["system"] == system}):
            cands = [p for p in points if p["system"] == system and p["emotion"] == emotion]
            cands += [base[emotion]] if emotion in base else []
            best = {}
            for b in budgets:
                ok = [p for p in cands if p["nll_delta"] <= b]
                if ok:
                    p = min(ok, key=lambda p: (-p["rate"], p["nll_delta"], abs(p["strength"])))
                    best[f"nll+{b:g}"] = {"rate": p["rate"], "strength": p["strength"], "nll_delta": p["nll_delta"],
                                          "system": p["system"]}
            out.setdefault(system, {})[emotion] = best
    return out


def point(system: str, emotion: str, strength: float, hits: np.ndarray, nll: np.ndarray, base_nll: float,
          cpu_s: float) -> dict:
    """One row of metrics/peers.json: keyword rate, NLL rise over unsteered (nats/token), CPU-s per condition."""
    return {"system": system, "setting": SETTINGS[system], "emotion": emotion, "strength": float(strength),
            "rate": round(float(np.mean(hits)), 6), "nll_delta": round(float(np.nanmean(nll)) - base_nll, 6),
            "cpu_s_per_condition": round(cpu_s / len(hits), 6), "n_prompts": int(len(hits))}


def merge_payload(old: dict, new: dict, systems: Sequence[str]) -> dict:
    """`old` with the (system, emotion) results of this run's `systems` (and its unsteered baseline) replaced by
    `new`'s, every other point, frontier entry and check kept: one system is added without rerunning the rest.
    The run section is `new`'s, with `old`'s invocations before this one and the emotions of both."""
    check_mergeable(old["run"], new["run"])
    emotions = set(new["run"]["emotions"])
    ran = set(systems) | {"unsteered"}
    points = [p for p in old["points"] if not (p["system"] in ran and p["emotion"] in emotions)] + new["points"]
    front = {system: dict(by_emotion) for system, by_emotion in old["frontier"].items()}
    for system, by_emotion in new["frontier"].items():
        front.setdefault(system, {}).update(by_emotion)
    replaced = {k for system in systems for k in CHECK_KEYS.get(system, ())}
    checks = {e: {k: v for k, v in c.items() if not (e in emotions and k in replaced)}
              for e, c in old["checks"].items()}
    for e, c in new["checks"].items():
        checks.setdefault(e, {}).update(c)
    run = dict(new["run"], emotions=sorted(set(old["run"]["emotions"]) | emotions),
               invocations=invocations(old["run"], old["points"]) + new["run"]["invocations"])
    key = lambda p: (p["system"], p["emotion"], p["strength"])  # noqa: E731
    return {"points": sorted(points, key=key), "frontier": front, "checks": checks, "run": run}


def check_mergeable(old_run: dict, new_run: dict) -> None:
    """Points of different prompts, lengths or models do not share a frontier: refuse to merge them."""
    from emotion_circuits.errors import UserError

    for key in MERGE_KEYS:
        if old_run.get(key) != new_run.get(key):
            raise UserError(f"cannot merge: {key} is {old_run.get(key)!r} in the existing file, "
                            f"{new_run.get(key)!r} in this run")


def invocations(run: dict, points: Sequence[dict]) -> list[dict]:
    """A file's invocation log; for a file written before the log, one entry rebuilt from its points (its whole-run
    CPU seconds were not recorded: only the generation's, which the points hold)."""
    if "invocations" in run:
        return list(run["invocations"])
    gen = sum(p["cpu_s_per_condition"] * p["n_prompts"] for p in points
              if p["system"] != "unsteered" or p["emotion"] == run["emotions"][0])  # one baseline generate
    return [{"systems": sorted({p["system"] for p in points} - {"unsteered"}), "emotions": list(run["emotions"]),
             "loadavg_start": run.get("loadavg_start"), "loadavg_end": run.get("loadavg_end"),
             "cpu_seconds": None, "generation_cpu_seconds": round(gen, 3)}]


# --- generation -----------------------------------------------------------------------------------------------------

def cpu_timed(fn: Callable[[], list[list[int]]]) -> tuple[list[list[int]], float]:
    """(result, CPU seconds of this process, all threads): the cost measure that load swings least."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def hf_generate(lm, prompt_ids: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy HF `generate` on the same token ids (left-padded, one batch): how the peers are used."""
    import torch

    from emotion_circuits.model.padding import pad_with_mask

    pad, eos = lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id
    ids, mask = pad_with_mask(prompt_ids, pad, "left")
    with torch.inference_mode():
        out = lm.hf_model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                   max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   pad_token_id=pad, eos_token_id=eos)
    return trim_at_eos(out[:, ids.shape[1]:].tolist(), eos)


def engine_generate(lm, prompts: Sequence[str], vector: np.ndarray | None, alpha: float, max_new_tokens: int,
                    batch_size: int) -> list[list[int]]:
    from emotion_circuits.steering.engine import Condition, Window, generate

    conds = [Condition(p, LAYER, float(alpha) if vector is not None else 0.0, vector, Window("all"))
             for p in prompts]
    return generate(lm, conds, max_new_tokens, batch_size)


def import_repeng():
    """repeng 0.4.0 still names `np.float_` (gone in NumPy 2): alias it here rather than pin NumPy for a peer."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import repeng

    return repeng


@contextlib.contextmanager
def repeng_model(lm, layers: Sequence[int]) -> Iterator[object]:
    """repeng's ControlModel around the model for the block, unwrapped after (it mutates the model in place)."""
    repeng = import_repeng()
    cm = repeng.ControlModel(lm.hf_model, list(layers))
    try:
        yield cm
    finally:
        cm.reset()
        cm.unwrap()


def repeng_vector(lm, pairs: Sequence[tuple[str, str]]):
    """repeng's own control vector (pca_diff, every layer), trained as its README trains one."""
    repeng = import_repeng()
    data = [repeng.DatasetEntry(positive=p, negative=n) for p, n in pairs]
    return repeng.ControlVector.train(lm.hf_model, lm.tokenizer, data, method="pca_diff", batch_size=32)


def sv_vector(lm, pairs: Sequence[tuple[str, str]]):
    """steering-vectors' own vector: mean of paired last-token differences at decoder block `BLOCK`."""
    from steering_vectors import train_steering_vector

    return train_steering_vector(lm.hf_model, lm.tokenizer, list(pairs), layers=[BLOCK],
                                 layer_type="decoder_block", read_token_index=-1, batch_size=32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return round(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), 6)


# --- the run --------------------------------------------------------------------------------------------------------

class Bench:
    """One model, prompts and max_new_tokens; scores each system's batches and keeps the points."""

    def __init__(self, lm, prompts: Sequence[str], max_new_tokens: int, batch_size: int):
        from emotion_circuits.steering.engine import tokenize_prompt

        self.lm, self.prompts, self.tokens, self.batch_size = lm, list(prompts), max_new_tokens, batch_size
        self.ids = [tokenize_prompt(lm, p, True) for p in self.prompts]
        self.points: list[dict] = []
        self.continuations: dict[tuple[str, str, float], list[list[int]]] = {}
        self.base_nll = 0.0

    def score(self, system: str, emotion: str, strength: float, tokens: list[list[int]], cpu_s: float) -> dict:
        from emotion_circuits.evaluation.keyword import keyword_hits
        from emotion_circuits.evaluation.text import continuation_nll
        from emotion_circuits.steering.engine import decode

        hits = keyword_hits(decode(self.lm, tokens), emotion)
        nll = continuation_nll(self.lm, self.ids, tokens)
        p = point(system, emotion, strength, hits, nll, self.base_nll, cpu_s)
        self.points.append(p)
        self.continuations[(system, emotion, float(strength))] = tokens
        print(f"  {system:15s} {emotion:9s} strength {strength:6.2f}  rate {p['rate']:.3f}  "
              f"NLL {p['nll_delta']:+.3f}  CPU {p['cpu_s_per_condition']:.3f} s/cond", flush=True)
        return p

    def unsteered(self, emotions: Sequence[str]) -> None:
        from emotion_circuits.evaluation.text import continuation_nll

        tokens, cpu = cpu_timed(lambda: engine_generate(self.lm, self.prompts, None, 0.0, self.tokens,
                                                        self.batch_size))
        self.base_nll = float(np.nanmean(continuation_nll(self.lm, self.ids, tokens)))
        for e in emotions:
            self.score("unsteered", e, 0.0, tokens, cpu)

    def sweep(self, system: str, emotion: str, strengths: Sequence[float],
              run: Callable[[float], list[list[int]]]) -> None:
        for s in strengths:
            tokens, cpu = cpu_timed(lambda: run(s))
            self.score(system, emotion, s, tokens, cpu)

    def agreement(self, system: str, emotion: str) -> dict:
        """Share of continuations identical to the engine's at the same strength (same vector, same place)."""
        same = [float(np.mean([a == b for a, b in zip(toks, self.continuations[("engine", e, s)])]))
                for (sys_, e, s), toks in self.continuations.items()
                if sys_ == system and e == emotion and ("engine", e, s) in self.continuations]
        return {"identical_to_engine": round(float(np.mean(same)), 6) if same else None, "n_strengths": len(same)}


def run_emotion(bench: Bench, emotion: str, vector: np.ndarray, seeds: np.ndarray, pairs: list[tuple[str, str]],
                strengths: dict[str, Sequence[float]], systems: Sequence[str] = SYSTEMS) -> dict:
    """The strength sweeps of `systems` for one emotion (`vector`: the project's sentence_end direction, `seeds`:
    its emotion_tokens one); returns their checks (the peers' vectors' cosines with the project's, agreement)."""
    lm, gen, checks = bench.lm, (lambda: hf_generate(bench.lm, bench.ids, bench.tokens)), {}
    for name, v in (("engine", vector), ("engine-seeds", seeds)):
        if name in systems:
            bench.sweep(name, emotion, strengths[name],
                        lambda a, v=v: engine_generate(lm, bench.prompts, v, a, bench.tokens, bench.batch_size))
    if "engine-seeds" in systems:
        checks["engine_seeds_cos_project"] = cosine(seeds, vector)
    if not {"repeng-pca", "repeng-project", "sv-meandiff", "sv-project"} & set(systems):
        return checks  # the project's engine only: the bench extra is not needed
    import torch
    from steering_vectors import SteeringVector

    def with_repeng(cm, set_control: Callable[[], None]) -> list[list[int]]:
        set_control()
        try:
            return gen()
        finally:
            cm.reset()  # the NLL that follows is the unsteered model's

    if "repeng-pca" in systems:
        own = repeng_vector(lm, pairs)
        with repeng_model(lm, REPENG_LAYERS) as cm:
            bench.sweep("repeng-pca", emotion, strengths["repeng-pca"],
                        lambda c: with_repeng(cm, lambda: cm.set_control(own, c)))
        checks["repeng_pca_cos_project"] = cosine(own.directions[BLOCK], vector)
    if "repeng-project" in systems:
        with repeng_model(lm, [BLOCK]) as cm:
            v = torch.as_tensor(vector, dtype=next(lm.hf_model.parameters()).dtype)
            bench.sweep("repeng-project", emotion, strengths["repeng-project"],
                        lambda a: with_repeng(cm, lambda: cm.set_raw_control({BLOCK: a * v})))
        checks["repeng-project"] = bench.agreement("repeng-project", emotion)

    def with_sv(sv, a: float) -> list[list[int]]:
        with sv.apply(lm.hf_model, multiplier=a):
            return gen()

    if "sv-meandiff" in systems:
        sv_own = sv_vector(lm, pairs)
        bench.sweep("sv-meandiff", emotion, strengths["sv-meandiff"], lambda a: with_sv(sv_own, a))
        acts = sv_own.layer_activations[BLOCK].float()
        checks["sv_meandiff_cos_project"] = cosine(acts.cpu().numpy(), vector)
        checks["sv_meandiff_norm_over_project"] = round(float(acts.norm()) / float(np.linalg.norm(vector)), 6)
    if "sv-project" in systems:
        sv_project = SteeringVector({BLOCK: torch.as_tensor(vector)}, "decoder_block")
        bench.sweep("sv-project", emotion, strengths["sv-project"], lambda a: with_sv(sv_project, a))
        checks["sv-project"] = bench.agreement("sv-project", emotion)
    return checks


def print_frontier(points: list[dict], front: dict) -> None:
    print(f"\n{'system':15s} {'emotion':9s} {'best rate @NLL+0.25':>22s} {'best rate @NLL+0.5':>22s} "
          f"{'CPU s/cond':>11s}")
    for system, by_emotion in front.items():
        for emotion, best in by_emotion.items():
            cpu = np.mean([p["cpu_s_per_condition"] for p in points
                           if p["system"] == system and p["emotion"] == emotion])
            cells = [f"{best[k]['rate']:.3f} (s={best[k]['strength']:g})" if k in best else "-"
                     for k in (f"nll+{b:g}" for b in BUDGETS)]
            print(f"{system:15s} {emotion:9s} {cells[0]:>22s} {cells[1]:>22s} {cpu:11.3f}")


def selection_prompts(n: int) -> list[str]:
    """The steering sweep's selection split (n prompts; the confirmation split of n stays unseen)."""
    from emotion_circuits.data import build_prompts
    from emotion_circuits.steering.prompts import split_prompts

    return split_prompts(build_prompts(PROMPTS), n, n)["selection"]["text"].tolist()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="selection-split prompts (needs 2N in the file)")
    parser.add_argument("--emotions", nargs="+", default=["gratitude"], choices=["gratitude", "anger", "apology"],
                        help="default gratitude (~20 CPU-min on 2 cores); each more emotion adds about as much")
    parser.add_argument("--quick", action="store_true", help="16 prompts, one strength per system (smoke run)")
    parser.add_argument("--tokens", type=int, default=30, help="new tokens per continuation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, metavar="NAME",
                        help=f"run only these ({', '.join(SYSTEMS)}; default all); the unsteered baseline always runs")
    parser.add_argument("--merge", action="store_true",
                        help="replace only these systems' results in the existing --out file, keep the others")
    parser.add_argument("--out", type=Path, default=Path("metrics/peers.json"))
    return parser.parse_args(argv)


def read_existing(path: Path) -> dict:
    """The --out file that --merge adds to: checked before minutes of generation, not after."""
    from emotion_circuits.errors import UserError

    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--merge: {path} does not exist (run without --merge first)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"--merge: {path} is not JSON ({err})") from None
    if not isinstance(old, dict) or not {"points", "frontier", "checks", "run"} <= set(old):
        raise UserError(f"--merge: {path} is not a peers.json (needs points, frontier, checks, run)")
    return old


def write_json(path: Path, payload: dict) -> None:
    """Whole file or nothing (a temp file renamed), sorted keys: diffs show only changed numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True, indent=2) + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> dict:
    cpu_start = time.process_time()
    import torch

    from emotion_circuits.directions.store import load_directions
    from emotion_circuits.model.loading import load_model
    from emotion_circuits.model.site import Site
    from emotion_circuits.store.io import read_parquet

    n = 16 if args.quick else args.prompts
    strengths = {k: (v[len(v) // 2],) if args.quick else v for k, v in STRENGTHS.items()}
    prompts = selection_prompts(n)
    sentences = read_parquet(Path(SENTENCES))
    directions = load_directions(Path(VECTORS), MODEL, "sentence_end", [Site(LAYER)])[Site(LAYER)]
    seeds = load_directions(Path(VECTORS), MODEL, "emotion_tokens", [Site(LAYER)], "vector", "raw")[Site(LAYER)]
    systems = [s for s in SYSTEMS if s in args.systems]  # canonical order, no repeats
    load_start = os.getloadavg()
    lm = load_model(MODEL, device="cpu", dtype="float32", use_bridge=False)
    bench = Bench(lm, prompts, args.tokens, args.batch_size)
    print(f"{MODEL}: {n} prompts x {args.tokens} tokens, greedy, {torch.get_num_threads()} threads, "
          f"load average {load_start[0]:.2f}", flush=True)
    bench.unsteered(args.emotions)
    checks = {e: run_emotion(bench, e, directions[e].vector, seeds[e].vector, contrast_pairs(sentences, e),
                             strengths, systems)
              for e in args.emotions}
    front = frontier(bench.points)
    print_frontier(bench.points, front)
    load_end = os.getloadavg()
    print(f"\nload average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f} on {os.cpu_count()} cores")
    for e, c in checks.items():
        print(f"{e}: peers' vectors vs the project's: {json.dumps(c, sort_keys=True)}")
    gen_cpu = sum(p["cpu_s_per_condition"] * p["n_prompts"] for p in bench.points
                  if p["system"] != "unsteered" or p["emotion"] == args.emotions[0])
    invocation = {"systems": systems, "emotions": list(args.emotions), "base_nll": round(bench.base_nll, 6),
                  "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in load_end],
                  "cpu_seconds": round(time.process_time() - cpu_start, 3), "generation_cpu_seconds": round(gen_cpu, 3)}
    return {"points": bench.points, "frontier": front, "checks": checks,
            "run": {"model": MODEL, "n_prompts": n, "max_new_tokens": args.tokens, "emotions": list(args.emotions),
                    "base_nll": round(bench.base_nll, 6), "budgets": list(BUDGETS), "threads": torch.get_num_threads(),
                    "cores": os.cpu_count(), "quick": bool(args.quick), "invocations": [invocation]}}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' own progress bars (read when tqdm is imported)
    from emotion_circuits.errors import UserError

    args = parse_args(argv)
    try:
        old = read_existing(args.out) if args.merge else None
        if old is not None:
            check_mergeable(old["run"], {"model": MODEL, "n_prompts": 16 if args.quick else args.prompts,
                                         "max_new_tokens": args.tokens, "quick": bool(args.quick)})
        payload = run(args)
        if old is not None:
            payload = merge_payload(old, payload, payload["run"]["invocations"][-1]["systems"])
            print("\nmerged with the existing file:")
            print_frontier(payload["points"], payload["frontier"])
    except (UserError, ImportError) as err:
        hint = " (install the bench extra: pip install --no-deps repeng==0.4.0 'steering-vectors==0.12.*')"
        print(f"error: {err}" + (hint if isinstance(err, ImportError) else ""), file=sys.stderr)
        return 2
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
