"""Sample-wise ensemble weights w(d) of the fine-tuned model (paper Sec. 4, Eq. 6).

`d` is the k-th nearest-neighbour distance of a test sample to the zero-shot
failure set; every rule returns w in [0, 1], non-increasing in d.
"""

from __future__ import annotations

import numpy as np

RULES = ("sigmoid", "linear", "binary")
SCALES = ("squared", "l2")
K_RULES = ("paper", "reference")  # besides an integer k


def sigmoid_weight(d: np.ndarray, a: float, b: float) -> np.ndarray:
    """w = sigmoid(-(d - a) / b): the paper's default rule."""
    if b <= 0:
        raise ValueError(f"b must be positive, got {b}")
    z = -(np.asarray(d, dtype=np.float64) - a) / b
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically stable sigmoid


def linear_weight(d: np.ndarray, a: float, b: float) -> np.ndarray:
    """Clamped linear ramp centred on a with width 2b: w = clip(0.5 - (d - a) / (2b), 0, 1)."""
    if b <= 0:
        raise ValueError(f"b must be positive, got {b}")
    return np.clip(0.5 - (np.asarray(d, dtype=np.float64) - a) / (2.0 * b), 0.0, 1.0)


def binary_weight(d: np.ndarray, a: float, b: float | None = None) -> np.ndarray:
    """w = 1[d < a]: route each sample wholly to one model."""
    return (np.asarray(d, dtype=np.float64) < a).astype(np.float64)


def weight(d: np.ndarray, a: float, b: float, rule: str = "sigmoid") -> np.ndarray:
    if rule == "sigmoid":
        return sigmoid_weight(d, a, b)
    if rule == "linear":
        return linear_weight(d, a, b)
    if rule == "binary":
        return binary_weight(d, a)
    raise ValueError(f"unknown weight rule {rule!r}; choose one of {RULES}")


def kth_distance(knn_sqdist: np.ndarray, k: int, scale: str = "squared") -> np.ndarray:
    """Distance to the k-th nearest ZSF member from stored sorted squared distances (N, K_max)."""
    if not 1 <= k <= knn_sqdist.shape[1]:
        raise ValueError(f"k={k} is outside 1..{knn_sqdist.shape[1]} (the bundle stores up to k_max neighbours)")
    d = np.asarray(knn_sqdist[:, k - 1], dtype=np.float64)
    if scale == "squared":
        return d
    if scale == "l2":
        return np.sqrt(np.maximum(d, 0.0))
    raise ValueError(f"unknown distance scale {scale!r}; choose one of {SCALES}")


def k_from_rule(rule: str | int, zsf_size: int, train_size: int) -> int:
    """k for the kNN distance.

    - an int: used as given;
    - "paper": 0.1% of |V| (the paper's text);
    - "reference": round(1000 * |V| / |train|) (the reference code).
    Always at least 1.
    """
    if isinstance(rule, (int, np.integer)):
        return max(1, int(rule))
    if rule == "paper":
        return max(1, int(round(0.001 * zsf_size)))
    if rule == "reference":
        return max(1, int(round(1000 * zsf_size / max(train_size, 1))))
    raise ValueError(f"unknown k rule {rule!r}; use an integer, 'paper' or 'reference'")
