"""The Sensitivity page's figures: VRF accuracy over the 20 x 10 (a, b) grid and at every k, on every
evaluation split, by `vrf_core.sensitivity` against the straightforward loop of `TopMSplit.vrf_accuracy`
over the cells, in the same run; the accuracies compared on every cell."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.measure import Row, ratio, seconds
from dashboard.sidebar import control_ranges
from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle
from vrf_core.sensitivity import Sensitivity

N_A, N_B = 20, 10


def _grid(bundle, hp) -> tuple[np.ndarray, np.ndarray]:
    """The page's grid: the sidebar's a range evenly, its b range geometrically."""
    ranges = control_ranges(bundle, hp.vrf.scale, hp.vrf)
    return np.linspace(*ranges["a"], N_A), np.geomspace(max(ranges["b"][0], 1e-3), ranges["b"][1], N_B)


def _straightforward(splits, params_of_cells) -> tuple[float, float, np.ndarray]:
    """The loop over the cells: wall and CPU seconds, accuracies (splits, cells)."""
    t0, c0 = time.perf_counter(), time.process_time()
    accs = np.array([[s.vrf_accuracy(q) for q in params_of_cells] for s in splits])
    return time.perf_counter() - t0, time.process_time() - c0, accs


def bench_sensitivity(path: Path, repeats: int) -> list[Row]:
    bundle = open_bundle(path)
    hp = bundle_adapter.hyperparameters(bundle, "validation")
    splits = [bundle_adapter.topm_split(bundle, s, "validation") for s in bundle_adapter.eval_split_names(bundle)]
    n = sum(len(s) for s in splits)
    a, b = _grid(bundle, hp)
    p = hp.vrf
    ks = list(range(1, bundle.k_max + 1))

    t0, c0 = time.perf_counter(), time.process_time()
    sens = [Sensitivity(s) for s in splits]
    for s in sens:
        s.intervals(p.calibrate)
    first_intervals = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = np.stack([s.grid_accuracy(p, a, b) for s in sens])
    first_grid, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    held_k = [replace(p, k=k) for k in sorted({1, 5, 10, 50, p.k} & set(ks))]  # the page after a change of k
    warm, warm_cpu, exact0 = [], [], sum(s.exact_rows for s in sens)
    for _ in range(repeats):
        for q in held_k:
            t0, c0 = time.perf_counter(), time.process_time()
            [s.grid_accuracy(q, a, b) for s in sens]
            warm.append(time.perf_counter() - t0)
            warm_cpu.append(time.process_time() - c0)
    exact_pairs = (sum(s.exact_rows for s in sens) - exact0) / (repeats * len(held_k))
    cells = [replace(p, a=float(x), b=float(y)) for y in b for x in a]
    base_grid, base_cpu, want = _straightforward(splits, cells)
    if not np.array_equal(grid.reshape(len(splits), -1), want):
        raise AssertionError("the sensitivity grid differs from TopMSplit.vrf_accuracy")

    k_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        by_k = np.stack([s.k_accuracy(p, ks) for s in sens])
        k_times.append(time.perf_counter() - t0)
    base_k, _, want_k = _straightforward(splits, [replace(p, k=k) for k in ks])
    if not np.array_equal(by_k, want_k):
        raise AssertionError("the k curve differs from TopMSplit.vrf_accuracy")

    sizes = "+".join(f"{len(s) / 1000:.1f}k" for s in splits)
    fast_warm, fast_k = float(np.median(warm)), float(np.median(k_times))
    first = first_intervals + first_grid
    first_note = (f"{n} samples ({sizes}); CPU time {seconds(first_cpu)}; win intervals {seconds(first_intervals)} "
                  f"(once per split and temperature pair, kept) + grid {seconds(first_grid)}; straightforward: the "
                  f"loop over all {N_A * N_B} cells (none extrapolated; CPU time {seconds(base_cpu)}), stored tables; "
                  f"accuracies equal on every cell and split")
    warm_note = (f"median of {len(warm)} grids over k in {[q.k for q in held_k]}, CPU time "
                 f"{seconds(float(np.median(warm_cpu)))}; per grid, {exact_pairs:.1f} of the {n * N_A * N_B:,} "
                 f"(sample, cell) pairs went through the exact path (TopMSplit.mixture_preds)")
    return [
        Row(f"sensitivity grid, first view: VRF accuracy at {N_A} x {N_B} (a, b), all {len(splits)} evaluation splits",
            seconds(first), seconds(base_grid), ratio(base_grid, first), "<= 1 s", "yes" if first <= 1 else "no",
            first_note),
        Row(f"sensitivity grid after a change of k (intervals kept): {N_A} x {N_B}, {len(splits)} splits",
            seconds(fast_warm), seconds(base_grid), ratio(base_grid, fast_warm), "<= 1 s",
            "yes" if fast_warm <= 1 else "no", warm_note),
        Row(f"accuracy against k: every k = 1..{bundle.k_max}, {len(splits)} splits", seconds(fast_k), seconds(base_k),
            ratio(base_k, fast_k), "report", "-", f"median of {len(k_times)}; straightforward: vrf_accuracy at each k "
                                                  "(distances cached per k); accuracies equal"),
    ]
