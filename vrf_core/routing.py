"""Routing baselines (the paper's "selective" ensembles): an OOD score decides, per sample, which single
model answers (fine-tuned when the sample looks in-distribution, zero-shot
otherwise). The threshold keeps a fixed fraction (95%) of ID validation samples.

Convention: every score is an *ID score* (higher = more in-distribution).
"""

from __future__ import annotations

import numpy as np

from vrf_core.ensembles import softmax
from vrf_core.knn import l2_normalize

SCORES = ("msp", "energy", "mahalanobis", "knn", "relative_mahalanobis")


def msp_score(logits: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64)).max(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative energy: T * logsumexp(z / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=1)
    return temperature * (m + np.log(np.exp(z - m[:, None]).sum(axis=1)))


class GaussianFit:
    """Class-conditional Gaussians with a shared covariance (Lee et al. 2018), plus
    one background Gaussian over all training features for the relative score
    (Ren et al. 2021). Fit on L2-normalised training features."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int, eps: float = 1e-6):
        x = l2_normalize(features).astype(np.float64)
        d = x.shape[1]
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        sums = np.zeros((num_classes, d))
        np.add.at(sums, labels, x)
        present = counts > 0
        self.means = sums[present] / counts[present, None]
        centred = x - (sums / np.maximum(counts, 1)[:, None])[labels]
        cov = centred.T @ centred / len(x) + eps * np.eye(d)
        self.precision = np.linalg.inv(cov)
        self.mean0 = x.mean(axis=0)
        c0 = x - self.mean0
        self.precision0 = np.linalg.inv(c0.T @ c0 / len(x) + eps * np.eye(d))

    def _class_distances(self, x: np.ndarray) -> np.ndarray:
        """(N, K) Mahalanobis distances to every class mean, via the expanded quadratic form."""
        xp = x @ self.precision
        mp = self.means @ self.precision
        return ((xp * x).sum(1)[:, None] - 2 * xp @ self.means.T + (mp * self.means).sum(1)[None, :])

    def mahalanobis(self, features: np.ndarray, chunk: int = 8192) -> np.ndarray:
        out = []
        for s in range(0, len(features), chunk):
            x = l2_normalize(features[s:s + chunk]).astype(np.float64)
            out.append(-self._class_distances(x).min(axis=1))
        return np.concatenate(out)

    def relative_mahalanobis(self, features: np.ndarray, chunk: int = 8192) -> np.ndarray:
        out = []
        for s in range(0, len(features), chunk):
            x = l2_normalize(features[s:s + chunk]).astype(np.float64)
            c0 = x - self.mean0
            md0 = ((c0 @ self.precision0) * c0).sum(1)
            out.append(-(self._class_distances(x) - md0[:, None]).min(axis=1))
        return np.concatenate(out)


def id_threshold(val_scores: np.ndarray, keep: float = 0.95) -> float:
    """Threshold such that a fraction `keep` of ID validation samples score at or above it."""
    return float(np.quantile(np.asarray(val_scores, dtype=np.float64), 1.0 - keep))


def route_to_ft(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where the sample is treated as in-distribution and answered by the fine-tuned model."""
    return np.asarray(scores) >= threshold
