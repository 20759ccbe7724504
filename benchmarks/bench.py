"""Benchmarks on an ImageNet-shaped workload: `python -m benchmarks.bench [--scale imagenet|small]`.

Every figure is measured in the same run against the straightforward implementation and
printed as one markdown table (results and the machine: docs/benchmarks.md):

- derive:  what precompute derives and stores (hyperparameters of both modes, predictions,
           top-m tables, results, curves), tuned through the top-m tables vs on full
           mixtures; and the bundle's size against schema 1's (benchmarks/derivation.py)
- live:    the six test sets' VRF accuracy after a change of a, b, k, rule or calibration, and
           the trade-off curves: vrf_core.topm vs full N x C mixtures (benchmarks/live.py)
- knn:     exact kNN to the ZSF set, vrf_core.knn vs a flat faiss index, and IVF (benchmarks/knn.py)
- sensitivity: the Sensitivity page's (a, b) grid and k curve, vrf_core.sensitivity vs a loop of
           TopMSplit.vrf_accuracy over the cells (benchmarks/sensitivity.py)
- cold:    dashboard cold start on the library path, in fresh processes (benchmarks/cold.py)
- extract: one decode for both models vs a pass per model, and torchrun (benchmarks/extract.py)

The workload (benchmarks/workload.py) is a seeded synthetic bundle with ImageNet's shapes,
written once by precompute.synthetic.large and reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.cold import bench_cold
from benchmarks.derivation import bench_derive, bench_size
from benchmarks.extract import bench_extract
from benchmarks.knn import bench_knn
from benchmarks.live import bench_live
from benchmarks.measure import Row, load, machine, seconds, table
from benchmarks.sensitivity import bench_sensitivity
from benchmarks.workload import SCALES, ensure_workload

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("derive", "live", "sensitivity", "knn", "cold", "extract")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=list(SCALES), default="imagenet")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES))
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the fast paths (fewer of the slow ones)")
    parser.add_argument("--bundle", help="where the workload bundle is written and reused "
                                         "(default: bundles/bench-<scale>)")
    parser.add_argument("--m", type=int, default=5, help="top classes kept per model for live re-weighting")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scale = SCALES[args.scale]
    path = Path(args.bundle or ROOT / "bundles" / f"bench-{args.scale}")
    started = load()
    rows: list[Row] = []
    if {"derive", "live", "knn", "cold"} & set(args.only):
        written = ensure_workload(path, scale)
        if written is not None:
            rows.append(Row("workload bundle written: generated, then precompute.assemble.finish (derive)",
                            seconds(written), "-", "-", "report", "-", f"{path}; reused by later runs"))
    if "derive" in args.only:
        rows += bench_derive(path) + bench_size(path)
    if "live" in args.only:
        rows += bench_live(path, args.repeats, args.m)
    if "sensitivity" in args.only:  # reads a workload bundle as it is (e.g. one opened read-only)
        if not (path / "manifest.json").exists():
            ensure_workload(path, scale)
        rows += bench_sensitivity(path, args.repeats)
    if "knn" in args.only:
        rows += bench_knn(path, scale.knn_queries, args.repeats)
    if "cold" in args.only:
        rows += bench_cold(path, args.repeats)
    if "extract" in args.only:
        with tempfile.TemporaryDirectory() as work:
            rows += bench_extract(scale.images, args.repeats, Path(work))
    note = "" if args.scale == "imagenet" else " The targets are for --scale imagenet; this scale checks the code."
    print(f"## Benchmark, scale {args.scale}\n\n{machine()}\n\nAt start: {started}; at end: {load()}.{note}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
