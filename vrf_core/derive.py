"""Everything derived from a bundle's arrays, computed in one place.

`derive(splits, wse_preds, spec)` takes the evaluation splits (logits, labels, kNN
distances, routing scores) and the WSE predictions, and returns:

- the hyperparameters of each tuning mode ("validation": tuned on the `id_val` split;
  "oracle": on `id_test`), chosen by `vrf_core.tuning`;
- per split, each model's predictions and the top-m tables (`vrf_core.topm`) for T = 1
  and each mode's calibrated temperatures, with each model's entropy there: with them a
  reader decides any mixture's argmax (VRF, its ablations, DaWin) exactly without the
  N x C logits;
- per mode, the results table (every method, accuracy and bootstrap interval per split),
  the per-sample ceiling (not a row: `results[mode]["ceiling"]`), and the trade-off
  curves (OSE, logit ensemble, each calibrated and not, and WSE: accuracy at every alpha
  on each test split), and the selections at an edge of their search range
  (`vrf_core.tuning_edges`, manifest `tuning_edges`).

precompute stores the result in the bundle; `precompute report --recompute` calls it
again on the stored arrays and compares; the dashboard only reads what was stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vrf_core.evaluate import (
    CEILING,
    OOD_AVG,
    ROLES_EVAL,
    ROW_LOGIT,
    ROW_LOGIT_CAL,
    ROW_OSE,
    ROW_OSE_CAL,
    ROW_WSE,
    FullMixture,
    Hyperparameters,
    SplitData,
    ceiling,
    method_preds,
    score_table,
)
from vrf_core.logit_ensemble import split_logit_preds
from vrf_core.topm import ENTROPY_ARRAYS, TABLE_ARRAYS, TopMSplit, TopMTable
from vrf_core.tuning import TuningSpec, tune_hyperparameters
from vrf_core.tuning_edges import tuning_edges

MODES = {"validation": "id_val", "oracle": "id_test"}  # tuning mode -> the role of the split it tunes on
TOP_M = 5  # each model's top classes kept per sample; fallbacks to full rows are rare at 5
Pair = tuple[float, float]


@dataclass(frozen=True)
class DeriveSpec:
    tuning: TuningSpec
    m: int = TOP_M
    n_boot: int = 1000


@dataclass
class Derived:
    """arrays: split -> {preds_zs, preds_ft, topm_<name>}, the topm arrays stacked (P, ...) in the
    order of `temperatures`; results: mode -> {columns, rows, ceiling}; curves: mode -> method ->
    split -> accuracy per alpha (OSE, logit ensemble: the spec's ose_alphas, WSE: its wse_alphas)."""

    hyperparameters: dict[str, Hyperparameters]
    temperatures: list[Pair]
    m: int
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, dict] = field(default_factory=dict)
    edges: dict[str, list[dict]] = field(default_factory=dict)  # mode -> selections at a search range's edge
    tuning_seconds: float = 0.0  # of the whole derivation, the time spent choosing hyperparameters

    def manifest(self) -> dict:
        """The manifest keys of the derived results (docs/bundle.md)."""
        return {"hyperparameters": {mode: hp.to_json() for mode, hp in self.hyperparameters.items()},
                "topm": {"m": self.m, "temperatures": [list(p) for p in self.temperatures]},
                "results": self.results, "curves": self.curves, "tuning_edges": self.edges}


def table_order(splits: list[SplitData]) -> list[SplitData]:
    """ID validation, ID test, then the shifts (stable within a role)."""
    return sorted(splits, key=lambda s: ROLES_EVAL.index(s.role))


class _Tables:
    """Top-m tables of one split, built once per temperature pair and shared by every predictor."""

    def __init__(self, split: SplitData, m: int):
        self.split, self.m, self.built = split, m, {}

    def predictor(self, t_zs: float, t_ft: float) -> TopMSplit:
        p = TopMSplit.from_split_data(self.split, t_zs, t_ft, self.m, tables=self.built)
        self.built.update(p.tables())
        return p


def _logit_combos(ose_alphas: list[float], hps: dict[str, Hyperparameters]) -> list[tuple[float, float, float]]:
    """Every (alpha, t_zs, t_ft) of the logit ensemble's rows and curves: one pass per split."""
    pairs = [(1.0, 1.0)] + [(float(hp.t_zs), float(hp.t_ft)) for hp in hps.values()]
    return list(dict.fromkeys((float(al), *t) for t in pairs for al in ose_alphas))


def _curves(p: TopMSplit, ose_alphas: list[float], wse: np.ndarray | None) -> dict[str, list[float]]:
    out = {method: [p.ose_accuracy(float(al), calibrated) for al in ose_alphas]
           for method, calibrated in ((ROW_OSE, False), (ROW_OSE_CAL, True))}
    if wse is not None:
        out[ROW_WSE] = (np.asarray(wse) == p.labels[None, :]).mean(axis=1).tolist()
    return out


