"""DaWin's output-space sample-wise ensemble (Oh et al., "DaWin: Training-free Dynamic Weight
Interpolation for Robust Adaptation", ICLR 2025), computed from cached logits.

Each model's prediction entropy H_m = entropy(softmax(z_m / T_m)), at the calibrated
temperatures of the hyperparameters, gives the fine-tuned model's per-sample weight

    lambda(x) = exp(-H_ft) / (exp(-H_zs) + exp(-H_ft)) = sigmoid(H_zs - H_ft),

and the prediction is argmax of (1 - lambda) p_zs + lambda p_ft: the mixture VRF uses, with a
weight from confidence instead of distance. No training data and nothing tuned beyond the
temperatures. Since lambda is a per-sample weight, the prediction goes through a predictor's
`mixture_preds(lambda, calibrated=True)` and the top-m tables decide it exactly.
"""

from __future__ import annotations

import numpy as np


def dawin_weights(h_zs: np.ndarray, h_ft: np.ndarray) -> np.ndarray:
    """lambda = exp(-H_ft) / (exp(-H_zs) + exp(-H_ft)), as the stable sigmoid of H_zs - H_ft. (N,) float64."""
    z = np.asarray(h_zs, dtype=np.float64) - np.asarray(h_ft, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def dawin_preds(predictor) -> np.ndarray:
    """DaWin's predictions (N,) through a predictor (`evaluate.FullMixture` or `topm.TopMSplit`)
    that answers `entropies()` at its calibrated temperatures and `mixture_preds(w, calibrated)`."""
    h_zs, h_ft = predictor.entropies()
    return predictor.mixture_preds(dawin_weights(h_zs, h_ft), True)
