"""Every method of the results table, computed from cached arrays.

Pure functions over `SplitData` (arrays already projected to each dataset's
classes). Hyperparameters are chosen on one split (the held-out ID validation
split by default; the ID test split in the clearly labelled oracle mode) and
reported on all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from vrf_core.calibration import fit_temperature
from vrf_core.ensembles import softmax
from vrf_core.metrics import accuracy, bootstrap_ci
from vrf_core.selective import SCORES, energy_score, id_threshold, msp_score, route_to_ft
from vrf_core.weights import kth_distance, weight

ROLES_EVAL = ("id_val", "id_test", "ood")


@dataclass
class SplitData:
    """One evaluation split. logits: (N, C) projected raw logits; logits_wse: (A, N, C);
    knn_sqdist: (N, K) ascending squared distances to the ZSF set; ood_scores: name -> (N,)
    feature-based ID scores (higher = more in-distribution)."""

    name: str
    role: str
    labels: np.ndarray
    logits_zs: np.ndarray
    logits_ft: np.ndarray
    knn_sqdist: np.ndarray
    logits_wse: np.ndarray | None = None
    ood_scores: dict[str, np.ndarray] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    def probs(self, model: str, temperature: float) -> np.ndarray:
        """Softmax of a model's logits at a temperature, cached (the dashboard asks often)."""
        key = (model, round(float(temperature), 8))
        if key not in self._cache:
            logits = self.logits_zs if model == "zs" else self.logits_ft
            self._cache[key] = softmax(np.asarray(logits, dtype=np.float64) / temperature).astype(np.float32)
        return self._cache[key]


@dataclass(frozen=True)
class VRFParams:
    a: float = 1.5
    b: float = 0.6
    k: int = 1
    rule: str = "sigmoid"
    scale: str = "squared"
    calibrate: bool = True


@dataclass
class Selection:
    """Everything chosen on the tuning split."""

    tuned_on: str
    t_zs: float
    t_ft: float
    wse_alpha: float | None
    ose_alpha: float
    ose_cal_alpha: float
    vrf: VRFParams
    selective_thresholds: dict[str, float]

    def to_json(self) -> dict:
        d = asdict(self)
        d["vrf"] = asdict(self.vrf)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Selection:
        return cls(**{**d, "vrf": VRFParams(**d["vrf"])})


# ---- predictions of each method -------------------------------------------------

def temps(sel_or_pair: Selection | tuple[float, float], calibrate: bool) -> tuple[float, float]:
    if not calibrate:
        return 1.0, 1.0
    if isinstance(sel_or_pair, Selection):
        return sel_or_pair.t_zs, sel_or_pair.t_ft
    return sel_or_pair


