"""`lda`: the shrinkage-LDA discriminant of each emotion against all three other classes (the other emotions and
neutral), in raw residual coordinates, its sign aligned with the emotion vector and rescaled to the vector's norm.
Because the other emotions are on the "rest" side, the shared "emotional vs bland" component no longer separates the
classes and is discounted: what is left is what tells this emotion from everything else.

Computed as w = Sigma_T^-1 (mean(e) - mean(rest)) with Sigma_T the Ledoit-Wolf-shrunk covariance of ALL fit rows,
standardised per feature first (sklearn LinearDiscriminantAnalysis(solver='lsqr', shrinkage='auto')'s recipe). For
two classes Sigma_T = Sigma_W + p(1-p) d d^T, so without shrinkage Sigma_T^-1 d is exactly parallel to Fisher's
Sigma_W^-1 d (Sherman-Morrison); with shrinkage the two agree closely (tested against sklearn). Using the total
covariance makes the whitening label-free: one eigendecomposition serves every emotion, and the permuted-label null
only changes the class means, so it is exact and vectorised (`fit_permuted`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.geometry import emotion_vectors
from emotion_circuits.directions.methods import CONSTANT, DirectionMethod, aligned, at_norms, at_norms_many, register


@dataclass(frozen=True)
class Whitener:
    """Sigma_T^-1 in raw coordinates, from the standardised, Ledoit-Wolf-shrunk total covariance of `x`.

    Constant features (sd below CONSTANT x the largest, float noise such as MiniLM's last-layer dimension) get
    weight 0, as in the probe method: dividing by their ~0 sd would make them the whole direction."""

    varies: np.ndarray
    scale: np.ndarray
    evals: np.ndarray
    evecs: np.ndarray
    shrinkage: float

    @classmethod
    def fit(cls, x: np.ndarray) -> Whitener:
        x = np.asarray(x, dtype=np.float64)
        sd = x.std(axis=0)
        varies = sd > CONSTANT * sd.max()
        z = (x[:, varies] - x[:, varies].mean(axis=0)) / sd[varies]
        shrinkage = float(ledoit_wolf_shrinkage(z, assume_centered=True))
        cov = z.T @ z / len(z)
        mu = float(np.trace(cov)) / cov.shape[0]
        evals, evecs = np.linalg.eigh((1.0 - shrinkage) * cov + shrinkage * mu * np.eye(cov.shape[0]))
        return cls(varies, sd[varies], np.maximum(evals, 1e-12 * max(float(evals.max()), 1e-300)), evecs, shrinkage)

    def solve(self, deltas: np.ndarray) -> np.ndarray:
        """Sigma_T^-1 @ delta for every row of `deltas` [..., d] (raw coordinates in and out)."""
        dz = deltas[..., self.varies] / self.scale
        wz = ((dz @ self.evecs) / self.evals) @ self.evecs.T
        out = np.zeros(deltas.shape, dtype=np.float64)
        out[..., self.varies] = wz / self.scale
        return out


@register
class ShrinkageLDA(DirectionMethod):
    """Fitted by the vectors stage on the fit split and stored as `<site>.lda.directions`."""

    name = "lda"
    vectorised_null = True

    def fit(self, x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        vecs = emotion_vectors(x, labels, emotions, reference)
        deltas = np.stack([x[labels == e].mean(axis=0) - x[labels != e].mean(axis=0) for e in emotions])
        w = aligned(Whitener.fit(x).solve(deltas), vecs)
        return at_norms(w, np.linalg.norm(vecs.astype(np.float32), axis=1))

    def from_means(self, x: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        total = x.sum(axis=0)  # label-free, like the whitening: mean(rest) follows from mean(e) and the total
        n_e = counts[:, :-1, None]
        rest = (total - n_e * means[:, :-1]) / np.maximum(len(x) - n_e, 1.0)
        vecs = means[:, :-1] - means[:, -1:]
        w = aligned(Whitener.fit(x).solve(means[:, :-1] - rest), vecs)
        return at_norms_many(w, np.linalg.norm(vecs, axis=-1))
