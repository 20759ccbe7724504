"""Output-space mixtures: OSE (WiSE-FT output ensemble) and VRF (paper Eq. 5).

All functions take raw logits (N, C) already projected to the dataset's classes.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def mix_probs(logits_zs: np.ndarray, logits_ft: np.ndarray, w_ft: np.ndarray | float,
              t_zs: float = 1.0, t_ft: float = 1.0) -> np.ndarray:
    """p = w * softmax(z_ft / T_ft) + (1 - w) * softmax(z_zs / T_zs); w scalar or (N,)."""
    w = np.asarray(w_ft, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    p_ft = softmax(np.asarray(logits_ft, dtype=np.float64) / t_ft)
    p_zs = softmax(np.asarray(logits_zs, dtype=np.float64) / t_zs)
    return w * p_ft + (1.0 - w) * p_zs


def ose_probs(logits_zs: np.ndarray, logits_ft: np.ndarray, alpha: float,
              t_zs: float = 1.0, t_ft: float = 1.0) -> np.ndarray:
    """Output-space ensemble with a single alpha for every sample (T = 1: uncalibrated)."""
    return mix_probs(logits_zs, logits_ft, alpha, t_zs, t_ft)


def vrf_probs(logits_zs: np.ndarray, logits_ft: np.ndarray, w: np.ndarray,
              t_zs: float = 1.0, t_ft: float = 1.0) -> np.ndarray:
    """VRF: per-sample weight w(x) on the fine-tuned model's calibrated probabilities."""
    return mix_probs(logits_zs, logits_ft, w, t_zs, t_ft)
