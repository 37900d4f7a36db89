"""The report: `results/report/index.md` and a self-contained `index.html` built from metrics JSON and plots only.

Every number in a verdict is looked up in a metrics JSON through `Cite.num`, which formats it and records where it
came from; each paragraph ends with a footnote listing `shown value <- file ["key"]["path"]`, so every number is
traceable (and the tests check it). Verdicts are rules applied to those numbers, not prose written by hand.
No timestamps and no git revision in the text (see `reproducibility`): the same inputs give a byte-identical report.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emotion_circuits.store import paths

KINDS = ("f2", "f3", "signed3", "int", "p", "pct", "g", "str", "key")


def format_value(value: Any, kind: str) -> str:
    """How a number is shown; the traceability test re-applies this to the metrics value."""
    if kind == "key":
        return str(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "str":
        return str(value)
    if kind == "int":
        return str(int(value))
    if kind == "f2":
        return f"{float(value):.2f}"
    if kind == "f3":
        return f"{float(value):.3f}"
    if kind == "signed3":
        return f"{float(value):+.3f}"
    if kind == "p":
        return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"
    if kind == "pct":
        return f"{100 * float(value):.0f}%"
    if kind == "g":
        return f"{float(value):g}"
    raise ValueError(f"unknown format kind {kind!r}")


def resolve(metrics: dict[str, Any], file: str, keys: list[str]) -> Any:
    value = metrics[file]
    for k in keys:
        value = value[k]
    return value


def keypath(keys: list[str]) -> str:
    return "".join(f"[{json.dumps(k)}]" for k in keys)


class Cite:
    """Collects the sources of the numbers of one paragraph."""

    def __init__(self, metrics: dict[str, Any]):
        self.metrics = metrics
        self.entries: list[tuple[str, str, str]] = []

    def num(self, file: str, keys: list[str], kind: str = "f2") -> str:
        """The formatted value at `file` `keys`; kind `key` shows the last key itself (a name that is a key)."""
        value = keys[-1] if kind == "key" else resolve(self.metrics, file, keys)
        if kind == "key":
            resolve(self.metrics, file, keys)  # the path must exist
        shown = format_value(value, kind)
        self.entries.append((shown, file, keypath(keys)))
        return shown


@dataclass
class Doc:
    """A tiny block model rendered to Markdown and to HTML (no markdown library needed)."""

    blocks: list[tuple] = field(default_factory=list)
    footnotes: list[list[tuple[str, str, str]]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, cite: Cite | None = None) -> None:
        ref = None
        if cite is not None and cite.entries:
            self.footnotes.append(list(dict.fromkeys(cite.entries)))
            ref = len(self.footnotes)
        self.blocks.append(("p", text, ref))

    def img(self, name: str, alt: str) -> None:
        self.blocks.append(("img", name, alt))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"{'#' * b[1]} {b[2]}\n")
            elif b[0] == "p":
                out.append(b[1] + (f" [^{b[2]}]" if b[2] else "") + "\n")
            elif b[0] == "img":
                out.append(f"![{b[2]}](figures/{b[1]})\n")
            elif b[0] == "pre":
                out.append("```\n" + b[1].rstrip("\n") + "\n```\n")
        if self.footnotes:
            out.append("## Number sources\n")
            out.append("Each number above, as shown, and the metrics file and key it was read from.\n")
            for i, entries in enumerate(self.footnotes, 1):
                out.append(f"[^{i}]: " + "; ".join(f"`{s}` <- `{f}` `{k}`" for s, f, k in entries) + "\n")
        return "\n".join(out)

    def html(self, figures: dict[str, Path], title: str) -> str:
        def inline(text: str) -> str:
            t = html.escape(text, quote=False)
            t = re.sub(r"`([^`]*)`", r"<code>\1</code>", t)
            return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)

        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                ref = f'<sup><a href="#fn{b[2]}" id="ref{b[2]}">{b[2]}</a></sup>' if b[2] else ""
                body.append(f"<p>{inline(b[1])}{ref}</p>")
            elif b[0] == "img":
                data = base64.b64encode(figures[b[1]].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{inline(b[2])}</figcaption></figure>")
            elif b[0] == "pre":
                body.append(f"<pre>{html.escape(b[1])}</pre>")
        if self.footnotes:
            body.append("<h2>Number sources</h2><ol class=\"sources\">")
            for i, entries in enumerate(self.footnotes, 1):
                items = "; ".join(f"<code>{html.escape(s)}</code> &larr; <code>{html.escape(f)}</code> "
                                  f"<code>{html.escape(k)}</code>" for s, f, k in entries)
                body.append(f'<li id="fn{i}">{items} <a href="#ref{i}">&#8617;</a></li>')
            body.append("</ol>")
        style = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.45;padding:0 1rem}"
                 "img{max-width:100%}figure{margin:1rem 0}figcaption{font-size:.85rem;color:#555}"
                 "pre{background:#f4f4f4;padding:.6rem;overflow-x:auto;font-size:.8rem}"
                 "code{font-size:.85em}ol.sources{font-size:.8rem}")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{style}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------ dvc.yaml

def _out_paths(spec: dict) -> list[str]:
    paths = []
    for item in (spec.get("outs") or []) + (spec.get("metrics") or []) + (spec.get("plots") or []):
        paths.append(next(iter(item)) if isinstance(item, dict) else str(item))
    return paths


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def stage_deps(dvc_yaml: Path, stage: str) -> list[str]:
    if not Path(dvc_yaml).exists():
        return []
    spec = (yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage) or {}
    return [str(d) for d in spec.get("deps") or []]


def upstream_stages(dvc_yaml: Path, stage: str) -> list[str]:
    """Stages whose outs `stage` depends on, transitively (from dvc.yaml), sorted."""
    if not Path(dvc_yaml).exists():
        return []
    stages = (yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}).get("stages", {}) or {}
    outs = {name: _out_paths(spec or {}) for name, spec in stages.items()}
    seen: set[str] = set()
    todo = [stage]
    while todo:
        deps = [str(d) for d in (stages.get(todo.pop()) or {}).get("deps") or []]
        for name, stage_outs in outs.items():
            if name not in seen and name != stage and any(_overlaps(d, o) for d in deps for o in stage_outs):
                seen.add(name)
                todo.append(name)
    return sorted(seen)


def reproducibility(lock_path: Path, dvc_yaml: Path, stage: str) -> tuple[str, str]:
    """(dvc.lock excerpt, params) for the report's upstream stages.

    Only content-addressed facts go in: each upstream stage's command, the md5 of every code/data dep and out
    recorded in dvc.lock, and the params it ran with. Files under metrics/ are left out (their values are in the
    report itself; timing lives in the git-ignored metrics/<stage>/timing.json, never read here), and so is the
    git revision: the report is built before the commit that will record it, and a revision in the text would
    make `dvc repro -f` after every commit produce a different report from the same inputs. The dvc.lock md5s
    pin the exact code instead; the commit is the one whose dvc.lock lists this report's md5
    (`git log -- dvc.lock`)."""
    if not Path(lock_path).exists():
        return "dvc.lock not found: build the report through `dvc repro` to record the upstream hashes.", "{}"
    lock = (yaml.safe_load(Path(lock_path).read_text(encoding="utf-8")) or {}).get("stages", {}) or {}
    lines, params = [], {}
    for name in upstream_stages(dvc_yaml, stage):
        entry = lock.get(name)
        if not entry:
            lines.append(f"{name}: not in dvc.lock")
            continue
        lines.append(f"{name}: {entry.get('cmd')}")
        for kind in ("deps", "outs"):
            for item in entry.get(kind) or []:
                path = str(item.get("path"))
                if path.startswith("metrics/"):
                    continue
                lines.append(f"  {kind[:-1]:<4} {item.get('md5', item.get('hash', '?'))}  {path}")
        for file, values in (entry.get("params") or {}).items():
            params.setdefault(file, {}).update(values or {})
    for values in params.values():  # `section.key` entries repeat what the whole section already lists
        for key in [k for k in values if "." in k and k.split(".")[0] in values]:
            del values[key]
    params_text = yaml.safe_dump(params, sort_keys=True, default_flow_style=None, width=110)
    return "\n".join(lines), params_text


def versions() -> str:
    import importlib.metadata as md
    import platform

    names = ("dvc", "numpy", "scipy", "statsmodels", "pandas", "scikit-learn", "torch", "transformers",
             "transformer-lens")
    parts = [f"python {platform.python_version()}"]
    for n in names:
        try:
            parts.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------ content

# metrics files the report reads (keys of `metrics` and of every footnote)
STATS, DATASET, ACTIVATIONS, VECTORS, ALIGNMENT, STEERING, SINGLE = (
    str(paths.STAGES[name].metrics) for name in ("statistics", "dataset", "activations", "vectors", "alignment",
                                                 "steering_sweep", "steering"))

CROSS = str(paths.STAGES["cross_steering"].metrics)
CONFIRM = str(paths.STAGES["steering_confirm"].metrics)
PICK_NAMES = {"seeds": "the seeds' setting", "frontier": "the best setting within the fluency budget"}
JUDGES = str(paths.STAGES["judges"].metrics)
# hand-recorded measurements (benchmarks, GPU runs) the report quotes in a labelled section
MEASUREMENTS = str(paths.METRICS / "measurements.md")

QUESTION = ("Do different language models hold the same emotion subspace (gratitude, anger, apology, against "
            "neutral) in different coordinates, and can we causally steer a model along it? Every effect below "
            "stands next to its null (random subspaces, permuted labels, equal-norm random directions), with a "
            "bootstrap confidence interval, a permutation p-value and a Benjamini-Hochberg adjustment within its "
            "family of tests.")


def figure_name(path: Path) -> str:
    parts = [p for p in Path(path).with_suffix("").parts if p not in ("results", "metrics", "plots", "images")]
    return "__".join(parts) + ".png"


def effect_verdict(doc: Doc, m: dict, family: str, emotion: str, what: str) -> None:
    """One headline effect as a sentence with its null, CI, adjusted p, n and the verdict the numbers give."""
    c = Cite(m)
    base = ["headline", family, emotion]
    e = resolve(m, STATS, base)
    level = c.num(STATS, ["settings", "ci_level"], "pct")
    parts = [f"**{emotion}** ({what}"]
    if e.get("layer") is not None:
        parts.append(f", layer {c.num(STATS, base + ['layer'], 'int')}")
    if e.get("alpha") is not None:
        parts.append(f", alpha {c.num(STATS, base + ['alpha'], 'g')}")
    parts.append(f", `{c.num(STATS, base + ['effect'], 'str')}`): ")
    two = e["test"] != "one_sample_vs_0"
    paired = e["test"] == "paired_vs_null"
    parts.append(f"mean change {c.num(STATS, base + ['mean'], 'signed3')} on `{c.num(STATS, base + ['metric'], 'str')}`; ")
    d = c.num(STATS, base + ["d"], "f2")
    ci = f"[{c.num(STATS, base + ['d_ci_low'], 'f2')}, {c.num(STATS, base + ['d_ci_high'], 'f2')}]"
    p_adj = c.num(STATS, base + ["p_adj"], "p")
    n = c.num(STATS, base + ["n"], "int")
    if two:
        parts.append(f"against the matching null{' (paired by unit, d_z)' if paired else ''} d = {d} {ci} "
                     f"({level} CI), Hedges' g = "
                     f"{c.num(STATS, base + ['g'], 'f2')}, p_adj {'' if p_adj.startswith('<') else '= '}{p_adj} "
                     f"(n = {n} vs {c.num(STATS, base + ['n_null'], 'int')} null values); the null alone: "
                     f"d = {c.num(STATS, base + ['null_d_vs_0'], 'f2')} vs zero. ")
    else:
        parts.append(f"against zero (no matching null) d = {d} {ci} ({level} CI), p_adj "
                     f"{'' if p_adj.startswith('<') else '= '}{p_adj} (n = {n}). ")
    fdr = c.num(STATS, ["settings", "fdr_alpha"], "g")
    lo, hi = e.get("d_ci_low"), e.get("d_ci_high")
    ci_excludes_0 = lo is not None and hi is not None and (lo > 0 or hi < 0)
    against = "beyond its null" if two else "against zero"
    if e.get("significant") and ci_excludes_0:
        verdict = f"**Verdict: an effect {against}** (p_adj < {fdr}, CI excludes zero)."
    elif e.get("significant"):
        verdict = f"**Verdict: significant {against} after correction** (p_adj < {fdr}) but the d CI includes zero."
    elif ci_excludes_0:
        verdict = (f"**Verdict: suggestive only**: the CI excludes zero but p_adj is not below {fdr} after "
                   "correction for the family.")
    else:
        verdict = f"**Verdict: no evidence of an effect {against}.**"
    key = None
    if family == "steering_sweep" and e.get("layer") is not None and e.get("alpha") is not None:
        setting = str(e.get("effect", "")).split("/")[1] if str(e.get("effect", "")).count("/") >= 3 else ""
        key = f"{setting}|{emotion}|L{int(e['layer']):02d}|a{float(e['alpha']):+g}"
    if key and key in (m.get(STEERING, {}).get("vs_random_band") or {}):
        verdict += (f" Fluency: the continuation NLL changes by "
                    f"{c.num(STEERING, ['vs_random_band', key, 'nll_delta'], 'signed3')} nats/token.")
    if not e.get("significant") and e.get("mde_d") is not None:
        verdict += (f" With this n only |d| >= {c.num(STATS, base + ['mde_d'], 'f2')} is detectable at power "
                    f"{c.num(STATS, ['power', 'power'], 'g')}.")
    doc.p("".join(parts) + verdict, c)


def causal_pair(m: dict[str, Any]) -> tuple[str, str] | None:
    """The question's pair: the alignment stage's `lead_pair` (the first two causal LMs in `models`), else the
    first two models the cross-model steering stage steered."""
    lead = m.get(ALIGNMENT, {}).get("lead_pair")
    if lead:
        a, b = m[ALIGNMENT]["model_pairs"][lead]["models"]
        return a, b
    models = m.get(CROSS, {}).get("models") or []
    return (models[0], models[1]) if len(models) >= 2 else None


def cross_steering_verdicts(doc: Doc, m: dict[str, Any], pair: str) -> None:
    """Per emotion: the mapped source vector against mapped equal-norm random directions, the native vector."""
    entry = m[CROSS]["pairs"][pair]
    base = ["pairs", pair]
    c = Cite(m)
    doc.p(f"Cross-model steering `{c.num(CROSS, base, 'key')}`: the source's "
          f"`{c.num(CROSS, base + ['source_layer'], 'str')}` emotion vectors through the alignment map, added at "
          f"`{c.num(CROSS, base + ['steer_site'], 'str')}` of the target at alpha {c.num(CROSS, ['alpha'], 'g')} "
          f"(primary metric `{c.num(CROSS, ['primary_metric'], 'str')}`, {c.num(CROSS, ['n_prompts'], 'int')} "
          f"prompts, {c.num(CROSS, ['n_random'], 'int')} mapped random directions).", c)
    for emotion, kinds in entry["effects"].items():
        if "mapped" not in kinds:
            continue
        c = Cite(m)
        e = base + ["effects", emotion]
        mapped, native = kinds["mapped"], kinds.get("native", {})
        text = (f"`{c.num(CROSS, e, 'key')}`: mapped vector effect {c.num(CROSS, e + ['mapped', 'effect'], 'signed3')} "
                f"(CI {c.num(CROSS, e + ['mapped', 'ci_low'], 'signed3')} to "
                f"{c.num(CROSS, e + ['mapped', 'ci_high'], 'signed3')}, n {c.num(CROSS, e + ['mapped', 'n'], 'int')}) "
                f"vs mapped random mean {c.num(CROSS, e + ['mapped', 'random_mean'], 'signed3')}, upper quantile "
                f"{c.num(CROSS, e + ['mapped', 'random_q95'], 'signed3')}, p {c.num(CROSS, e + ['mapped', 'p_vs_random'], 'p')}")
        if native:
            text += (f"; the target's native vector {c.num(CROSS, e + ['native', 'effect'], 'signed3')} (CI "
                     f"{c.num(CROSS, e + ['native', 'ci_low'], 'signed3')} to "
                     f"{c.num(CROSS, e + ['native', 'ci_high'], 'signed3')})")
        text += (f"; cosine(mapped, native) {c.num(CROSS, base + ['geometry', emotion, 'cosine_mapped_native'], 'f2')}. ")
        p, eff, q95 = mapped.get("p_vs_random"), mapped.get("effect"), mapped.get("random_q95")
        level = m.get(STATS, {}).get("settings", {}).get("fdr_alpha", 0.05)  # unadjusted here; BH in statistics
        steers = p is not None and eff is not None and q95 is not None and p < level and eff > q95
        text += ("**Verdict: the mapped direction steers beyond mapped random directions.**" if steers else
                 "**Verdict: no evidence that the mapped direction steers beyond mapped random directions.**")
        doc.p(text, c)


def llm_pair_lead(doc: Doc, m: dict[str, Any], fig) -> None:
    """The report leads with the question asked of two language models: alignment both ways, then steering."""
    pair = causal_pair(m)
    if pair is None:
        return
    a, b = pair
    doc.h(2, f"Two language models: {a} and {b}")
    for key in (f"{a}->{b}", f"{b}->{a}"):
        if key in (m.get(ALIGNMENT, {}).get("pairs") or {}):
            c = Cite(m)
            doc.p(f"Alignment `{c.num(ALIGNMENT, ['pairs', key], 'key')}`: "
                  f"{c.num(ALIGNMENT, ['pairs', key, 'verdict'], 'str')}", c)
    width_free_verdicts(doc, m, a, b)
    fig("alignment__alignment_by_layer.png", "Overlap after the map per layer pair against each null's q95")
    for key in (f"{a}->{b}", f"{b}->{a}"):
        if key in (m.get(CROSS, {}).get("pairs") or {}):
            cross_steering_verdicts(doc, m, key)


def width_free_verdicts(doc: Doc, m: dict[str, Any], a: str, b: str) -> None:
    """The two models' emotion geometry compared without a map (any widths): RSA of the sentences and the
    correlation of the class-centroid distances, each against a permutation null."""
    key = f"{a}<->{b}"
    if key not in (m.get(ALIGNMENT, {}).get("model_pairs") or {}):
        return
    c = Cite(m)
    base = ["model_pairs", key]
    entry = m[ALIGNMENT]["model_pairs"][key]
    doc.p(f"Width-free, `{c.num(ALIGNMENT, base, 'key')}`: representational similarity of the sentences (Spearman "
          f"between the two models' distance matrices) averages {c.num(ALIGNMENT, base + ['mean_rsa'], 'f2')} "
          f"(significant against shuffled sentences at {c.num(ALIGNMENT, base + ['rsa_significant'], 'str')} "
          f"layer pairs); the emotion-centroid geometry correlates at r = "
          f"{c.num(ALIGNMENT, base + ['mean_emotion_geometry'], 'f2')} (significant against permuted labels at "
          f"{c.num(ALIGNMENT, base + ['emotion_geometry_significant'], 'str')}). Layer pairs beyond every null of "
          f"the mapped overlap: {c.num(ALIGNMENT, base + ['layer_pairs_beyond_all_nulls'], 'str')}.", c)
    if entry.get("best_layer_pair") is not None:
        doc.p(f"Best layer pair (overlap after the map minus the permuted-label null's upper quantile): "
              f"{c.num(ALIGNMENT, base + ['best_layer_pair'], 'str')}.", c)


class Figures:
    """The figures the report may show; `add` places one (if it exists) and remembers it for "Other figures"."""

    def __init__(self, doc: Doc, figures: dict[str, Path]):
        self.doc, self.figures, self.used = doc, figures, set()

    def add(self, name: str, alt: str) -> None:
        if name in self.figures:
            self.doc.img(name, alt)
            self.used.add(name)


def models_and_data_section(doc: Doc, m: dict[str, Any]) -> None:
    doc.h(2, "Models and data")
    if DATASET in m:
        c = Cite(m)
        per = ", ".join(f"{c.num(DATASET, ['counts', e, 'fit'], 'int')} fit + "
                        f"{c.num(DATASET, ['counts', e, 'test'], 'int')} test {e}" for e in m[DATASET]["counts"])
        doc.p(f"Sentences: {c.num(DATASET, ['n_rows'], 'int')} ({per}); "
              f"{c.num(DATASET, ['n_steering_prompts'], 'int')} neutral steering prompts and "
              f"{c.num(DATASET, ['n_real_world'], 'int')} real-world texts.", c)
        by_source = m[DATASET].get("counts_by_source") or {}
        if "goemotions" in by_source:
            c = Cite(m)
            k = ["counts_by_source", "goemotions"]
            per = ", ".join(f"{c.num(DATASET, k + [e, 'fit'], 'int')} + {c.num(DATASET, k + [e, 'test'], 'int')} {e}"
                            for e in by_source["goemotions"])
            doc.p(f"Real text: GoEmotions training-split Reddit comments (Creative Commons attribution licence, "
                  f"`data/goemotions/`), fit + test "
                  f"{per} (remorse as apology), beside the hand-written sentences; the judges train on "
                  f"{c.num(DATASET, ['n_judge_train'], 'int')} rows (every fit-split row and the GoEmotions rows "
                  "beyond the sentences). Every real-text figure below is measured on the GoEmotions test split, which nothing is "
                  "fitted on.", c)
    if ACTIVATIONS in m:
        c = Cite(m)
        models = m[ACTIVATIONS]["models"]
        real = [x for x in models if not x.endswith("__random-init")]
        desc = "; ".join(f"`{c.num(ACTIVATIONS, ['models', x], 'key')}` "
                         f"({c.num(ACTIVATIONS, ['models', x, 'n_layers'], 'int')} layers, d_model "
                         f"{c.num(ACTIVATIONS, ['models', x, 'd_model'], 'int')})" for x in real)
        nulls = ", ".join("`" + c.num(ACTIVATIONS, ["models", x], "key") + "`"
                          for x in models if x.endswith("__random-init"))
        doc.p(f"Models: {desc}." + (f" Random-initialised copies ({nulls}) serve as nulls." if nulls else ""), c)
    if STEERING in m:
        c = Cite(m)
        doc.p(f"Steering runs on `{c.num(STEERING, ['model'], 'str')}`; effects are measured with the offline "
              f"evaluators, primary metric `{c.num(STEERING, ['primary_metric'], 'str')}` (how far each can be "
              "trusted on real text: \"Judges on held-out text\").", c)


def probe_transfer_verdict(doc: Doc, m: dict[str, Any], model: str) -> None:
    """Hand-written -> real 4-way probe transfer against real -> real, at the best real -> real layer."""
    c = Cite(m)
    k = ["transfer", model, "sentence_end"]
    t = resolve(m, VECTORS, k)
    best = t["goal_probe_ratio"]["best_real_layer"]
    layer = ["probe", f"L{int(best):02d}"]
    ratio, recall = t["goal_probe_ratio"]["at_best_real_layer"], t["goal_neutral_recall"]["at_best_real_layer"]
    goal = resolve(m, VECTORS, ["transfer_goals"])
    met = ratio >= goal["probe_ratio"] and recall >= goal["neutral_recall"]
    doc.p(f"`{c.num(VECTORS, k[:2], 'key')}`: a four-way probe fit on hand-written sentences reaches balanced accuracy "
          f"{c.num(VECTORS, k + layer + ['hand_to_real_ba'], 'f2')} on held-out real comments at layer "
          f"{c.num(VECTORS, k + ['goal_probe_ratio', 'best_real_layer'], 'int')} (permuted-label null's upper quantile "
          f"{c.num(VECTORS, k + layer + ['hand_to_real_null_q95'], 'f2')}, p "
          f"{c.num(VECTORS, k + layer + ['hand_to_real_p'], 'p')}), against "
          f"{c.num(VECTORS, k + layer + ['real_to_real_ba'], 'f2')} for a probe fit on real comments: ratio "
          f"{c.num(VECTORS, k + ['goal_probe_ratio', 'at_best_real_layer'], 'f2')} (median over layers "
          f"{c.num(VECTORS, k + ['goal_probe_ratio', 'median_over_layers'], 'f2')}; goal >= "
          f"{c.num(VECTORS, ['transfer_goals', 'probe_ratio'], 'g')}), "
          f"neutral recall {c.num(VECTORS, k + ['goal_neutral_recall', 'at_best_real_layer'], 'f2')} (goal >= "
          f"{c.num(VECTORS, ['transfer_goals', 'neutral_recall'], 'g')}). " + ("**Verdict: the hand-written data transfers to real text.**" if met else
                                        "**Verdict: the hand-written data does not reach the transfer goal.**"), c)


def direction_transfer_verdict(doc: Doc, m: dict[str, Any], model: str, method: str, layers: list[int]) -> None:
    """The steering sweep's own directions (fit on every source) against permuted-label directions on held-out real
    text, at the sweep's layers: AUROC of the projection, emotion vs the other three classes."""
    k = ["transfer", model, "sentence_end", "own_directions_on_real", method]
    table = resolve(m, VECTORS, k)
    c = Cite(m)
    cells, fails = [], []
    for layer in layers:
        key = f"L{int(layer):02d}"
        if key not in table:
            continue
        for e, r in table[key].items():
            cells.append(f"{c.num(VECTORS, k + [key], 'key')} {e} {c.num(VECTORS, k + [key, e, 'auroc'], 'f2')} (null's upper quantile "
                         f"{c.num(VECTORS, k + [key, e, 'null_q95'], 'f2')}, p {c.num(VECTORS, k + [key, e, 'p'], 'p')})")
            if r["p"] >= resolve(m, VECTORS, ["transfer_goals", "direction_p"]):
                fails.append(f"{e} at {key}")
    if not cells:
        return
    verdict = ("**Verdict: every emotion's direction beats its permuted-label null at every sweep layer.**" if not fails
               else f"**Verdict: not specific beyond the null for {', '.join(fails)}.**")
    weak = any(r.get("null") == "eval_labels" for cells_of in table.values() for r in cells_of.values())
    null = ("its own scores under permuted evaluation labels (a weaker null: refitting this method on "
            "permuted labels is too slow)" if weak else "permuted-label directions")
    doc.p(f"`{c.num(VECTORS, k[:2], 'key')}`, direction method `{c.num(VECTORS, k, 'key')}` at the steering sweep's "
          f"layers, on held-out real comments (AUROC of the projection, emotion vs the other three classes, against "
          f"{null}; goal p < {c.num(VECTORS, ['transfer_goals', 'direction_p'], 'g')}): " + "; ".join(cells) + ". "
          + verdict, c)


