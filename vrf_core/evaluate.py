"""Every method of the results table, computed from cached arrays.

Pure functions over `SplitData` (arrays already projected to each dataset's
classes): the predictions of each method under given hyperparameters
(`method_preds`) and the table of their accuracies (`score_table`). The
hyperparameters are chosen in `vrf_core.tuning`; everything stored in a bundle
is computed once, in `vrf_core.derive`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from vrf_core.dawin import dawin_preds, dawin_transductive_preds
from vrf_core.ensembles import softmax
from vrf_core.logit_ensemble import split_logit_preds
from vrf_core.metrics import bootstrap_ci
from vrf_core.routing import energy_score, msp_score, route_to_ft
from vrf_core.row_softmax import entropy_rows
from vrf_core.weights import kth_distance, weight

ROLES_EVAL = ("id_val", "id_test", "ood")  # in table order
OOD_AVG = "OOD avg"  # the results table's column: unweighted mean over the role-'ood' splits

# Rows of the results table that other modules name (the dashboard imports these).
ROW_ZS, ROW_FT, ROW_WSE, ROW_OSE, ROW_OSE_CAL = "zero-shot", "fine-tuned", "WSE", "OSE", "OSE (calibrated)"
ROW_LOGIT, ROW_LOGIT_CAL = "logit ensemble", "logit ensemble (calibrated)"
ROUTE_PREFIX = "route: "  # + the routing score's name
ROW_DAWIN, ROW_DAWIN_TRANSDUCTIVE = "DaWin", "DaWin (transductive)"
ROW_VRF_TRAIN, ROW_VRF_ZS, ROW_VRF = "VRF (ID-train kNN)", "VRF (zero-shot features)", "VRF"
ABLATION_ROWS = {"train": ROW_VRF_TRAIN, "zs_features": ROW_VRF_ZS}  # Hyperparameters.ablations key -> row
CEILING = "ceiling"  # results[mode][CEILING]: split -> fraction where at least one model is right


@dataclass
class SplitData:
    """One evaluation split. logits: (N, C) projected raw logits (arrays, memory maps or
    `ProjectedRows`); knn_sqdist: (N, K) ascending squared distances to the ZSF set; ood_scores: name -> (N,)
    feature-based ID scores (higher = more in-distribution). For VRF's ablations (absent in older
    bundles): knn_sqdist_train (N, K), the squared distances of the fine-tuned features to the whole
    ID training set, and knn_sqdist_zs (N, K), to the ZSF set in the zero-shot features."""

    name: str
    role: str
    labels: np.ndarray
    logits_zs: np.ndarray
    logits_ft: np.ndarray
    knn_sqdist: np.ndarray
    ood_scores: dict[str, np.ndarray] = field(default_factory=dict)
    knn_sqdist_train: np.ndarray | None = None
    knn_sqdist_zs: np.ndarray | None = None
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

    def entropy(self, model: str, temperature: float) -> np.ndarray:
        """Entropy (N,) float32 of a model's softmax at a temperature, cached (DaWin's input)."""
        key = ("entropy", model, round(float(temperature), 8))
        if key not in self._cache:
            self._cache[key] = entropy_rows(self.logits_zs if model == "zs" else self.logits_ft, temperature)
        return self._cache[key]


NEIGHBOURS = ("zsf", "train")  # VRFParams.neighbours: distances to the ZSF set, or to the whole ID training set
FEATURES = ("ft", "zs")  # VRFParams.features: distances in the fine-tuned or the zero-shot features


@dataclass(frozen=True)
class VRFParams:
    a: float = 1.5
    b: float = 0.6
    k: int = 1
    rule: str = "sigmoid"
    scale: str = "squared"
    calibrate: bool = True
    neighbours: str = "zsf"
    features: str = "ft"


@dataclass
class Hyperparameters:
    """Everything chosen on the tuning split (`vrf_core.tuning.tune_hyperparameters`)."""

    tuned_on: str
    t_zs: float
    t_ft: float
    wse_alpha: float | None
    ose_alpha: float
    ose_cal_alpha: float
    vrf: VRFParams
    routing_thresholds: dict[str, float]
    logit_alpha: float | None = None  # None: not tuned (manifests written before the logit ensemble)
    logit_cal_alpha: float | None = None
    ablations: dict[str, VRFParams] = field(default_factory=dict)  # "train", "zs_features" (ABLATION_ROWS)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Hyperparameters:
        """Also reads manifests written before the rivals (no logit alphas, no ablations)."""
        ablations = {k: VRFParams(**v) for k, v in (d.get("ablations") or {}).items()}
        return cls(**{**d, "vrf": VRFParams(**d["vrf"]), "ablations": ablations})


# ---- predictions of each method -------------------------------------------------

def temps(sel_or_pair: Hyperparameters | tuple[float, float], calibrate: bool) -> tuple[float, float]:
    if not calibrate:
        return 1.0, 1.0
    if isinstance(sel_or_pair, Hyperparameters):
        return sel_or_pair.t_zs, sel_or_pair.t_ft
    return sel_or_pair


def mixture_preds(split: SplitData, w: np.ndarray | float, t_zs: float, t_ft: float) -> np.ndarray:
    """argmax of w * p_ft + (1 - w) * p_zs; w scalar or (N,)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 1:
        w = w[:, None]
    p = w * split.probs("ft", t_ft) + (1.0 - w) * split.probs("zs", t_zs)
    return p.argmax(axis=1)


