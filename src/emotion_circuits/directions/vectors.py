"""Phase 3: emotion directions (mean emotion - mean neutral), subspaces and linear probes.

All functions take activation arrays [n_rows, d_model] and label arrays and return arrays, so they are the same
for every model, layer, hook point and position mode.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.geometry import cosine_table, emotion_vectors, layer_pairs, principal_subspace
from emotion_circuits.directions.methods import METHODS
from emotion_circuits.model.site import Site


def vector_norms(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L1, L2) norm of each row."""
    return np.abs(vectors).sum(axis=1), np.linalg.norm(vectors, axis=1)


def four_way_probe():
    """The project's probe recipe (unfitted): standardised features, L2 logistic regression, C = 0.1. Shared by the
    accuracy probes here and the cross-source probe transfer (`directions.transfer`)."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))


def probe_accuracy(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   seed: int) -> tuple[float, float]:
    """Held-out accuracy of a standardised logistic-regression probe, and of the same probe on shuffled labels."""
    def fit_score(labels: np.ndarray) -> float:
        return float(four_way_probe().fit(x_fit, labels).score(x_test, y_test))

    shuffled = np.random.default_rng(seed).permutation(y_fit)
    return fit_score(y_fit), fit_score(shuffled)


def probe_suite(x: np.ndarray, labels: np.ndarray, split: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    """{task: (accuracy, shuffled-label accuracy)} for the 4-way task and each emotion-vs-neutral task."""
    fit, test = split == "fit", split == "test"
    # One BLAS thread: on these small problems OpenBLAS threading overhead makes lbfgs ~6x slower.
    with threadpool_limits(limits=1):
        out = {"4way": probe_accuracy(x[fit], labels[fit], x[test], labels[test], seed)}
        for emotion in EMOTIONS:
            keep = np.isin(labels, [emotion, REFERENCE])
            f, t = fit & keep, test & keep
            out[f"{emotion}_vs_neutral"] = probe_accuracy(x[f], labels[f], x[t], labels[t], seed)
    return out


def method_tensors(x_fit: np.ndarray, labels_fit: np.ndarray, site: Site) -> dict[str, np.ndarray]:
    """What every registered direction method needs stored beyond the vectors and PCA axes (e.g. probe weights),
    fitted on the fit split: a new method's tensors reach the file without touching this stage."""
    out: dict[str, np.ndarray] = {}
    for _, method in METHODS.items():
        out.update(method.stored(x_fit, labels_fit, site))
    return out


def analyse_model(model: str, position: str, acts: dict[str, np.ndarray], labels: np.ndarray, split: np.ndarray,
                  n_components: int, probe_hooks: tuple[str, ...], seed: int):
    """Everything the vectors stage computes for one model and position mode.

    Vectors and subspaces use the fit split only, so probe test accuracy stays honest. Returns
    (tensors {key: array}, norms rows, cosine rows, probe rows, pca rows).
    """
    fit = split == "fit"
    tensors: dict[str, np.ndarray] = {}
    norms, cosines, probes, pcas = [], [], [], []
    for site in sorted(Site.parse(name) for name in acts):
        x = acts[site.name]
        base = {"model": model, "position": position, "hook": site.hook, "layer": site.layer}
        vecs = emotion_vectors(x[fit], labels[fit])
        tensors[site.key("emotion_vectors")] = vecs.astype(np.float32)
        tensors.update(method_tensors(x[fit], labels[fit], site))
        l1, l2 = vector_norms(vecs)
        neutral_norm = float(np.linalg.norm(x[fit & (labels == REFERENCE)], axis=1).mean())
        for e, a, b in zip(EMOTIONS, l1, l2):
            norms.append({**base, "emotion": e, "l1": float(a), "l2": float(b), "mean_residual_l2": neutral_norm})
        table = cosine_table(vecs)
        for i, a in enumerate(EMOTIONS):
            for j, b in enumerate(EMOTIONS):
                cosines.append({**base, "a": a, "b": b, "cosine": float(table[i, j])})
        neutral_mean = x[fit & (labels == REFERENCE)].mean(axis=0)
        groups = {e: labels == e for e in EMOTIONS} | {"emotional": np.isin(labels, EMOTIONS)}
        for group, rows in groups.items():
            xs = x[fit & rows]
            ref = xs.mean(axis=0) - neutral_mean
            comps, ratio = principal_subspace(xs, n_components, xs.mean(axis=0), ref)
            tensors[site.key("pca", group, "components")] = comps.astype(np.float32)
            tensors[site.key("pca", group, "explained_variance_ratio")] = ratio.astype(np.float32)
            pcas.append({**base, "group": group, "evr_top1": float(ratio[0]), "evr_topk": float(ratio.sum()),
                         "pc1_cos_with_vector": float(abs(comps[0] @ ref) / max(np.linalg.norm(ref), 1e-12))})
        if site.hook in probe_hooks:
            for task, (acc, shuffled) in probe_suite(x, labels, split, seed).items():
                probes.append({**base, "task": task, "accuracy": acc, "shuffled_accuracy": shuffled})
    return tensors, norms, cosines, probes, pcas


