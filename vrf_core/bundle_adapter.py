"""From a bundle's arrays and manifest to the math's objects, and back to `derive`.

The storage layer (vrf_core.bundle) returns arrays and a manifest dict; this module is
the one place that knows which arrays make a `SplitData`, how the stored top-m tables
and hyperparameters are read, and how to recompute everything derived from a bundle
(`rederive`, what `precompute report --recompute` and precompute itself call).
"""

from __future__ import annotations

import math

import numpy as np

from vrf_core.bundle import Bundle
from vrf_core.bundle_schema import EVAL_ROLES
from vrf_core.data import ClassProjection
from vrf_core.derive import Derived, DeriveSpec, derive, topm_tables
from vrf_core.evaluate import Hyperparameters, SplitData
from vrf_core.projection import ProjectedRows, project_logits
from vrf_core.routing import SCORES
from vrf_core.topm import ENTROPY_ARRAYS, TABLE_ARRAYS, TopMSplit, TopMTable
from vrf_core.tuning import TuningSpec, default_k_values

FEATURE_SCORES = tuple(s for s in SCORES if s not in ("msp", "energy"))  # stored as score_<name>


def projection(bundle: Bundle, split: str) -> ClassProjection | None:
    return ClassProjection.from_json(bundle.splits[split].get("projection"))


def eval_split(bundle: Bundle, split: str, lazy: bool = True) -> SplitData:
    """An evaluation split with its logits projected to the split's classes. lazy=True leaves the
    logits memory-mapped and projects rows only where read (`ProjectedRows`); lazy=False reads
    them into float32 arrays."""
    proj = projection(bundle, split)

    def logits(name: str):
        raw = bundle.array(split, name)
        if lazy:
            return raw if proj is None else ProjectedRows(raw, proj)
        return project_logits(np.asarray(raw, dtype=np.float32), proj)

    def optional(name: str) -> np.ndarray | None:
        return np.asarray(bundle.array(split, name), dtype=np.float32) if bundle.has(split, name) else None

    scores = {n: np.asarray(bundle.array(split, f"score_{n}")) for n in FEATURE_SCORES
              if bundle.has(split, f"score_{n}")}
    return SplitData(name=split, role=bundle.splits[split]["role"], labels=np.asarray(bundle.array(split, "labels")),
                     logits_zs=logits("logits_zs"), logits_ft=logits("logits_ft"),
                     knn_sqdist=optional("knn_sqdist"), ood_scores=scores,
                     knn_sqdist_train=optional("knn_sqdist_train"), knn_sqdist_zs=optional("knn_sqdist_zs"))


def eval_split_names(bundle: Bundle) -> list[str]:
    """Evaluation splits in table order: ID validation, ID test, then the shifts."""
    return sorted(bundle.split_names(*EVAL_ROLES), key=lambda s: EVAL_ROLES.index(bundle.splits[s]["role"]))


def wse_preds(bundle: Bundle, split: str) -> np.ndarray | None:
    """(A, N) WSE predictions at each of the bundle's wse_alphas; None when the run had no WSE."""
    return np.asarray(bundle.array(split, "preds_wse")) if bundle.has(split, "preds_wse") else None


def hyperparameters(bundle: Bundle, mode: str) -> Hyperparameters:
    return Hyperparameters.from_json(bundle.manifest["hyperparameters"][mode])


def stored_topm(bundle: Bundle, split: str) -> dict[tuple[float, float], TopMTable]:
    names = ["preds_zs", "preds_ft"] + [f"topm_{n}" for n in TABLE_ARRAYS + ENTROPY_ARRAYS
                                        if bundle.has(split, f"topm_{n}")]
    return topm_tables({n: bundle.array(split, n) for n in names}, bundle.manifest["topm"]["temperatures"])


def topm_split(bundle: Bundle, split: str, mode: str, data: SplitData | None = None) -> TopMSplit:
    """A split ready for exact re-weighting at the mode's temperatures, from the stored tables; `data`: the
    split's arrays when the caller already holds them (default: `eval_split`, logits memory-mapped)."""
    hp = hyperparameters(bundle, mode)
    return TopMSplit.from_split_data(data or eval_split(bundle, split), hp.t_zs, hp.t_ft,
                                     bundle.manifest["topm"]["m"], tables=stored_topm(bundle, split))


def derive_spec(bundle: Bundle) -> DeriveSpec:
    """The settings `derive` ran with, from the manifest."""
    ens, zsf = bundle.manifest["ensemble"], bundle.manifest["zsf"]
    tuning = TuningSpec(wse_alphas=ens.get("wse_alphas"), ose_alphas=ens["ose_alphas"],
                        k_values=default_k_values(int(zsf["k_rule_value"]), int(ens["k_max"])),
                        rule=ens.get("weight_rule", "sigmoid"), scale=ens.get("distance", "squared"),
                        calibration=ens.get("calibration", "confidence"))
    return DeriveSpec(tuning, m=int(bundle.manifest.get("topm", {}).get("m", 5)))


def rederive(bundle: Bundle, reference_tuning: bool = False) -> Derived:
    """Everything derived, recomputed from the bundle's own arrays (logits memory-mapped);
    reference_tuning: see `vrf_core.derive.derive`."""
    splits = [eval_split(bundle, s) for s in eval_split_names(bundle)]
    return derive(splits, {s.name: wse_preds(bundle, s.name) for s in splits}, derive_spec(bundle), reference_tuning)


def _differences(stored, fresh, where: str, out: list[str], tol: float) -> None:
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key in sorted(set(stored) | set(fresh), key=str):
            if key not in stored or key not in fresh:
                out.append(f"{where}.{key}: only in the {'recomputed' if key in fresh else 'stored'} results")
            else:
                _differences(stored[key], fresh[key], f"{where}.{key}", out, tol)
    elif isinstance(stored, (list, tuple)) and isinstance(fresh, (list, tuple)) and len(stored) == len(fresh):
        for i, (a, b) in enumerate(zip(stored, fresh)):
            _differences(a, b, f"{where}[{i}]", out, tol)
    elif isinstance(stored, (int, float)) and isinstance(fresh, (int, float)) and not isinstance(stored, bool):
        if not math.isclose(stored, fresh, rel_tol=tol, abs_tol=tol):
            out.append(f"{where}: stored {stored!r}, recomputed {fresh!r}")
    elif stored != fresh:
        out.append(f"{where}: stored {stored!r}, recomputed {fresh!r}")


def compare(bundle: Bundle, fresh: Derived, tol: float = 1e-9) -> list[str]:
    """Where the bundle's stored derived results differ from `fresh` (an empty list: they agree).
    Manifest keys are compared value by value; stored arrays element by element."""
    out: list[str] = []
    stored = {k: bundle.manifest[k] for k in ("hyperparameters", "topm", "results", "curves", "tuning_edges")
              if k in bundle.manifest}  # tuning_edges: absent in bundles written before it
    _differences(stored, fresh.manifest(), "manifest", out, tol)
    for split, arrays in fresh.arrays.items():
        for name, arr in arrays.items():
            if not bundle.has(split, name):
                out.append(f"splits/{split}/{name}.npy: recomputed but not stored")
            elif not np.array_equal(np.asarray(bundle.array(split, name)), arr):
                out.append(f"splits/{split}/{name}.npy: stored values differ from the recomputed ones")
    return out
