"""Live re-weighting and trade-off curves: `vrf_core.topm` against the full N x C mixtures of
`vrf_core.evaluate`, the predictions of both compared on every sample of every timed call."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.measure import Row, ratio, seconds, timed
from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle
from vrf_core.evaluate import SplitData, VRFParams, mixture_preds, vrf_preds
from vrf_core.topm import TopMSplit, ose_curve, vrf_curve


def open_test_sets(path: Path) -> tuple:
    """The validation-tuned hyperparameters and the six test sets, logits read and projected."""
    bundle = open_bundle(path)
    names = bundle.split_names("id_test") + bundle.split_names("ood")
    return (bundle_adapter.hyperparameters(bundle, "validation"),
            [bundle_adapter.eval_split(bundle, n, lazy=False) for n in names])


def param_changes(base: VRFParams) -> list[VRFParams]:
    """One change of each control: a, b, k, rule (linear, binary), calibration, scale."""
    return [replace(base, a=base.a + 0.1), replace(base, b=base.b * 2), replace(base, k=max(1, base.k // 2)),
            replace(base, rule="linear"), replace(base, rule="binary"), replace(base, calibrate=not base.calibrate),
            replace(base, scale="l2", a=float(np.sqrt(base.a)), b=base.b / 2), base]


def accuracies(preds: list[np.ndarray], splits: list[SplitData]) -> list[float]:
    """What the chart shows: each split's accuracy."""
    return [float((p == s.labels).mean()) for p, s in zip(preds, splits)]


def bench_live(path: Path, repeats: int, m: int) -> list[Row]:
    hp, splits = open_test_sets(path)
    temps = (hp.t_zs, hp.t_ft)
    t0 = time.perf_counter()
    lives = [TopMSplit.from_split_data(s, *temps, m=m) for s in splits]
    for live in lives:
        live.mixture_preds(0.5, True)
    build_cal = time.perf_counter() - t0
    t0 = time.perf_counter()
    for live in lives:
        live.mixture_preds(0.5, False)
    build_uncal = time.perf_counter() - t0
    for s in splits:  # the baseline's softmaxes, cached as a reader of full logits caches them
        for model, t in (("zs", temps[0]), ("ft", temps[1]), ("zs", 1.0), ("ft", 1.0)):
            s.probs(model, t)
    changes = param_changes(hp.vrf)
    n = sum(len(s) for s in splits)
    fast_t, base_t, fallback0 = [], [], sum(live.fallback_rows for live in lives)
    full: dict[int, list[np.ndarray]] = {}
    for rep in range(repeats):
        for j, p in enumerate(changes):
            t0 = time.perf_counter()
            fast = [live.vrf_preds(p) for live in lives]
            accuracies(fast, splits)
            fast_t.append(time.perf_counter() - t0)
            if rep < max(1, repeats // 2):  # the slow side fewer times
                t0 = time.perf_counter()
                full[j] = [vrf_preds(s, p, temps) for s in splits]
                accuracies(full[j], splits)
                base_t.append(time.perf_counter() - t0)
            for f, g, s in zip(fast, full[j], splits):  # every call, every sample
                if not np.array_equal(f, g):
                    raise AssertionError(f"top-m VRF differs from the full mixture on {s.name} at {p}: "
                                         f"{int((f != g).sum())} samples")
    fallback = (sum(live.fallback_rows for live in lives) - fallback0) / (n * len(changes) * repeats)
    live_fast, live_base = float(np.median(fast_t)), float(np.median(base_t))

    alphas = [round(i / 10, 2) for i in range(11)]
    a_values = np.linspace(max(0.05, hp.vrf.a - 1.0), hp.vrf.a + 1.0, 20)

    def curves_fast():
        return ose_curve(lives, alphas, calibrated=False), vrf_curve(lives, hp.vrf, a_values)

    def curves_full():
        ose = [[(mixture_preds(s, al, 1.0, 1.0) == s.labels).mean() for s in splits] for al in alphas]
        vrf = [[(vrf_preds(s, replace(hp.vrf, a=float(a)), temps) == s.labels).mean() for s in splits]
               for a in a_values]
        return np.array(ose), np.array(vrf)

    cf, (ose_f, vrf_f) = timed(curves_fast, repeats)
    cb, (ose_b, vrf_b) = timed(curves_full, max(1, repeats // 3))
    if not (np.array_equal(ose_f, ose_b) and np.array_equal(vrf_f, vrf_b)):
        raise AssertionError("top-m curves differ from the full mixtures")
    sizes = "+".join(f"{len(s) / 1000:.1f}k" for s in splits)
    return [
        Row("live re-weighting: VRF accuracy of the six test sets after one change of a/b/k/rule/calibration",
            seconds(live_fast), seconds(live_base), ratio(live_base, live_fast), "<= 100 ms, >= 20x",
            "yes" if live_fast <= 0.1 and live_base / live_fast >= 20 else "no",
            f"{n} samples ({sizes}); median of {len(fast_t)} fast and {len(base_t)} full calls over "
            f"{len(changes)} changes; predictions equal on every sample of every call; m = {m}, "
            f"full rows recomputed for {100 * fallback:.3f}% of samples"),
        Row("trade-off curves: OSE 11 alphas + VRF 20 values of a, six test sets", seconds(cf), seconds(cb),
            ratio(cb, cf), "<= 1 s", "yes" if cf <= 1.0 else "no", "accuracies equal"),
        Row("top-m tables: build for the calibrated / uncalibrated temperatures (once per bundle)",
            f"{build_cal:.2f} s / {build_uncal:.2f} s", "-", "-", "(precompute, stored)", "-",
            "the full softmax of both models, top-m kept; precompute stores them in the bundle (derive), the "
            "dashboard reads them"),
    ]
