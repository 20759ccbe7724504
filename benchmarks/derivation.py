"""What precompute derives and stores, on the workload bundle:

- derive + tuning: `vrf_core.bundle_adapter.rederive` (hyperparameters tuned through the top-m
  tables, then predictions, tables, results and curves) against the same derivation with the
  hyperparameters tuned on the full N x C mixtures (`evaluate.FullMixture`); both choices and
  everything derived are compared;
- bundle size: the bytes on disk against what schema 1 stored for the same workload (WSE
  logits float16 (A, N, C) instead of WSE predictions int32 (A, N)), computed from the shapes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.measure import Row, ratio, seconds
from vrf_core.bundle import MANIFEST, open_bundle
from vrf_core.bundle_adapter import compare, derive_spec, eval_split, eval_split_names, rederive
from vrf_core.calibration import fit_temperature
from vrf_core.derive import MODES

GiB = 2**30
NPY_HEADER = 128  # bytes of a .npy header for these shapes


def split_of_role(bundle, role: str) -> str:
    return next(s for s in eval_split_names(bundle) if bundle.splits[s]["role"] == role)


def temperature_fit_seconds(bundle) -> float:
    """The part of tuning that does not depend on the predictor: both models' temperatures on
    each mode's tuning split (full float64 softmaxes of its logits at every step of the search)."""
    calibration = derive_spec(bundle).tuning.calibration
    t0 = time.perf_counter()
    for role in MODES.values():
        split = eval_split(bundle, split_of_role(bundle, role))
        for logits in (split.logits_zs, split.logits_ft):
            fit_temperature(np.asarray(logits, dtype=np.float64), split.labels, calibration)
    return time.perf_counter() - t0


def bench_derive(path: Path) -> list[Row]:
    bundle = open_bundle(path)
    fit_t = temperature_fit_seconds(bundle)
    runs = {}
    for full_mixture in (False, True):
        t0 = time.perf_counter()
        derived = rederive(bundle, reference_tuning=full_mixture)
        runs[full_mixture] = (time.perf_counter() - t0, derived.tuning_seconds, derived)
    (fast_t, fast_tune, fast), (full_t, full_tune, full) = runs[False], runs[True]
    same_choice = fast.hyperparameters == full.hyperparameters
    differences = compare(bundle, full)  # the stored results (top-m tuning, written by finish) vs these
    n_val = bundle.splits[split_of_role(bundle, "id_val")]["n"]
    fast_rest, full_rest = max(fast_tune - fit_t, 1e-9), full_tune - fit_t
    return [Row(
        "derive + tuning: hyperparameters of both modes, predictions, top-m tables, results and curves "
        "(what precompute stores)", seconds(fast_t), seconds(full_t), ratio(full_t, fast_t), "report",
        "yes" if same_choice and not differences else "no",
        f"fast: bundle_adapter.rederive, tuned through the top-m tables; straightforward: the same derive with "
        f"the tuning on full mixtures (evaluate.FullMixture), measured end to end. Of which tuning "
        f"{seconds(fast_tune)} vs {seconds(full_tune)} ({ratio(full_tune, fast_tune)}; validation mode on the "
        f"whole {n_val}-sample val split, oracle mode on the ID test split); in it the temperature fit, the "
        f"same in both, about {seconds(fit_t)} (timed apart), and the rest (top-m tables of the tuning split, "
        f"OSE and VRF candidates; the routing thresholds, again the same in both) about {seconds(fast_rest)} vs "
        f"{seconds(full_rest)} "
        f"({ratio(full_rest, fast_rest)}); chosen hyperparameters "
        f"{'equal in both modes' if same_choice else 'DIFFERENT'}; stored results vs the straightforward "
        f"derivation: {'equal' if not differences else '; '.join(differences[:3])}")]


def size(n_bytes: float) -> str:
    return f"{n_bytes / GiB:.2f} GiB" if n_bytes >= GiB / 10 else f"{n_bytes / 2**20:.1f} MiB"


def bench_size(path: Path) -> list[Row]:
    bundle = open_bundle(path)
    files, m = bundle.manifest["files"], bundle.manifest
    total = sum(info["bytes"] for info in files.values()) + (Path(path) / MANIFEST).stat().st_size
    alphas, classes = len(m["ensemble"]["wse_alphas"] or []), m["num_classes"]
    evals = eval_split_names(bundle)
    preds_wse = sum(files[f"splits/{s}/preds_wse.npy"]["bytes"] for s in evals if bundle.has(s, "preds_wse"))
    logits_wse = sum(alphas * m["splits"][s]["n"] * classes * 2 + NPY_HEADER for s in evals) if alphas else 0
    schema_1 = total - preds_wse + logits_wse

    def share(*names: str) -> float:
        return sum(info["bytes"] for rel, info in files.items() if rel.rsplit("/", 1)[-1].split(".")[0] in names)

    parts = {"logits": share("logits_zs", "logits_ft"), "features": share("features_zs", "features_ft"),
             "kNN": share("knn_sqdist", "knn_index"),
             "top-m tables": share("topm_cand", "topm_p_ft", "topm_p_zs", "topm_r_ft", "topm_r_zs"),
             "preds_wse": preds_wse}
    return [Row(
        "bundle size on disk: the workload bundle (schema 2) vs the same workload under schema 1",
        size(total), size(schema_1), ratio(schema_1, total), "<= 2.2 GiB",
        "yes" if total <= 2.2 * GiB else "no",
        f"{len(files)} files, {total / 1e9:.2f} GB = 10^9 bytes (of which "
        f"{', '.join(f'{k} {size(v)}' for k, v in parts.items())}); "
        f"schema 1 computed from the shapes: these bytes without preds_wse, plus logits_wse float16 "
        f"({alphas}, N, {classes}) per evaluation split ({size(logits_wse)})")]