def _logit_curves(split: SplitData, t: Pair, ose_alphas: list[float]) -> dict[str, list[float]]:
    """The logit ensemble's accuracy at every alpha, plain and at the calibrated pair `t`."""
    out = {}
    for method, pair in ((ROW_LOGIT, (1.0, 1.0)), (ROW_LOGIT_CAL, t)):
        combos = [(float(al), *map(float, pair)) for al in ose_alphas]
        out[method] = [float((preds == split.labels).mean()) for preds in split_logit_preds(split, combos).values()]
    return out


def derive(splits: list[SplitData], wse_preds: dict[str, np.ndarray | None], spec: DeriveSpec,
           reference_tuning: bool = False) -> Derived:
    """splits: every evaluation split (roles id_val, id_test, ood); wse_preds: split -> (A, N)
    WSE predictions at each of spec.tuning.wse_alphas (or None). reference_tuning: tune on the
    full N x C mixtures instead of the top-m tables (the same choice, slower: for checks and the
    benchmark)."""
    splits = table_order(splits)
    tables = {s.name: _Tables(s, spec.m) for s in splits}
    hps, edges = {}, {}
    t0 = time.perf_counter()
    for mode, role in MODES.items():
        tune = next((s for s in splits if s.role == role), None)
        if tune is not None:
            predictor_at = (lambda tz, tf, s=tune: FullMixture(s, tz, tf)) if reference_tuning else \
                tables[tune.name].predictor
            hps[mode] = tune_hyperparameters(tune, spec.tuning, wse_preds.get(tune.name), predictor_at)
            edges[mode] = tuning_edges(tune, spec.tuning, hps[mode])
    tuning_seconds = time.perf_counter() - t0
    pairs: list[Pair] = [(1.0, 1.0)]
    pairs += [p for p in dict.fromkeys((float(hp.t_zs), float(hp.t_ft)) for hp in hps.values()) if p not in pairs]
    out = Derived(hps, pairs, spec.m, edges=edges, tuning_seconds=tuning_seconds)
    preds: dict[str, dict[str, dict]] = {mode: {} for mode in hps}
    ood = [s.name for s in splits if s.role == "ood"]
    ceilings: dict[str, float] = {}
    for split in splits:
        wse = wse_preds.get(split.name)
        split_logit_preds(split, _logit_combos(spec.tuning.ose_alphas, hps))  # one pass for every mode and alpha
        for mode, hp in hps.items():
            p = tables[split.name].predictor(hp.t_zs, hp.t_ft)
            preds[mode][split.name] = method_preds(split, hp, p, wse, spec.tuning.wse_alphas)
            if split.role != "id_val":
                curves = _curves(p, spec.tuning.ose_alphas, wse) | _logit_curves(split, p.temperatures,
                                                                                 spec.tuning.ose_alphas)
                for method, curve in curves.items():
                    out.curves.setdefault(mode, {}).setdefault(method, {})[split.name] = curve
        p = tables[split.name].predictor(1.0, 1.0)
        arrays = {"preds_zs": p.model_preds("zs"), "preds_ft": p.model_preds("ft")}
        ceilings[split.name] = ceiling(split, arrays["preds_zs"], arrays["preds_ft"])
        built = tables[split.name].built
        if built:  # none when m covers every class: readers then use the logits
            stacked = [built[pair].to_arrays() for pair in pairs]
            arrays.update({f"topm_{n}": np.stack([a[n] for a in stacked]) for n in TABLE_ARRAYS + ENTROPY_ARRAYS})
        out.arrays[split.name] = arrays
        tables[split.name].built = {}  # free them before the next split
        split._cache.clear()  # the softmaxes, entropies and logit-ensemble predictions of this split
    if ood:
        ceilings[OOD_AVG] = float(np.mean([ceilings[n] for n in ood]))
    columns = [s.name for s in splits] + ([OOD_AVG] if ood else [])
    out.results = {mode: {"columns": columns, "rows": score_table(preds[mode], splits, n_boot=spec.n_boot),
                          CEILING: dict(ceilings)} for mode in hps}
    return out


def topm_tables(arrays: dict[str, np.ndarray], temperatures: list[Pair]) -> dict[Pair, TopMTable]:
    """The stored (P, ...) topm_<name> arrays of one split back as tables by temperature pair."""
    if "topm_cand" not in arrays:
        return {}
    names = TABLE_ARRAYS + tuple(n for n in ENTROPY_ARRAYS if f"topm_{n}" in arrays)  # older bundles: no entropies
    per_pair = [{n: arrays[f"topm_{n}"][i] for n in names} for i in range(len(temperatures))]
    return {tuple(map(float, t)): TopMTable.from_arrays(a, arrays["preds_zs"], arrays["preds_ft"])
            for t, a in zip(temperatures, per_pair)}