_DISTANCE_ARRAYS = {("zsf", "ft"): "knn_sqdist", ("train", "ft"): "knn_sqdist_train", ("zsf", "zs"): "knn_sqdist_zs"}


def knn_array(split: SplitData, params: VRFParams) -> np.ndarray:
    """The (N, K) squared kNN distances that `params` (neighbours, features) measures; the one place
    that picks them. A clear error when the split lacks them (older bundles, imports)."""
    name = _DISTANCE_ARRAYS.get((params.neighbours, params.features))
    if name is None:
        raise ValueError(f"VRFParams neighbours={params.neighbours!r} features={params.features!r}: no such "
                         f"distances; use one of {sorted(_DISTANCE_ARRAYS)}")
    arr = getattr(split, name)
    if arr is None:
        raise ValueError(f"split {split.name}: neighbours={params.neighbours!r} features={params.features!r} needs "
                         f"the array {name}, which this split lacks (a bundle built before VRF's ablations, "
                         f"or an import without it): rebuild the bundle with precompute")
    return arr


def has_distances(split: SplitData, params: VRFParams) -> bool:
    name = _DISTANCE_ARRAYS.get((params.neighbours, params.features))
    return name is not None and getattr(split, name) is not None


def vrf_weights(split: SplitData, params: VRFParams) -> np.ndarray:
    d = kth_distance(knn_array(split, params), params.k, params.scale)
    return weight(d, params.a, params.b, params.rule)


def vrf_preds(split: SplitData, params: VRFParams, t: tuple[float, float]) -> np.ndarray:
    t_zs, t_ft = t if params.calibrate else (1.0, 1.0)
    return mixture_preds(split, vrf_weights(split, params), t_zs, t_ft)


ROUTE_BLOCK = 2048  # rows per block of the logit-based routing scores


def routing_scores(split: SplitData, name: str, t_ft: float = 1.0) -> np.ndarray:
    """A routing baseline's ID score (N,); the logit-based ones are kept in the split's cache (a full
    pass over the logits each: the dashboard asks on every redraw)."""
    if name in ("msp", "energy"):
        key = ("route", name, round(float(t_ft), 8))
        if key not in split._cache:  # in row blocks (the scores are row-wise): no N x C float64 temporaries
            logits, out = split.logits_ft, np.empty(len(split), np.float64)
            for s in range(0, len(out), ROUTE_BLOCK):
                block = np.asarray(logits[s:s + ROUTE_BLOCK])
                out[s:s + ROUTE_BLOCK] = msp_score(block / t_ft) if name == "msp" else energy_score(block, t_ft)
            split._cache[key] = out
        return split._cache[key]
    if name in split.ood_scores:
        return np.asarray(split.ood_scores[name], dtype=np.float64)
    raise KeyError(f"split {split.name} has no {name!r} score")


# ---- the results table ----------------------------------------------------------