def transfer_section(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    """Do the hand-written data and the directions hold on real text (GoEmotions test split, never fitted on)?"""
    transfer = m.get(VECTORS, {}).get("transfer") or {}
    if not transfer:
        return
    doc.h(2, "Real text: cross-source transfer")
    for model, entry in transfer.items():
        if "sentence_end" in entry and "goal_probe_ratio" in entry["sentence_end"]:
            probe_transfer_verdict(doc, m, model)
    sweep = m.get(STEERING, {})
    model, method = sweep.get("model"), sweep.get("direction", "vector")
    if model in transfer and "sentence_end" in transfer[model]:
        own = transfer[model]["sentence_end"].get("own_directions_on_real", {})
        for name in dict.fromkeys([method, *own]):
            if name in own:
                direction_transfer_verdict(doc, m, model, name, sweep.get("grid", {}).get("layers", []))
    figs.add("vectors__probe_transfer.png", "4-way probe balanced accuracy across sources, per layer")
    figs.add("vectors__transfer_auroc.png", "Hand-written -> real direction AUROC per method (band: permuted-label null)")


def judges_section(doc: Doc, m: dict[str, Any]) -> None:
    """Each judge's balanced accuracy on held-out hand-written text next to real text (GoEmotions test split),
    with per-class recall: in-domain accuracy alone is no evidence that a judge works."""
    if JUDGES not in m:
        return
    doc.h(2, "Judges on held-out text")
    doc.p("Each evaluator's own decision rule, scored on test-split rows it was never trained on: hand-written "
          "sentences (in-domain) and GoEmotions Reddit comments (real text): balanced accuracy (BA) with its "
          "bootstrap confidence interval, where chance is one class in four.")
    for name, entry in m[JUDGES].items():
        if not isinstance(entry, dict) or not ({"in_domain", "real_text", "skipped"} & set(entry)):
            continue
        c = Cite(m)
        if entry.get("skipped"):
            doc.p(f"`{c.num(JUDGES, [name], 'key')}`: not validated ({c.num(JUDGES, [name, 'skipped'], 'str')}).", c)
            continue
        parts = []
        for portion, label in (("in_domain", "in-domain"), ("real_text", "real text")):
            if portion not in entry:
                continue
            k = [name, portion]
            recall = ", ".join(f"{e} {c.num(JUDGES, k + ['recall', e], 'f2')}" for e in entry[portion]["recall"])
            parts.append(f"{label} BA {c.num(JUDGES, k + ['balanced_accuracy'], 'f2')} "
                         f"[{c.num(JUDGES, k + ['ci', 0], 'f2')}, {c.num(JUDGES, k + ['ci', 1], 'f2')}] "
                         f"(recall {recall}; n {c.num(JUDGES, k + ['n', 'neutral'], 'int')} per class)")
        doc.p(f"`{c.num(JUDGES, [name], 'key')}`: " + "; ".join(parts) + ".", c)
    ba, low = m[JUDGES].get("goal_embedding_real_ba"), m[JUDGES].get("goal_embedding_min_recall")
    if ba is not None and low is not None:
        c = Cite(m)
        goal = m[JUDGES]["goals"]
        met = ba >= goal["embedding_real_ba"] and low >= goal["embedding_min_recall"]
        doc.p(f"Embedding judge on real text: BA {c.num(JUDGES, ['goal_embedding_real_ba'], 'f2')} (goal >= "
              f"{c.num(JUDGES, ['goals', 'embedding_real_ba'], 'g')}), lowest class recall "
              f"{c.num(JUDGES, ['goal_embedding_min_recall'], 'f2')} (goal >= "
              f"{c.num(JUDGES, ['goals', 'embedding_min_recall'], 'g')}). " + ("**Verdict: the embedding judge holds on real text.**" if met else
                                               "**Verdict: the embedding judge does not reach the real-text goal.**"),
              c)


def directions_section(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    if VECTORS not in m:
        return
    doc.h(2, "Emotion directions")
    for model, entry in m[VECTORS]["models"].items():
        if "sentence_end" not in entry:
            continue
        c = Cite(m)
        k = ["models", model, "sentence_end"]
        acc = entry["sentence_end"].get("probe_accuracy_at_best")
        shuf = entry["sentence_end"].get("shuffled_accuracy_at_best")
        ok = acc is not None and shuf is not None and acc > shuf
        doc.p(f"`{c.num(VECTORS, ['models', model], 'key')}`: a linear probe separates the four classes at the "
              f"sentence end with test accuracy {c.num(VECTORS, k + ['probe_accuracy_at_best'], 'f2')} at layer "
              f"{c.num(VECTORS, k + ['best_layer'], 'int')}; the same probe on shuffled labels reaches "
              f"{c.num(VECTORS, k + ['shuffled_accuracy_at_best'], 'f2')}. "
              + ("**Verdict: emotion is linearly decodable beyond the shuffled-label null.**" if ok else
                 "**Verdict: not decodable beyond the shuffled-label null.**"), c)
    figs.add("vectors__probe_accuracy.png", "Probe accuracy per layer (shuffled-label null alongside)")
    figs.add("vectors__norms.png", "Emotion vector norms per layer")


def k_selection_verdict(doc: Doc, m: dict[str, Any], pair: str, entry: dict[str, Any]) -> None:
    """How many layer pairs support each k beyond the null band, and the verdict on the selected k."""
    c = Cite(m)
    base = ["alignment_k", "pairs", pair]
    n_pairs = c.num(STATS, base + ["n_layer_pairs"], "int")
    text = (f"k-selection `{c.num(STATS, base + ['a'], 'str')}` -> `{c.num(STATS, base + ['b'], 'str')}`: "
            f"the mapped overlap exceeds the null band (the stricter upper quantile of random subspaces and "
            f"permuted emotion labels) at ")
    text += ", ".join(f"{c.num(STATS, base + ['by_k', kk, 'n_layer_pairs_supported'], 'int')} of {n_pairs} layer "
                      f"pairs at k = {kk.split('=')[1]}"
                      for kk in sorted(entry["by_k"], key=lambda s: int(s.split("=")[1]))) + ". "
    for kk in entry["by_k"]:  # k values come from the keys of by_k: cite them as keys
        c.num(STATS, base + ["by_k", kk], "key")
    k_sel, n_sel, n_all = entry["k_selected"], entry["n_layer_pairs_selecting"], entry["n_layer_pairs"]
    if k_sel < 0:
        text += "**Verdict: no subspace dimension is supported beyond the nulls.**"
    elif 2 * n_sel < n_all:
        text += (f"**Verdict: no dimension is consistently supported**: the most frequent elbow, k = "
                 f"{c.num(STATS, base + ['k_selected'], 'int')}, holds at only "
                 f"{c.num(STATS, base + ['n_layer_pairs_selecting'], 'int')} of {n_pairs} layer pairs (largest "
                 f"excess {c.num(STATS, base + ['max_excess'], 'f3')}).")
    else:
        text += (f"**Verdict: a shared subspace of dimension k = {c.num(STATS, base + ['k_selected'], 'int')}"
                 f"** is supported (elbow at {c.num(STATS, base + ['n_layer_pairs_selecting'], 'int')} of "
                 f"{n_pairs} layer pairs).")
    doc.p(text, c)


def shared_subspace_section(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    if ALIGNMENT not in m and not (STATS in m and "alignment_k" in m[STATS]):
        return
    doc.h(2, "Shared subspace across models")
    for pair in m.get(ALIGNMENT, {}).get("pairs") or {}:
        a, b = pair.split("->")
        if a != b:
            c = Cite(m)
            doc.p(f"Alignment stage verdict: {c.num(ALIGNMENT, ['pairs', pair, 'verdict'], 'str')}", c)
    for pair, entry in (m.get(STATS, {}).get("alignment_k", {}).get("pairs") or {}).items():
        if not entry["self_pair"]:
            k_selection_verdict(doc, m, pair, entry)
    figs.add("alignment__ksweep.png", "k-sweep: overlap after the map against its null bands")
    figs.add("statistics__k_selection.png",
             "k-selection: overlap minus the null band per layer pair (supported where > 0)")
    for name in sorted(figs.figures):
        if name.startswith("alignment__cka_grid"):
            figs.add(name, "Layer x layer linear CKA")


def confirm_design(doc: Doc, m: dict[str, Any]) -> None:
    """How the confirmed verdicts were reached: the two splits, the budget, the random directions and the power."""
    c, d = Cite(m), ["design"]
    doc.p(f"Each emotion's setting was chosen on {c.num(CONFIRM, d + ['n_selection_prompts'], 'int')} selection "
          f"prompts (stage `steering_sweep`: the largest `{c.num(CONFIRM, ['primary_metric'], 'str')}` effect whose "
          f"NLL rise stays within {c.num(STEERING, ['nll_budget'], 'g')} nats/token and whose degenerate share rises "
          f"by at most {c.num(STEERING, ['degenerate_budget'], 'g')}) and confirmed on "
          f"{c.num(CONFIRM, d + ['n_prompts'], 'int')} other prompts (disjoint: "
          f"`{c.num(CONFIRM, d + ['splits_disjoint'], 'str')}`) against "
          f"{c.num(CONFIRM, d + ['n_random'], 'int')} equal-norm random directions in the same setting "
          f"({c.num(CONFIRM, d + ['random_per_prompt'], 'int')} per prompt). The test is paired by prompt "
          f"(emotion effect minus the mean of the prompt's random effects; sign-flip permutation p, BCa CI, "
          f"Benjamini-Hochberg across emotions and picks). Power at d_z = "
          f"{c.num(CONFIRM, d + ['power', 'd_z'], 'g')}: {c.num(CONFIRM, d + ['power', 'achieved'], 'f2')} (n = "
          f"{c.num(CONFIRM, d + ['power', 'required_n'], 'int')} would give power "
          f"{c.num(STATS, ['power', 'power'], 'g')}).", c)


def _eq(shown: str) -> str:
    """"= 0.042" or "< 0.001": a formatted p-value after its name."""
    return shown if shown.startswith("<") else f"= {shown}"


def _with_ci(c: Cite, file: str, base: list, names: tuple[str, str, str]) -> str:
    """"+0.123 [+0.045, +0.201]": a signed value and its interval, each cited."""
    value, low, high = (c.num(file, base + [n], "signed3") for n in names)
    return f"{value} [{low}, {high}]"


def confirmed_verdict(doc: Doc, m: dict[str, Any], emotion: str, pick: str) -> None:
    """One emotion's pick: where it steers, by how much beyond random, at what fluency cost, and its verdict."""
    c, k = Cite(m), ["verdicts", emotion, pick]
    v = m[CONFIRM]["verdicts"][emotion][pick]
    setting = v["setting"]
    if v.get("same_as"):
        doc.p(f"**{emotion}**, {PICK_NAMES.get(pick, pick)}: the same cell as "
              f"{PICK_NAMES.get(v['same_as'], v['same_as'])} (`{c.num(CONFIRM, k + ['same_as'], 'str')}`), run "
              f"once; its verdict above holds for both.", c)
        return
    text = (f"**{emotion}**, {PICK_NAMES.get(pick, pick)} (`{c.num(CONFIRM, k + ['setting'], 'str')}`: "
            f"{c.num(CONFIRM, ['settings', setting, 'description'], 'str')}; layer "
            f"{c.num(CONFIRM, k + ['layer'], 'int')}, alpha {c.num(CONFIRM, k + ['alpha'], 'g')}): "
            f"`{c.num(CONFIRM, k + ['metric'], 'str')}` rate {c.num(CONFIRM, k + ['rate'], 'f3')} vs "
            f"{c.num(CONFIRM, k + ['baseline_rate'], 'f3')} unsteered and {c.num(CONFIRM, k + ['random_rate'], 'f3')} "
            f"under random directions; effect beyond random "
            f"{_with_ci(c, CONFIRM, k, ('effect_vs_random', 'ci_low', 'ci_high'))}, "
            f"p {_eq(c.num(CONFIRM, k + ['p'], 'p'))}, q {_eq(c.num(CONFIRM, k + ['q'], 'p'))}, d_z = "
            f"{c.num(CONFIRM, k + ['d_z'], 'f2')} (n = {c.num(CONFIRM, k + ['n'], 'int')} prompts, "
            f"{c.num(CONFIRM, k + ['n_random'], 'int')} random directions; a share of "
            f"{c.num(CONFIRM, k + ['random_beats'], 'f2')} of them tie or beat the emotion's mean on the few prompts "
            f"each ran on, ties at zero included). Fluency: NLL "
            f"{_with_ci(c, CONFIRM, k, ('nll_delta', 'nll_ci_low', 'nll_ci_high'))} nats/token")
    if v.get("degenerate_delta") is not None:
        text += f", degenerate share {c.num(CONFIRM, k + ['degenerate_delta'], 'signed3')}"
    budget = "within" if v["within_budget"] else "outside"
    text += (f" ({budget} the budget). **Verdict: {c.num(CONFIRM, k + ['verdict'], 'str')}"
             f"{'' if v['steers'] else ' beyond equal-norm random directions'}.**")
    doc.p(text + dose_text(c, m, emotion, pick), c)


def dose_text(c: Cite, m: dict[str, Any], emotion: str, pick: str) -> str:
    """The dose-response of one pick on the primary metric: its alphas, trend slope, monotonicity, and -alpha."""
    primary = m[CONFIRM]["primary_metric"]
    trend = m[CONFIRM].get("dose_response", {}).get(emotion, {}).get(pick, {}).get(primary)
    if not trend:
        return ""
    t = ["dose_response", emotion, pick, primary]
    first, last = (c.num(CONFIRM, t + ["alphas", i], "g") for i in (0, len(trend["alphas"]) - 1))
    out = (f" Dose-response over alpha {first} .. {last}: slope "
           f"{_with_ci(c, CONFIRM, t, ('slope', 'slope_ci_low', 'slope_ci_high'))} per unit alpha, p "
           f"{_eq(c.num(CONFIRM, t + ['p'], 'p'))}, monotone: `{c.num(CONFIRM, t + ['monotone'], 'str')}`")
    if trend.get("effect_at_most_negative") is not None:
        out += f"; at the most negative alpha the effect is {c.num(CONFIRM, t + ['effect_at_most_negative'], 'signed3')}"
    return out + "."


def examples_block(doc: Doc, m: dict[str, Any], emotion: str) -> None:
    """A few confirmation prompts continued unsteered, steered at each pick, and along a random direction."""
    verdicts = m[CONFIRM].get("verdicts", {}).get(emotion, {})
    for pick, rows in sorted(m[CONFIRM].get("examples", {}).get(emotion, {}).items()):
        if verdicts.get(pick, {}).get("same_as"):
            continue  # the twin pick's continuations are the same text
        for i in range(len(rows)):
            c, k = Cite(m), ["examples", emotion, pick, i]
            doc.p(f"*{emotion}, {pick}*: \"{c.num(CONFIRM, k + ['prompt'], 'str')}\" | unsteered: "
                  f"\"{c.num(CONFIRM, k + ['unsteered'], 'str')}\" | steered: \"{c.num(CONFIRM, k + ['steered'], 'str')}\" | "
                  f"random direction: \"{c.num(CONFIRM, k + ['random'], 'str')}\"", c)


def confirm_section(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    """Can the model be steered? Per emotion the confirmed verdict of the seeds' setting and of the best setting."""
    if CONFIRM not in m:
        return
    doc.h(2, "Steering: confirmed verdicts")
    confirm_design(doc, m)
    for emotion in sorted(m[CONFIRM]["verdicts"]):
        for pick in ("seeds", "frontier"):
            if pick in m[CONFIRM]["verdicts"][emotion]:
                confirmed_verdict(doc, m, emotion, pick)
    for emotion, g in sorted(m[CONFIRM].get("goal", {}).items()):
        c, k = Cite(m), ["goal", emotion]
        doc.p(f"Goal for **{emotion}**: a confirmed `{c.num(CONFIRM, ['primary_metric'], 'str')}` rate of at least "
              f"{c.num(CONFIRM, k + ['target_rate'], 'f2')} within the fluency budget. Best setting: rate "
              f"{c.num(CONFIRM, k + ['rate'], 'f3')}, within budget `{c.num(CONFIRM, k + ['within_budget'], 'str')}`, "
              f"beyond random `{c.num(CONFIRM, k + ['steers'], 'str')}`: **goal met: "
              f"`{c.num(CONFIRM, k + ['met'], 'str')}`**.", c)
    figs.add("steering_confirm__dose_response.png", "Dose-response on the confirmation prompts (0 = unsteered)")
    figs.add("steering_confirm__random_vs_emotion.png",
             "Each random direction's mean effect (dots) against the emotion direction's (bar)")
    figs.add("steering_confirm__real_world.png", "Real-world texts before and after steering (paired)")
    doc.h(3, "What steering does to the text")
    for emotion in sorted(m[CONFIRM].get("examples", {})):
        examples_block(doc, m, emotion)


def sweep_section(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    """The selection sweep (exploratory, selection split): per setting and emotion the best cell within budget,
    and the statistics stage's largest sweep effect per emotion, its adjusted p covering the whole sweep."""
    sweep = m.get(STEERING, {})
    headline = m.get(STATS, {}).get("headline", {}).get("steering_sweep", {})
    if "best_by_setting" not in sweep and not headline:
        return
    doc.h(2, "Steering sweep (selection split, exploratory)")
    doc.p("Every setting over its layers and alphas on the selection prompts; per setting and emotion the best cell "
          "within the fluency budget. These effects are biased upward by the choice: only the confirmed verdicts "
          "above are results.")
    for setting, per in sorted(sweep.get("best_by_setting", {}).items()):
        c = Cite(m)
        parts = []
        for emotion in sorted(per):
            k = ["best_by_setting", setting, emotion]
            parts.append(f"{emotion} {c.num(STEERING, k + ['effect'], 'signed3')} at layer "
                         f"{c.num(STEERING, k + ['layer'], 'int')}, alpha {c.num(STEERING, k + ['alpha'], 'g')} "
                         f"(NLL {c.num(STEERING, k + ['nll_delta'], 'signed3')}, within budget: "
                         f"`{c.num(STEERING, k + ['within_budget'], 'str')}`)")
        doc.p(f"`{c.num(STEERING, ['settings', setting, 'name'], 'str')}` "
              f"({c.num(STEERING, ['settings', setting, 'description'], 'str')}): " + "; ".join(parts) + ".", c)
    for emotion in headline:
        effect_verdict(doc, m, "steering_sweep", emotion, "steering sweep")
    for name in sorted(figs.figures):
        if name.startswith("steering_sweep__heatmap_"):
            figs.add(name, "Layer x alpha effect per emotion; hatched: within the equal-norm random band")
    figs.add("steering_sweep__frontier.png", "Effect vs fluency per setting, the budget, and the peers' points")
    figs.add("steering_sweep__effect_vs_alpha.png", "Effect vs alpha per setting and layer")
    figs.add("statistics__steering_sweep_d.png", "Cohen's d with bootstrap CIs; stars: BH-significant")


def steering_sections(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    headline = m.get(STATS, {}).get("headline", {})
    confirm_section(doc, m, figs)
    sweep_section(doc, m, figs)
    if "steering" in headline:
        doc.h(2, "Single-alpha steering")
        doc.p("The steering vector at one alpha on neutral prompts (prompt-only patching) against equal-norm random "
              "directions; the variants (iterative patching, emotion-token vectors, real-world texts, swaps) are in "
              "`results/statistics/effects.parquet`.")
        for emotion in headline["steering"]:
            effect_verdict(doc, m, "steering", emotion, "single alpha")
    for family in headline:
        if family not in ("steering_sweep", "steering", "steering_confirm", "steering_confirm_other"):
            doc.h(2, f"Effects: {family}")
            for emotion in headline[family]:
                effect_verdict(doc, m, family, emotion, family)


def testing_and_power_section(doc: Doc, m: dict[str, Any], figs: Figures) -> None:
    if STATS not in m:
        return
    doc.h(2, "Multiple testing and power")
    for family in m[STATS]["families"]:
        c = Cite(m)
        base = ["families", family]
        doc.p(f"`{c.num(STATS, base, 'key')}`: {c.num(STATS, base + ['n_effects'], 'int')} effects "
              f"({c.num(STATS, base + ['n_vs_null'], 'int')} against a matching null, "
              f"{c.num(STATS, base + ['n_vs_0'], 'int')} against zero); "
              f"{c.num(STATS, base + ['n_significant'], 'int')} significant after Benjamini-Hochberg at "
              f"{c.num(STATS, ['settings', 'fdr_alpha'], 'g')} (smallest p_adj "
              f"{c.num(STATS, base + ['min_p_adj'], 'p')}). Median n {c.num(STATS, base + ['median_n'], 'g')}"
              f"; the median design detects |d| >= {c.num(STATS, base + ['median_mde_d'], 'f2')} at power "
              f"{c.num(STATS, ['power', 'power'], 'g')}.", c)
    c = Cite(m)
    pw = m[STATS]["power"]
    needs = "; ".join(f"{c.num(STATS, ['power', 'n_per_group_two_sample', key], 'int')} per group "
                      f"(two-sample) or {c.num(STATS, ['power', 'n_one_sample', key], 'int')} (one-sample) for "
                      f"d = {key.split('=')[1]}" for key in pw["n_per_group_two_sample"])
    for key in pw["n_per_group_two_sample"]:
        c.num(STATS, ["power", "n_per_group_two_sample", key], "key")
    doc.p(f"Power analysis (power {c.num(STATS, ['power', 'power'], 'g')}, two-sided alpha "
          f"{c.num(STATS, ['power', 'alpha'], 'g')}): {needs}.", c)
    figs.add("statistics__pvalues.png", "Permutation p-values per family (flat when there are no effects)")


def other_figures_section(doc: Doc, figs: Figures) -> None:
    others = [n for n in sorted(figs.figures) if n not in figs.used]
    if others:
        doc.h(2, "Other figures")
        for name in others:
            figs.add(name, name[:-4].replace("__", " / "))


def reproducibility_section(doc: Doc, repro: tuple[str, str], env: str) -> None:
    doc.h(2, "Reproducibility")
    doc.p("Built by `dvc repro report` from the metrics and plots of the stages below, nothing else. Rebuild: "
          "`dvc repro`; compare two experiments: `dvc exp diff`, `dvc metrics diff`, `dvc plots diff` (see the "
          "README). Upstream stages as recorded in `dvc.lock` (code, data and outs by md5; metrics files omitted: "
          "their numbers are the report's own). No git revision is embedded, so the same inputs give the same "
          "bytes: the commit is the one whose `dvc.lock` lists this report's md5.")
    doc.pre(repro[0])
    doc.p("Params the upstream stages ran with (from `dvc.lock`):")
    doc.pre(repro[1])
    doc.p("Software:")
    doc.pre(env)


def measurements_section(doc: Doc, notes: str) -> None:
    """Hand-recorded measurements (benchmarks, GPU runs, readings of past default runs) from `MEASUREMENTS`:
    quoted as written, under a heading that says they are not recomputed by this run (so they sit after the
    reproducibility footer, outside the cited-numbers body)."""
    if not notes.strip():
        return
    doc.h(2, f"Recorded measurements (from `{MEASUREMENTS}`, not recomputed by this run)")
    for para in notes.strip().split("\n\n"):
        if para.startswith("```"):
            doc.pre(para.strip("`\n"))
        elif para.startswith("#"):
            level, _, text = para.partition(" ")
            doc.h(min(len(level) + 2, 4), text)
        else:
            doc.p(" ".join(para.split()))


def build(m: dict[str, Any], figures: dict[str, Path], repro: tuple[str, str], env: str, notes: str = "") -> Doc:
    """The report, one section per phase; each section shows only what its metrics hold."""
    doc = Doc()
    figs = Figures(doc, figures)
    doc.h(1, "Emotion circuits: report")
    doc.h(2, "Question")
    doc.p(QUESTION)
    llm_pair_lead(doc, m, figs.add)
    models_and_data_section(doc, m)
    judges_section(doc, m)
    directions_section(doc, m, figs)
    transfer_section(doc, m, figs)
    shared_subspace_section(doc, m, figs)
    steering_sections(doc, m, figs)
    testing_and_power_section(doc, m, figs)
    other_figures_section(doc, figs)
    reproducibility_section(doc, repro, env)
    measurements_section(doc, notes)
    return doc


def write(doc: Doc, figures: dict[str, Path], out: Path, title: str = "Emotion circuits: report") -> None:
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    used = {b[1] for b in doc.blocks if b[0] == "img"}
    for name in sorted(used):
        shutil.copyfile(figures[name], out / "figures" / name)
    (out / "index.md").write_text(doc.markdown(), encoding="utf-8")
    (out / "index.html").write_text(doc.html(figures, title), encoding="utf-8")
