"""The analysis variants of the alignment stage (params `alignment.variants` names them): how features are
prepared, where the subspaces are centred, whether the map has an intercept and whether both sides are
PCA-reduced first. A fixed table of recipes, not settings: the knobs themselves are AlignmentParams."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """`center`: neutral | emotion | none (none + no intercept + full width = the seeds' variant)."""

    features: str = "raw"  # raw | zscore | drop_massive
    center: str = "neutral"
    intercept: bool = True
    reduce: bool = True  # False: maps and subspaces at full width (the seeds' setting; interpolates when n < d)


VARIANTS = {
    "raw": Variant("raw"),
    "zscore": Variant("zscore"),
    "drop_massive": Variant("drop_massive"),
    # The seeds' recipe: raw full-width features, PCA not centred on the neutral mean, map without intercept.
    "seeds": Variant("raw", center="none", intercept=False, reduce=False),
}
