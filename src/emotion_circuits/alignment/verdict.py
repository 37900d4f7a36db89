"""The alignment stage's answer: the bar for "the same emotion subspace" (beyond every registered null), the
plain-language verdict per ordered model pair, and metrics/alignment.json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emotion_circuits.alignment.nulls import NULLS
from emotion_circuits.alignment.pairs import model_pair_summaries, pair_name


def nulls_beaten(row: dict[str, Any]) -> dict[str, bool]:
    """Per registered null that enters the verdict and applies to this row: does the overlap exceed it (its 95%
    quantile, or its baseline value)?"""
    out = {}
    for name, null in NULLS.items():
        bar = null.threshold(row)
        if null.in_verdict and bar is not None:
            out[name] = bool(row["overlap_after"] > bar)
    return out


def passes_all_nulls(row: dict[str, Any]) -> bool:
    """The bar for 'same emotion subspace': above every registered null (`nulls_beaten`), with a map that
    generalises to held-out neutral sentences."""
    return bool(all(nulls_beaten(row).values()) and not row["interpolation"] and row["map_r2_heldout"] > 0)


def verdict(a: str, b: str, rows: list[dict[str, Any]], k: int) -> str:
    """Plain-language answer for one ordered pair, from the primary variant's rows at k (one per layer pair)."""
    n = len(rows)
    if a == b:
        low = min(r["overlap_after"] for r in rows)
        return (f"self-alignment sanity check ({a}, k={k}): minimum overlap after the map {low:.3f} over {n} layers "
                f"({'ok' if low > 0.95 else 'FAILED: expected ~1'}); random-subspace null q95 "
                f"{np.mean([r['vs_random_subspace']['null_q95'] for r in rows]):.2f}.")
    passing = sum(passes_all_nulls(r) for r in rows)
    above_random = sum(r["overlap_after"] > r["vs_random_subspace"]["null_q95"] for r in rows)
    above_perm = sum(r["overlap_after"] > r["vs_permuted_labels"]["null_q95"] for r in rows)
    # a degenerate permuted-label null (no spread, z None) cannot test specificity: counted apart, never as transfer
    untestable = sum(bool(r["specific_vector_cosine_after"].get("degenerate")) for r in rows)
    specific = sum(r["specific_vector_cosine_after"]["p"] < 0.05 and not r["specific_vector_cosine_after"].get(
        "degenerate") for r in rows)
    interp = sum(r["interpolation"] for r in rows)
    mean_after = float(np.mean([r["overlap_after"] for r in rows]))
    mean_rand = float(np.mean([r["vs_random_subspace"]["null_q95"] for r in rows]))
    mean_perm = float(np.mean([r["vs_permuted_labels"]["null_mean"] for r in rows]))
    text = (f"{a} -> {b}, k={k}: mapped emotion subspaces overlap {mean_after:.2f} on average over {n} layer pairs "
            f"(random-subspace null q95 {mean_rand:.2f}, permuted-label null {mean_perm:.2f}). ")
    if passing:
        text += f"Emotion-specific alignment beyond every null at {passing}/{n} layer pairs."
    elif above_random and not above_perm:
        text += (f"Above random-subspace chance at {above_random}/{n} layer pairs but never above permuted emotion "
                 "labels: the map carries shared sentence geometry, not an emotion-specific subspace.")
    elif above_random:
        text += (f"Above random subspaces at {above_random}/{n} and above permuted labels at {above_perm}/{n} layer "
                 "pairs, but not beyond every null at any single pair.")
    else:
        text += "No alignment beyond chance."
    text += f" Emotion-specific directions transfer (permutation p < 0.05) at {specific}/{n} layer pairs"
    text += (f" ({untestable}/{n} untestable: their permuted-label null has no spread)." if untestable else ".")
    if interp:
        text += f" Warning: the map interpolates (train R^2 > 0.9, held-out <= 0) at {interp}/{n} layer pairs."
    return text


def null_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Every registered null's columns of one layer-pair row (`Null.columns`; None where it does not apply)."""
    return {col: null.value(row, field) if field else row.get(null.key)
            for null in (n for _, n in NULLS.items()) for col, field in null.columns.items()}