class FullMixture:
    """The reference predictor: mixtures over the full N x C softmaxes (`SplitData.probs`).
    `vrf_core.topm.TopMSplit` answers the same two questions exactly from its top-m tables."""

    def __init__(self, split: SplitData, t_zs: float, t_ft: float):
        self.split, self.t = split, (t_zs, t_ft)

    @property
    def temperatures(self) -> tuple[float, float]:
        return self.t

    def model_preds(self, model: str) -> np.ndarray:
        return np.asarray(self.split.logits_zs if model == "zs" else self.split.logits_ft).argmax(1)

    def mixture_preds(self, w: np.ndarray | float, calibrated: bool) -> np.ndarray:
        return mixture_preds(self.split, w, *temps(self.t, calibrated))

    def entropies(self) -> tuple[np.ndarray, np.ndarray]:
        """Each model's entropy (N,) at the calibrated temperatures (zero-shot, fine-tuned)."""
        return self.split.entropy("zs", self.t[0]), self.split.entropy("ft", self.t[1])


def ceiling(split: SplitData, preds_zs: np.ndarray, preds_ft: np.ndarray) -> float:
    """The per-sample ceiling: the fraction of samples at least one of the two models gets right."""
    return float(((preds_zs == split.labels) | (preds_ft == split.labels)).mean())


def method_preds(split: SplitData, hp: Hyperparameters, predictor=None, wse_preds: np.ndarray | None = None,
                 wse_alphas: list[float] | None = None, vrf: VRFParams | None = None) -> dict[str, np.ndarray]:
    """Predictions (N,) of every method on one split under the hyperparameters `hp` (VRF's may be
    overridden, e.g. by the dashboard's live controls), in the results table's row order.
    predictor: answers `model_preds(model)` and `mixture_preds(w, calibrated)` at hp's temperatures:
      `FullMixture` (the default, the reference) or `vrf_core.topm.TopMSplit` (exact, fast).
    wse_preds: (A, N) WSE predictions at each of `wse_alphas`; WSE is left out without them.
    A row is left out when what it needs is absent: the logit ensemble without tuned alphas (older
    manifests), an ablation without its distances or its tuned parameters."""
    vrf = vrf or hp.vrf
    p = predictor or FullMixture(split, hp.t_zs, hp.t_ft)
    if tuple(map(float, p.temperatures)) != (float(hp.t_zs), float(hp.t_ft)):
        raise ValueError(f"split {split.name}: the predictor's temperatures are {p.temperatures}, the "
                         f"hyperparameters' ({hp.t_zs}, {hp.t_ft})")
    arg_zs, arg_ft = p.model_preds("zs"), p.model_preds("ft")
    out = {ROW_ZS: arg_zs, ROW_FT: arg_ft}
    if hp.wse_alpha is not None and wse_preds is not None and wse_alphas is not None:
        out[ROW_WSE] = np.asarray(wse_preds[list(wse_alphas).index(hp.wse_alpha)], dtype=np.int64)
    out[ROW_OSE] = p.mixture_preds(hp.ose_alpha, False)
    out[ROW_OSE_CAL] = p.mixture_preds(hp.ose_cal_alpha, True)
    if hp.logit_alpha is not None and hp.logit_cal_alpha is not None:
        plain, cal = (float(hp.logit_alpha), 1.0, 1.0), (float(hp.logit_cal_alpha), float(hp.t_zs), float(hp.t_ft))
        logit = split_logit_preds(split, [plain, cal])
        out[ROW_LOGIT], out[ROW_LOGIT_CAL] = logit[plain], logit[cal]
    for name, thr in hp.routing_thresholds.items():
        if name in ("msp", "energy") or name in split.ood_scores:
            to_ft = route_to_ft(routing_scores(split, name, hp.t_ft), thr)
            out[ROUTE_PREFIX + name] = np.where(to_ft, arg_ft, arg_zs)
    out[ROW_DAWIN] = dawin_preds(p)
    out[ROW_DAWIN_TRANSDUCTIVE] = dawin_transductive_preds(p)  # uses this split's entropy statistics
    for key, row in ABLATION_ROWS.items():
        params = hp.ablations.get(key)
        if params is not None and has_distances(split, params):
            out[row] = p.mixture_preds(vrf_weights(split, params), params.calibrate)
    out[ROW_VRF] = p.mixture_preds(vrf_weights(split, vrf), vrf.calibrate)
    return out


def score_table(preds: dict[str, dict[str, np.ndarray]], splits: list[SplitData], ci: bool = True,
                n_boot: int = 1000) -> dict:
    """The results table of given predictions: preds[split name][method] -> (N,) predicted classes.
    {method: {split: {"acc", "lo", "hi"}}}, plus OOD_AVG (mean over the role-'ood' splits)."""
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
            row[OOD_AVG] = {"acc": float(np.mean([row[n]["acc"] for n in ood]))}
    return table
