"""The zero-shot failure (ZSF) set (paper Sec. 4.1)."""

from __future__ import annotations

import numpy as np


def zsf_mask(preds_zs: np.ndarray, preds_ft: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """V = {i : pred_ft(x_i) = y_i and pred_zs(x_i) != y_i}, as a boolean mask (N,)."""
    preds_zs, preds_ft, labels = (np.asarray(a) for a in (preds_zs, preds_ft, labels))
    return (preds_ft == labels) & (preds_zs != labels)
