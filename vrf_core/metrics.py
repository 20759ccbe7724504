"""Accuracy, per-class accuracy and bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(preds) == np.asarray(labels)).mean()) if len(labels) else float("nan")


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) accuracy of each class; NaN for classes without samples."""
    correct = np.bincount(labels, weights=(preds == labels).astype(np.float64), minlength=num_classes)
    count = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / count


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy from its 0/1 correctness vector.

    Resampling n items with replacement from a 0/1 vector with k ones draws
    Binomial(n, k/n) ones, so the bootstrap is sampled exactly without an
    (n_boot, n) index matrix.
    """
    correct = np.asarray(correct, dtype=np.float64)
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.binomial(n, correct.mean(), size=n_boot) / n
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
