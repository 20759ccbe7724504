"""Choosing the hyperparameters on one labelled split: the held-out ID validation split
(mode "validation"), or the ID test split in the clearly labelled "oracle" mode.

What is chosen: each model's temperature (`calibration`), the WSE alpha, the OSE and the
logit ensemble's alphas with and without calibration (over the OSE alpha grid), VRF's
(a, b, k) on the configured rule and distance scale, the same search for each of VRF's
ablations whose distances the split has (`Hyperparameters.ablations`: "train", the
distances to the whole ID training set; "zs_features", to the ZSF set in zero-shot
features), and the routing baselines' thresholds (keeping `keep` of the tuning split on
the fine-tuned model). DaWin has nothing to tune beyond the temperatures.

Every candidate is scored by its number of correct predictions on the tuning split.
Mixtures go through a predictor: `vrf_core.topm.TopMSplit` by default, whose
predictions equal the full N x C mixtures' on every sample, so each of the several
hundred VRF candidates costs O(m N) instead of O(C N); `FullMixture` gives the same
choice, slower (tests/test_tuning.py).

Ties are broken explicitly, towards the more robust choice, so that the choice does
not depend on the order of a config's lists:
- WSE, OSE and logit-ensemble alphas: the smallest alpha (the most weight on the zero-shot model);
- VRF and its ablations: the lowest mean weight on the fine-tuned model, then the smallest k, a, b.

Selections at an end of their search range are listed by `vrf_core.tuning_edges`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vrf_core.calibration import fit_temperature
from vrf_core.evaluate import (
    ABLATION_ROWS,
    Hyperparameters,
    SplitData,
    VRFParams,
    has_distances,
    knn_array,
    routing_scores,
    vrf_weights,
)
from vrf_core.logit_ensemble import split_logit_preds
from vrf_core.routing import SCORES, id_threshold
from vrf_core.topm import TopMSplit
from vrf_core.weights import kth_distance

# A predictor at a temperature pair: model_preds(model) and mixture_preds(w, calibrated).
PredictorAt = Callable[[float, float], object]


@dataclass(frozen=True)
class TuningSpec:
    """The search space. k_values: the k candidates; rule, scale: VRF's weight rule and distance
    scale (not searched); calibration: 'confidence', 'nll' or 'none' (then T = 1 throughout)."""

    wse_alphas: list[float] | None
    ose_alphas: list[float]
    k_values: list[int]
    rule: str = "sigmoid"
    scale: str = "squared"
    calibration: str = "confidence"
    keep: float = 0.95


def default_k_values(k_rule_value: int, k_max: int) -> list[int]:
    """The k candidates: a few round values and the k the configured rule gives, up to k_max."""
    return sorted({k for k in (1, 5, 10, 20, 50, k_rule_value) if 1 <= k <= k_max})


# The ablations' distances, as VRFParams (neighbours, features): Hyperparameters.ablations key -> pair.
ABLATIONS = {"train": ("train", "ft"), "zs_features": ("zsf", "zs")}
assert set(ABLATIONS) == set(ABLATION_ROWS)


def vrf_grid(tune: SplitData, k: int, scale: str, neighbours: str = "zsf",
             features: str = "ft") -> tuple[np.ndarray, np.ndarray]:
    """Candidate a (quantiles of the tuning split's k-th distances, widened on both sides) and b
    (fractions of their spread), on the chosen distance scale and distances (`evaluate.knn_array`);
    both ascending."""
    d = kth_distance(knn_array(tune, VRFParams(neighbours=neighbours, features=features)), k, scale)
    qs = np.quantile(d, np.linspace(0.0, 1.0, 21))
    spread = float(np.std(d)) or 1e-3
    a_grid = np.unique(np.concatenate([qs, [qs[-1] + spread, qs[-1] + 3 * spread]]))
    b_grid = spread * np.array([0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
    return a_grid, b_grid


def _smallest_best_alpha(alphas: list[float], correct: Callable[[float], int]) -> float:
    """The smallest alpha among those with the most correct predictions."""
    scored = [(correct(float(al)), -float(al)) for al in alphas]
    return -max(scored)[1]


def _best_vrf(tune: SplitData, spec: TuningSpec, predictor, calibrate: bool, neighbours: str = "zsf",
              features: str = "ft") -> VRFParams:
    y = tune.labels
    best, best_key = None, None
    for k in sorted(spec.k_values):
        a_grid, b_grid = vrf_grid(tune, k, spec.scale, neighbours, features)
        for a in a_grid:
            for b in (b_grid if spec.rule != "binary" else b_grid[:1]):
                params = VRFParams(float(a), float(b), int(k), spec.rule, spec.scale, calibrate, neighbours, features)
                w = vrf_weights(tune, params)
                correct = int((predictor.mixture_preds(w, calibrate) == y).sum())
                key = (correct, -float(w.mean()))
                if best_key is None or key > best_key:  # strictly better: the first of equals stays
                    best, best_key = params, key
    return best


def tune_hyperparameters(tune: SplitData, spec: TuningSpec, wse_preds: np.ndarray | None = None,
                         predictor_at: PredictorAt | None = None) -> Hyperparameters:
    """Choose every hyperparameter by accuracy on `tune` (ties: module docstring).
    wse_preds: (A, N) WSE predictions on `tune` at each of `spec.wse_alphas`.
    predictor_at(t_zs, t_ft): the mixture predictor at the calibrated temperatures (default: top-m
    tables built from `tune`'s logits)."""
    y = tune.labels
    t_zs = fit_temperature(np.asarray(tune.logits_zs, dtype=np.float64), y, spec.calibration)
    t_ft = fit_temperature(np.asarray(tune.logits_ft, dtype=np.float64), y, spec.calibration)
    predictor = (predictor_at or (lambda tz, tf: TopMSplit.from_split_data(tune, tz, tf)))(t_zs, t_ft)

    wse_alpha = None
    if spec.wse_alphas is not None and wse_preds is not None:
        wse_correct = dict(zip(map(float, spec.wse_alphas), (np.asarray(wse_preds) == y[None, :]).sum(axis=1)))
        wse_alpha = _smallest_best_alpha(spec.wse_alphas, lambda al: int(wse_correct[al]))

    def ose_correct(calibrated: bool) -> Callable[[float], int]:
        return lambda al: int((predictor.mixture_preds(al, calibrated) == y).sum())

    ose_alpha = _smallest_best_alpha(spec.ose_alphas, ose_correct(False))
    ose_cal_alpha = _smallest_best_alpha(spec.ose_alphas, ose_correct(True))
    combos = {(float(al), cal): (float(al), *((t_zs, t_ft) if cal else (1.0, 1.0)))
              for al in spec.ose_alphas for cal in (False, True)}
    logit = split_logit_preds(tune, list(combos.values()))

    def logit_correct(calibrated: bool) -> Callable[[float], int]:
        return lambda al: int((logit[combos[(al, calibrated)]] == y).sum())

    logit_alpha = _smallest_best_alpha(spec.ose_alphas, logit_correct(False))
    logit_cal_alpha = _smallest_best_alpha(spec.ose_alphas, logit_correct(True))
    calibrate = spec.calibration != "none"
    vrf = _best_vrf(tune, spec, predictor, calibrate)
    ablations = {key: _best_vrf(tune, spec, predictor, calibrate, *pair) for key, pair in ABLATIONS.items()
                 if has_distances(tune, VRFParams(neighbours=pair[0], features=pair[1]))}

    thresholds = {}
    for name in SCORES:
        if name in ("msp", "energy") or name in tune.ood_scores:
            thresholds[name] = id_threshold(routing_scores(tune, name, t_ft), spec.keep)
    return Hyperparameters(tune.name, t_zs, t_ft, wse_alpha, ose_alpha, ose_cal_alpha, vrf, thresholds,
                           logit_alpha, logit_cal_alpha, ablations)
