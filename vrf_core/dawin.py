"""DaWin's output-space sample-wise ensemble (Oh et al., "DaWin: Training-free Dynamic Weight
Interpolation for Robust Adaptation", ICLR 2025), computed from cached logits.

Each model's prediction entropy H_m = entropy(softmax(z_m / T_m)), at the calibrated
temperatures of the hyperparameters, gives the fine-tuned model's per-sample weight

    lambda(x) = exp(-H_ft) / (exp(-H_zs) + exp(-H_ft)) = sigmoid(H_zs - H_ft),

and the prediction is argmax of (1 - lambda) p_zs + lambda p_ft: the mixture VRF uses, with a
weight from confidence instead of distance. No training data and nothing tuned beyond the
temperatures. Since lambda is a per-sample weight, the prediction goes through a predictor's
`mixture_preds(lambda, calibrated=True)` and the top-m tables decide it exactly.

The transductive variant ("DaWin (transductive)") adds DaWin's optional offset adjustment,
which uses statistics of the whole split being evaluated (the test set, not the tuning split):
with mu_m and sd_m the mean and sample standard deviation (ddof = 1) of H_m over that split,

    c = (sd_zs / mu_zs + sd_ft / mu_ft) / 2        (the mean coefficient of variation)
    beta = (mu_zs + mu_ft) / mu_zs
    lambda(x) = (exp(-H_ft) + c / beta) / (exp(-H_zs) + exp(-H_ft) + c),

which pulls every weight towards 1 / beta = mu_zs / (mu_zs + mu_ft). c = 0, beta = 2 gives the plain
weight back; a split whose mean entropy is 0 (or of fewer than 2 samples) gets c = 0.
"""

from __future__ import annotations

import numpy as np


def dawin_weights(h_zs: np.ndarray, h_ft: np.ndarray) -> np.ndarray:
    """lambda = exp(-H_ft) / (exp(-H_zs) + exp(-H_ft)), as the stable sigmoid of H_zs - H_ft. (N,) float64."""
    z = np.asarray(h_zs, dtype=np.float64) - np.asarray(h_ft, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def offset_adjustment(h_zs: np.ndarray, h_ft: np.ndarray) -> tuple[float, float]:
    """(c, beta) of the transductive offset from the split's own entropies (module docstring)."""
    h_zs, h_ft = np.asarray(h_zs, dtype=np.float64), np.asarray(h_ft, dtype=np.float64)
    mu_zs, mu_ft = float(h_zs.mean()) if len(h_zs) else 0.0, float(h_ft.mean()) if len(h_ft) else 0.0
    if len(h_zs) < 2 or mu_zs <= 0.0 or mu_ft <= 0.0:
        return 0.0, 2.0
    c = (float(h_zs.std(ddof=1)) / mu_zs + float(h_ft.std(ddof=1)) / mu_ft) / 2.0
    return c, (mu_zs + mu_ft) / mu_zs


def transductive_weights(h_zs: np.ndarray, h_ft: np.ndarray) -> np.ndarray:
    """lambda with the offset adjustment from the statistics of the split these entropies are of. (N,) float64."""
    c, beta = offset_adjustment(h_zs, h_ft)
    e_zs, e_ft = np.exp(-np.asarray(h_zs, dtype=np.float64)), np.exp(-np.asarray(h_ft, dtype=np.float64))
    return (e_ft + c / beta) / (e_zs + e_ft + c)


def dawin_transductive_preds(predictor) -> np.ndarray:
    """The transductive variant's predictions (N,): the offset uses the whole split the predictor holds."""
    h_zs, h_ft = predictor.entropies()
    return predictor.mixture_preds(transductive_weights(h_zs, h_ft), True)


def dawin_preds(predictor) -> np.ndarray:
    """DaWin's predictions (N,) through a predictor (`evaluate.FullMixture` or `topm.TopMSplit`)
    that answers `entropies()` at its calibrated temperatures and `mixture_preds(w, calibrated)`."""
    h_zs, h_ft = predictor.entropies()
    return predictor.mixture_preds(dawin_weights(h_zs, h_ft), True)
