"""Multiple testing: Benjamini-Hochberg within a family of tests (statsmodels)."""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests


def bh_adjust(pvalues: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg (statsmodels multipletests, fdr_bh): (reject, adjusted p). NaN p-values stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    reject, adj = np.zeros(len(p), dtype=bool), np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        r, a, _, _ = multipletests(p[ok], alpha=alpha, method="fdr_bh")
        reject[ok], adj[ok] = r, a
    return reject, adj
