"""Command line: python -m precompute {demo,run,report,gc,synthetic} ..."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute",
                                     description="Build and inspect VRF run bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build the demo bundle (generated world + tiny CLIP pretrained here)")
    p.add_argument("--out", default="bundles/demo", help="bundle folder (default: bundles/demo)")
    p.add_argument("--small", action="store_true", help="a reduced world for tests (seconds, not minutes)")
    p.add_argument("--no-report", action="store_true", help="do not print the results table")
    p = sub.add_parser("run", help="the full pipeline for a config file")
    p.add_argument("--config", required=True, help="TOML config (see README and recipes/)")
    p = sub.add_parser("report", help="results table of a bundle")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="machine-readable output (keys: see precompute/report.py)")
    p.add_argument("--oracle", action="store_true", help="hyperparameters tuned on the ID test split (paper protocol)")
    p.add_argument("--verify", action="store_true", help="recompute every file's sha256 against the manifest first")
    p = sub.add_parser("gc", help="remove the cached stages and checkpoints the last completed run did not use")
    p.add_argument("out", help="a run's output folder (run.out)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p = sub.add_parser("synthetic", help="a seeded synthetic bundle (arrays from a generative model, no images)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from precompute.assemble import AssembleError
    from precompute.config import ConfigError
    from precompute.gc import GcError
    from vrf_core.bundle import BundleError, open_bundle
    from vrf_core.data import DatasetError
    from vrf_core.models import ModelError

    t0 = time.perf_counter()
    try:
        if args.command == "run":
            from precompute.config import load_config
            from precompute.pipeline import run

            bundle = run(load_config(args.config))
            if bundle is not None:
                from precompute.report import print_report

                print_report(bundle, "validation", False)
        elif args.command == "demo":
            from precompute.demo import build_demo

            bundle = build_demo(Path(args.out), small=args.small)
            print(f"demo bundle built in {time.perf_counter() - t0:.0f} s: {args.out}", file=sys.stderr)
            if not args.no_report:
                from precompute.report import print_report

                print_report(bundle, "validation", False)
        elif args.command == "report":
            from precompute.report import print_report

            print_report(open_bundle(args.bundle, verify=args.verify), "oracle" if args.oracle else "validation",
                         args.json)
        elif args.command == "gc":
            from precompute.gc import collect

            done = collect(args.out, args.dry_run)
            verb = "would remove" if args.dry_run else "removed"
            for folder in done.removed:
                print(f"{verb} {folder}")
            print(f"{verb} {len(done.removed)} folder(s), {done.freed_bytes / 2**20:.1f} MiB; kept {len(done.kept)} "
                  "used by the last run", file=sys.stderr)
        elif args.command == "synthetic":
            from precompute.synthetic import SyntheticSpec, write_synthetic_bundle

            write_synthetic_bundle(args.out, SyntheticSpec(seed=args.seed))
    except (AssembleError, ConfigError, BundleError, DatasetError, ModelError, GcError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