def _layer_key(layer: int) -> str:
    return f"L{layer:02d}"


def summarise(frames: dict, tensors: dict, models) -> dict:
    """Headline metrics per model and position: probe accuracy by layer, best layer, norms, cosines.

    Per-layer numbers are resid_post (resid_pre(L+1) is the same tensor); keys are stable for `dvc metrics diff`.
    """
    probes, norms, cosines = frames["probes"], frames["norms"], frames["cosines"]
    out: dict = {}
    for (model, position), group in norms.groupby(["model", "position"], sort=True):
        entry: dict = {}
        post = group[group["hook"] == "resid_post"]
        entry["l2_norm"] = {e: {_layer_key(r.layer): r.l2 for r in post[post["emotion"] == e].itertuples()}
                            for e in EMOTIONS}
        pr = probes[(probes["model"] == model) & (probes["position"] == position)]
        four = pr[pr["task"] == "4way"].sort_values(["accuracy", "layer"], ascending=[False, True])
        if len(four):
            best = four.iloc[0]
            entry["best_layer"] = int(best.layer)
            entry["best_probe_hook"] = str(best.hook)
            entry["probe_accuracy_at_best"] = float(best.accuracy)
            entry["shuffled_accuracy_at_best"] = float(best.shuffled_accuracy)
            entry["probe_accuracy_4way"] = {_layer_key(r.layer): r.accuracy for r in
                                            pr[(pr["task"] == "4way") & (pr["hook"] == best.hook)].itertuples()}
            at_best = pr[(pr["layer"] == best.layer) & (pr["hook"] == best.hook)]
            entry["binary_accuracy_at_best"] = {r.task: r.accuracy for r in at_best.itertuples() if r.task != "4way"}
            cos = cosines[(cosines["model"] == model) & (cosines["position"] == position) &
                          (cosines["layer"] == best.layer) & (cosines["hook"] == "resid_post") &
                          (cosines["a"] < cosines["b"])]
            entry["cosine_at_best_layer"] = {f"{r.a}|{r.b}": r.cosine for r in cos.itertuples()}
        out.setdefault(model, {})[position] = entry
    cross: dict = {}
    models = list(models)
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            for position in sorted({pos for (_, pos) in tensors}):
                ta, tb = tensors.get((a, position)), tensors.get((b, position))
                if ta is None or tb is None:
                    continue
                va, vb = resid_post_vectors(ta), resid_post_vectors(tb)
                width_a, width_b = next(iter(va.values())).shape[1], next(iter(vb.values())).shape[1]
                key = f"{a}|{b}|{position}"
                la, lb = len(va), len(vb)
                if width_a != width_b:  # coordinates differ: compare each model's own emotion x emotion geometry
                    cross[key] = geometry_comparison(va, vb, layer_pairs(la, lb, 6))
                    continue
                cross[key] = {f"L{x:02d}|L{y:02d}": {e: float(cosine_table(
                    va[_post_key(x)][[n]], vb[_post_key(y)][[n]])[0, 0]) for n, e in enumerate(EMOTIONS)}
                    for x, y in layer_pairs(la, lb, 6)}
    return {"models": out, "cross_model_cosine": cross}


def _post_key(layer: int) -> str:
    return Site(layer, "resid_post").key("emotion_vectors")