def mixture_preds(split: SplitData, w: np.ndarray | float, t_zs: float, t_ft: float) -> np.ndarray:
    """argmax of w * p_ft + (1 - w) * p_zs; w scalar or (N,)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 1:
        w = w[:, None]
    p = w * split.probs("ft", t_ft) + (1.0 - w) * split.probs("zs", t_zs)
    return p.argmax(axis=1)


def vrf_weights(split: SplitData, params: VRFParams) -> np.ndarray:
    d = kth_distance(split.knn_sqdist, params.k, params.scale)
    return weight(d, params.a, params.b, params.rule)


def vrf_preds(split: SplitData, params: VRFParams, t: tuple[float, float]) -> np.ndarray:
    t_zs, t_ft = t if params.calibrate else (1.0, 1.0)
    return mixture_preds(split, vrf_weights(split, params), t_zs, t_ft)


def selective_scores(split: SplitData, name: str, t_ft: float = 1.0) -> np.ndarray:
    if name == "msp":
        return msp_score(np.asarray(split.logits_ft) / t_ft)
    if name == "energy":
        return energy_score(np.asarray(split.logits_ft), t_ft)
    if name in split.ood_scores:
        return np.asarray(split.ood_scores[name], dtype=np.float64)
    raise KeyError(f"split {split.name} has no {name!r} score")


# ---- hyperparameter selection -----------------------------------------------------

def vrf_grid(tune: SplitData, k_values: list[int], scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Candidate a (quantiles of the tuning split's distances, widened on both sides) and b
    (fractions of their spread), on the chosen distance scale."""
    d = kth_distance(tune.knn_sqdist, max(1, min(k_values)), scale)
    qs = np.quantile(d, np.linspace(0.0, 1.0, 21))
    spread = float(np.std(d)) or 1e-3
    a_grid = np.unique(np.concatenate([qs, [qs[-1] + spread, qs[-1] + 3 * spread]]))
    b_grid = spread * np.array([0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
    return a_grid, b_grid


def select(tune: SplitData, wse_alphas: list[float] | None, ose_alphas: list[float],
           k_values: list[int], rule: str = "sigmoid", scale: str = "squared",
           calibration: str = "confidence", keep: float = 0.95) -> Selection:
    """Choose T, alphas, (a, b, k) and selective thresholds by accuracy on `tune`.

    Ties go to the more robust choice: the smaller alpha, and for VRF the lower
    mean weight on the fine-tuned model.
    """
    y = tune.labels
    t_zs = fit_temperature(np.asarray(tune.logits_zs, dtype=np.float64), y, calibration)
    t_ft = fit_temperature(np.asarray(tune.logits_ft, dtype=np.float64), y, calibration)

    wse_alpha = None
    if wse_alphas is not None and tune.logits_wse is not None:
        accs = [accuracy(tune.logits_wse[i].argmax(1), y) for i in range(len(wse_alphas))]
        wse_alpha = float(wse_alphas[int(np.argmax(accs))])

    def best_alpha(tz: float, tf: float) -> float:
        accs = [accuracy(mixture_preds(tune, al, tz, tf), y) for al in ose_alphas]
        return float(ose_alphas[int(np.argmax(accs))])

    ose_alpha = best_alpha(1.0, 1.0)
    ose_cal_alpha = best_alpha(t_zs, t_ft)

    best, best_key = None, None
    tz, tf = (t_zs, t_ft)
    for k in k_values:
        a_grid, b_grid = vrf_grid(tune, [k], scale)
        for a in a_grid:
            for b in (b_grid if rule != "binary" else b_grid[:1]):
                p = VRFParams(float(a), float(b), int(k), rule, scale, calibration != "none")
                w = vrf_weights(tune, p)
                acc = accuracy(mixture_preds(tune, w, *(temps((tz, tf), p.calibrate))), y)
                key = (round(acc, 9), -float(w.mean()))
                if best_key is None or key > best_key:
                    best, best_key = p, key

    thresholds = {}
    for name in SCORES:
        try:
            thresholds[name] = id_threshold(selective_scores(tune, name, t_ft), keep)
        except KeyError:
            continue
    return Selection(tune.name, t_zs, t_ft, wse_alpha, ose_alpha, ose_cal_alpha, best, thresholds)


# ---- the results table ----------------------------------------------------------

class FullMixture:
    """The reference predictor: mixtures over the full N x C softmaxes (`SplitData.probs`).
    `vrf_core.live.LiveSplit` answers the same two questions exactly from its top-m tables."""

    def __init__(self, split: SplitData, t_zs: float, t_ft: float):
        self.split, self.t = split, (t_zs, t_ft)

    def model_preds(self, model: str) -> np.ndarray:
        return np.asarray(self.split.logits_zs if model == "zs" else self.split.logits_ft).argmax(1)

    def mixture_preds(self, w: np.ndarray | float, calibrated: bool) -> np.ndarray:
        return mixture_preds(self.split, w, *temps(self.t, calibrated))


def method_preds(split: SplitData, sel: Selection, wse_alphas: list[float] | None,
                 vrf: VRFParams | None = None, predictor=None,
                 wse_preds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Predictions of every method on one split, with the selection's hyperparameters
    (VRF's may be overridden, e.g. by the dashboard's live controls).
    predictor: answers `model_preds(model)` and `mixture_preds(w, calibrated)` at the selection's
      temperatures (default `FullMixture`; `vrf_core.live.method_preds` passes the live tables).
    wse_preds: (A, N) WSE predictions at each of `wse_alphas` (default: argmax of `split.logits_wse`)."""
    vrf = vrf or sel.vrf
    p = predictor or FullMixture(split, sel.t_zs, sel.t_ft)
    arg_zs, arg_ft = p.model_preds("zs"), p.model_preds("ft")
    out = {"zero-shot": arg_zs, "fine-tuned": arg_ft}
    if sel.wse_alpha is not None and wse_alphas is not None:
        i = wse_alphas.index(sel.wse_alpha)
        if wse_preds is not None:
            out["WSE"] = np.asarray(wse_preds[i], dtype=np.int64)
        elif split.logits_wse is not None:
            out["WSE"] = split.logits_wse[i].argmax(1)
    out["OSE"] = p.mixture_preds(sel.ose_alpha, False)
    out["OSE (calibrated)"] = p.mixture_preds(sel.ose_cal_alpha, True)
    for name, thr in sel.selective_thresholds.items():
        if name in ("msp", "energy") or name in split.ood_scores:
            to_ft = route_to_ft(selective_scores(split, name, sel.t_ft), thr)
            out[f"select: {name}"] = np.where(to_ft, arg_ft, arg_zs)
    out["VRF"] = p.mixture_preds(vrf_weights(split, vrf), vrf.calibrate)
    return out


def results_table(splits: list[SplitData], sel: Selection, wse_alphas: list[float] | None,
                  vrf: VRFParams | None = None, ci: bool = True, n_boot: int = 1000) -> dict:
    """{method: {split: {"acc", "lo", "hi"}}} plus "OOD avg" (mean over role 'ood' splits)."""
    return score_table({s.name: method_preds(s, sel, wse_alphas, vrf) for s in splits}, splits, ci, n_boot)


def score_table(preds: dict[str, dict[str, np.ndarray]], splits: list[SplitData], ci: bool = True,
                n_boot: int = 1000) -> dict:
    """The results table of given predictions: preds[split name][method] -> (N,) predicted classes."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    ood = [s.name for s in splits if s.role == "ood"]
    for split in splits:
        for method, pred in preds[split.name].items():
            correct = pred == split.labels
            cell = {"acc": float(correct.mean())}
            if ci:
                cell["lo"], cell["hi"] = bootstrap_ci(correct, n_boot)
            table.setdefault(method, {})[split.name] = cell
    for row in table.values():
        if ood and all(n in row for n in ood):
            row["OOD avg"] = {"acc": float(np.mean([row[n]["acc"] for n in ood]))}
    return table


def default_k_values(k_rule_value: int, k_max: int) -> list[int]:
    return sorted({k for k in (1, 5, 10, 20, 50, k_rule_value) if 1 <= k <= k_max})


def with_vrf(sel: Selection, **changes) -> Selection:
    return replace(sel, vrf=replace(sel.vrf, **changes))
