"""Model pairs: the "a->b" name of an ordered pair and one summary per unordered pair of distinct models (both
directions' verdicts, the share of layer pairs beyond every null, width-free scores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pair_name(a: str, b: str) -> str:
    return f"{a}->{b}"


def _causal(model: str) -> bool | None:
    from emotion_circuits.model.loading import REGISTRY, resolve_spec

    spec = resolve_spec(model)
    return spec.causal if spec.name in REGISTRY else None


def model_pair_summaries(pairs: dict[str, Any], models: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """One entry per unordered pair of distinct models ("a<->b", in params order): both directions' verdicts, the
    share of layer pairs beyond every null, the mean overlap and the width-free scores (RSA, emotion geometry)."""
    out: dict[str, Any] = {}
    lead = None
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            dirs = {d: pairs[d] for d in (pair_name(a, b), pair_name(b, a)) if d in pairs}
            if not dirs:
                continue
            lps = [lp for e in dirs.values() for lp in e["layer_pairs"].values()]
            fwd = pairs.get(pair_name(a, b), {}).get("layer_pairs", {})
            kinds = [_causal(a), _causal(b)]
            key = f"{a}<->{b}"
            out[key] = {
                "models": [a, b], "both_causal": all(kinds), "verdicts": {d: e["verdict"] for d, e in dirs.items()},
                "layer_pairs_beyond_all_nulls": f"{sum(lp['passes_all_nulls'] for lp in lps)}/{len(lps)}",
                "mean_overlap_after": float(np.mean([lp["overlap_after"] for lp in lps])),
                "mean_random_null_q95": float(np.mean([lp["random_null_q95"] for lp in lps])),
                "mean_perm_null_q95": float(np.mean([lp["perm_null_q95"] for lp in lps])),
                "best_layer_pair": max(fwd, key=lambda k: fwd[k]["overlap_after"] - fwd[k]["perm_null_q95"]) if fwd else None,
                # width-free scores are symmetric in the two models: the a -> b rows
                "mean_rsa": float(np.mean([lp["rsa"] for lp in fwd.values()])) if fwd else None,
                "rsa_significant": f"{sum(lp['p_rsa'] < 0.05 for lp in fwd.values())}/{len(fwd)}",
                "mean_emotion_geometry": float(np.mean([lp["emotion_geometry"] for lp in fwd.values()])) if fwd else None,
                "emotion_geometry_significant": f"{sum(lp['p_emotion_geometry'] < 0.05 for lp in fwd.values())}/{len(fwd)}",
            }
            out[key]["verdict"] = " ".join(out[key]["verdicts"].values()) + (
                f" Width-free: RSA {out[key]['mean_rsa']:.2f} (p < 0.05 at {out[key]['rsa_significant']} layer pairs), "
                f"emotion-centroid geometry r = {out[key]['mean_emotion_geometry']:.2f} "
                f"(p < 0.05 at {out[key]['emotion_geometry_significant']})." if fwd else "")
            if lead is None and all(kinds):
                lead = key
    return out, lead


# ----------------------------------------------------------------------------------------------- saved maps