def resid_post_vectors(tensors: dict) -> dict:
    """The resid_post emotion vectors of one vectors file ({key: [E, d]}): per-layer numbers use resid_post."""
    return {k: v for k, v in tensors.items()
            if Site.is_key(k) and Site.split_key(k)[1] == "emotion_vectors" and Site.split_key(k)[0].hook == "resid_post"}


def geometry_comparison(va: dict, vb: dict, pairs) -> dict:
    """Width-free counterpart of the cross-model cosine: per layer pair, each model's own cosines between its
    emotion vectors (gratitude|anger, ...) side by side and their mean absolute difference. Coordinates never
    meet, so any two widths compare; the alignment stage tests the same idea against permutation nulls (RSA and
    emotion-centroid geometry)."""
    out: dict = {"method": "each model's emotion x emotion cosine table, compared entry by entry (any widths)"}
    for x, y in pairs:
        ca, cb = cosine_table(va[_post_key(x)]), cosine_table(vb[_post_key(y)])
        iu = np.triu_indices(len(EMOTIONS), 1)
        names = [f"{EMOTIONS[i]}|{EMOTIONS[j]}" for i, j in zip(*iu)]
        out[f"L{x:02d}|L{y:02d}"] = {"a": dict(zip(names, map(float, ca[iu]))), "b": dict(zip(names, map(float, cb[iu]))),
                                     "mean_abs_difference": float(np.abs(ca[iu] - cb[iu]).mean())}
    return out


def write_plots(frames: dict, live) -> None:
    """Plot tables for `dvc plots` (x = layer) and PNG figures through the stage's `reporting.live.StageLive`:
    norms, probe accuracy, cosine heatmaps."""
    from emotion_circuits.reporting import plots

    png_dir = live.figures
    norms = frames["norms"][frames["norms"]["hook"] == "resid_post"].copy()
    norms["series"] = norms["model"] + " / " + norms["position"]
    for (model, position), g in norms.groupby(["model", "position"], sort=True):
        wide = g.pivot(index="layer", columns="emotion", values="l2")[list(EMOTIONS)].reset_index()
        live.log_table(f"norms/{model}_{position}", wide, "layer", list(EMOTIONS),
                       y_label="emotion vector L2 norm (resid_post)")
    plots.lines(norms, "layer", "l2", "emotion", png_dir / "norms.png", "emotion vector L2 norm",
                facet="series")
    probes = frames["probes"].copy()
    if len(probes):
        probes["series"] = probes["model"] + " / " + probes["position"]
        for (model, position), g in probes.groupby(["model", "position"], sort=True):
            tasks = ["4way", *[f"{e}_vs_neutral" for e in EMOTIONS]]
            wide = g.pivot_table(index="layer", columns="task", values="accuracy").reindex(columns=tasks).reset_index()
            wide["shuffled_4way"] = g[g["task"] == "4way"].set_index("layer")["shuffled_accuracy"].reindex(
                wide["layer"]).to_numpy()
            live.log_table(f"probes/{model}_{position}", wide, "layer", [*tasks, "shuffled_4way"],
                           y_label="probe test accuracy (shuffled_4way = label-shuffled null)")
        four = probes[probes["task"] == "4way"].copy()
        four = pd.concat([four.assign(kind="probe"),
                          four.assign(kind="shuffled labels", accuracy=four["shuffled_accuracy"])])
        plots.lines(four, "layer", "accuracy", "kind", png_dir / "probe_accuracy.png", "4-way probe accuracy (test)",
                    facet="series", hline=0.25)
    cos = frames["cosines"]
    for (model, position), g in cos[cos["hook"] == "resid_post"].groupby(["model", "position"], sort=True):
        mid = sorted(g["layer"].unique())[len(g["layer"].unique()) // 2]
        m = g[g["layer"] == mid].pivot(index="a", columns="b", values="cosine").loc[list(EMOTIONS), list(EMOTIONS)]
        plots.heatmap(m.to_numpy(), EMOTIONS, EMOTIONS, png_dir / f"cosines_{model}_{position}.png",
                      f"{model} {position} layer {mid}: cosine of emotion vectors", vmin=-1, vmax=1)
