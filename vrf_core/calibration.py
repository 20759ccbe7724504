"""Temperature scaling of logits.

Two fits: the reference implementation's "mean max-softmax confidence equals
accuracy" bracket search over T in [0.1, 10], and the usual NLL minimisation.
Both act on raw logits (the logit scale already applied).
"""

from __future__ import annotations

import numpy as np

from vrf_core.ensembles import log_softmax, softmax

T_MIN, T_MAX = 0.1, 10.0
METHODS = ("confidence", "nll", "none")


def mean_confidence(logits: np.ndarray, temperature: float) -> float:
    return float(softmax(logits / temperature).max(axis=1).mean())


def fit_temperature_confidence(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-4,
                               max_iter: int = 100) -> float:
    """T such that mean max-softmax confidence equals accuracy (bisection on log T).

    Confidence falls monotonically as T grows, so bisection on [T_MIN, T_MAX]
    converges; the bracket end is returned when accuracy lies outside the range
    the bracket can reach.
    """
    logits = np.asarray(logits, dtype=np.float64)
    acc = float((logits.argmax(axis=1) == labels).mean())
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    if mean_confidence(logits, T_MIN) <= acc:
        return T_MIN
    if mean_confidence(logits, T_MAX) >= acc:
        return T_MAX
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        conf = mean_confidence(logits, float(np.exp(mid)))
        if abs(conf - acc) < tol:
            break
        if conf > acc:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature_nll(logits: np.ndarray, labels: np.ndarray, iters: int = 60) -> float:
    """T minimising the validation NLL (golden-section search on log T; NLL is unimodal in T)."""
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    g = (np.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = nll(logits, labels, np.exp(x1)), nll(logits, labels, np.exp(x2))
    for _ in range(iters):
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = nll(logits, labels, np.exp(x1))
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = nll(logits, labels, np.exp(x2))
    return float(np.exp(0.5 * (lo + hi)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, method: str = "confidence") -> float:
    if method == "confidence":
        return fit_temperature_confidence(logits, labels)
    if method == "nll":
        return fit_temperature_nll(logits, labels)
    if method == "none":
        return 1.0
    raise ValueError(f"unknown calibration method {method!r}; choose 'confidence', 'nll' or 'none'")
