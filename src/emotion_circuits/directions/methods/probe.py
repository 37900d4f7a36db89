"""`probe`: the weight direction of a one-vs-neutral logistic-regression probe per emotion, in raw residual
coordinates and rescaled to the emotion vector's norm. Unlike the mean difference it discounts directions in which
the classes differ but that are swamped by within-class variance: the direction a linear reader uses to tell the
emotion from neutral, so steering along it asks whether what is decodable is also causal."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from emotion_circuits import EMOTIONS, REFERENCE
from emotion_circuits.directions.geometry import emotion_vectors
from emotion_circuits.directions.methods import CONSTANT, DirectionMethod, at_norms, register

C = 0.1  # the same L2 strength as the vectors stage's accuracy probes


def probe_weights(x: np.ndarray, is_emotion: np.ndarray) -> np.ndarray:
    """Unit gradient of a standardised L2 logistic probe's logit in raw coordinates (coef / feature sd), float64.

    Constant features get weight 0: their standardised coefficient is fitted to rounding noise, and dividing it by
    a ~1e-33 sd (MiniLM's last resid_post has such a dimension) would make it the whole direction."""
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=2000, C=C).fit(scaler.transform(x), is_emotion)
    varies = scaler.scale_ > CONSTANT * scaler.scale_.max()
    w = np.where(varies, model.coef_[0] / np.where(varies, scaler.scale_, 1.0), 0.0)
    return w / max(float(np.linalg.norm(w)), 1e-300)


@register
class ProbeWeights(DirectionMethod):
    """Fitted by the vectors stage on the fit split and stored as `<site>.probe.directions`."""

    name = "probe"

    def fit(self, x: np.ndarray, labels: np.ndarray, emotions=EMOTIONS, reference: str = REFERENCE) -> np.ndarray:
        vecs = emotion_vectors(x, labels, emotions, reference).astype(np.float32)
        # One BLAS thread: on these small problems OpenBLAS threading overhead makes lbfgs several times slower.
        with threadpool_limits(limits=1):
            weights = []
            for e in emotions:
                keep = np.isin(labels, [e, reference])
                weights.append(probe_weights(x[keep], labels[keep] == e))
        return at_norms(np.stack(weights).astype(np.float32), np.linalg.norm(vecs, axis=1))