def layer_pair_entry(r: dict[str, Any]) -> dict[str, Any]:
    """One layer pair of metrics/alignment.json: the overlap, its nulls, the map's quality, the other scores."""
    return {
        "overlap_after": r["overlap_after"], "overlap_before": r.get("overlap_before"), **null_columns(r),
        "map_r2_train": r["map_r2_train"], "map_r2_heldout": r["map_r2_heldout"],
        "interpolation": r["interpolation"], "cka": r["cka"]["raw"], "cka_null_q95": r["cka"]["null_q95"],
        "cka_debiased": r["cka_debiased"]["raw"], "cca_top1": float(r["cca_top5"][0]),
        "procrustes_r2_heldout": r["procrustes_r2_heldout"],
        "specific_vector_cosine": r["specific_vector_cosine_after"]["raw"],
        "specific_vector_p": r["specific_vector_cosine_after"]["p"],
        "specific_vector_null_degenerate": bool(r["specific_vector_cosine_after"].get("degenerate", False)),
        "passes_all_nulls": passes_all_nulls(r),
        # width-free: the models' own emotion geometry compared, no map and no shared coordinates
        "rsa": r["rsa"]["raw"], "rsa_null_mean": r["rsa"]["null_mean"], "rsa_null_q95": r["rsa"]["null_q95"],
        "p_rsa": r["rsa"]["p"], "emotion_geometry": r["emotion_geometry"]["raw"],
        "emotion_geometry_null_mean": r["emotion_geometry"]["null_mean"],
        "emotion_geometry_null_q95": r["emotion_geometry"]["null_q95"],
        "p_emotion_geometry": r["emotion_geometry"]["p"], "emotion_cosine_mad": r["emotion_cosine_mad"]}


def seeds_summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Does the seeds' recipe reproduce their high overlap, and is it emotion-specific (above mismatched emotions
    and the permuted-label q95)?"""
    def mean(get) -> float:
        return float(np.mean([get(r) for r in seeds]))

    after, mism = mean(lambda r: r["overlap_after"]), mean(lambda r: r["mismatched_emotions"])
    perm_q95 = mean(lambda r: r["vs_permuted_labels"]["null_q95"])
    return {"overlap_after": after, "mismatched_emotions": mism,
            "perm_null_mean": mean(lambda r: r["vs_permuted_labels"]["null_mean"]),
            "random_null_q95": mean(lambda r: r["vs_random_subspace"]["null_q95"]),
            "overlap_before": mean(lambda r: r["overlap_before"]) if "overlap_before" in seeds[0] else None,
            "reproduces_high_overlap": after > 0.9, "emotion_specific": after > max(mism, perm_q95)}


def summarise(results, massive, p, models: Sequence[str] | None = None) -> dict[str, Any]:
    """metrics/alignment.json: per ordered pair a verdict and, per layer pair, the k_report scores with nulls;
    per unordered model pair (`model_pairs`, `lead_pair` = the first pair of two causal LMs) one summary."""
    pairs: dict[str, Any] = {}
    by_pair: dict[tuple[str, str], list] = {}
    for res in results:
        by_pair.setdefault((res["a"], res["b"]), []).append(res)
    for (a, b), items in by_pair.items():
        def rows(variant: str) -> list[dict[str, Any]]:
            return [{**{k: v for k, v in r.items() if k != "k"}, **r["k"][p.k_report]}
                    for r in items if r["variant"] == variant and p.k_report in r["k"]]

        primary = rows(p.primary_variant)
        entry: dict[str, Any] = {"verdict": verdict(a, b, primary, p.k_report), "layer_pairs": {
            f"L{r['layer_a']:02d}-L{r['layer_b']:02d}": layer_pair_entry(r) for r in primary}}
        entry["mean_overlap_after_by_variant"] = {
            v: float(np.mean([r["overlap_after"] for r in rows(v)])) for v in p.variants if rows(v)}
        if rows("seeds"):
            entry["seeds_variant"] = seeds_summary(rows("seeds"))
        pairs[pair_name(a, b)] = entry
    models = list(models) if models is not None else sorted({r["a"] for r in results})
    model_pairs, lead = model_pair_summaries(pairs, models)
    return {"settings": {"position": p.position, "hook": p.hook, "reduce_dim": p.reduce_dim, "k_report": p.k_report,
                         "primary_variant": p.primary_variant, "ks": list(p.ks)},
            "pairs": pairs, "model_pairs": model_pairs, "lead_pair": lead, "massive_dimensions": massive}
