"""Command line: python -m precompute {demo,run,import,report,check,gc,convert,synthetic} ... (also `vrf-lab`,
precompute/cli.py, which adds `dashboard`).

A user error (a wrong config, dataset, checkpoint or bundle, a missing file, a full disk) is one line
`error: ...` on stderr and exit status 2; anything else is an internal error: one line naming it and
the file that holds its traceback, exit status 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

# OSErrors that mean a file the user named is missing, unreadable or cannot be written
USER_ERRNOS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT,
               errno.EROFS, errno.ENAMETOOLONG)


# Subcommands that live in their own module, each exposing `register(subparsers)` (adds its parser(s)) and
# `run(args) -> int | None` (None means 0). A module that does not exist (yet) is skipped; any other import
# error is raised. `register` should stay cheap (no torch import): it runs for every `--help`.
# A module may also expose USER_ERRORS, a tuple of exception types reported as `error: ...`, exit status 2.
SUBCOMMAND_MODULES = ("precompute.import_command", "precompute.convert")


def subcommand_modules() -> list:
    modules = []
    for name in SUBCOMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def build_parser(prog: str = "python -m precompute", add_more_subcommands=None) -> argparse.ArgumentParser:
    """The whole command line; `add_more_subcommands(subparsers)` lets another front end (vrf-lab) add its own."""
    parser = argparse.ArgumentParser(prog=prog, description="Build and inspect VRF run bundles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="build the demo bundle (generated world + tiny CLIP pretrained here)")
    p.add_argument("--out", default="bundles/demo", help="bundle folder (default: bundles/demo)")
    p.add_argument("--small", action="store_true", help="a reduced world for tests (seconds, not minutes)")
    p.add_argument("--finetune", choices=("e2e", "flyp"), default="e2e",
                   help="fine-tuning: end-to-end (default) or FLYP, contrastive over both towers")
    p.add_argument("--no-report", action="store_true", help="do not print the results table")
    p = sub.add_parser("run", help="the full pipeline for a config file")
    p.add_argument("--config", required=True, help="TOML config (see README and recipes/)")
    p = sub.add_parser("report", help="results table of a bundle")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="machine-readable output (keys: see precompute/report.py)")
    p.add_argument("--oracle", action="store_true", help="hyperparameters tuned on the ID test split (paper protocol)")
    p.add_argument("--verify", action="store_true", help="recompute every file's sha256 against the manifest first")
    p.add_argument("--recompute", action="store_true",
                   help="derive the table again from the bundle's arrays and say whether it agrees")
    p = sub.add_parser("check", help="verify every file of a bundle against its manifest")
    p.add_argument("bundle")
    p = sub.add_parser("gc", help="remove the cached stages and checkpoints the last completed run did not use")
    p.add_argument("out", help="a run's output folder (run.out)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p = sub.add_parser("synthetic", help="a seeded synthetic bundle (arrays from a generative model, no images)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    for module in subcommand_modules():
        known = set(sub.choices)
        module.register(sub)
        for command in set(sub.choices) - known:
            sub.choices[command].set_defaults(run_subcommand=module.run)
    if add_more_subcommands is not None:
        add_more_subcommands(sub)
    return parser


def execute(args: argparse.Namespace) -> int:
    """Runs one subcommand; returns its exit status."""
    from vrf_core.bundle import open_bundle

    t0 = time.perf_counter()
    run_subcommand = getattr(args, "run_subcommand", None)
    if run_subcommand is not None:  # import, convert (SUBCOMMAND_MODULES)
        return run_subcommand(args) or 0
    if args.command == "run":
        from precompute.config import load_config

        cfg = load_config(args.config)  # every value checked before the pipeline (and torch's models) load
        from precompute.pipeline import run

        bundle = run(cfg)
        if bundle is not None:
            from precompute.report import print_report

            print_report(bundle, "validation", False)
    elif args.command == "demo":
        from precompute.demo import build_demo

        bundle = build_demo(Path(args.out), small=args.small, finetune=args.finetune)
        print(f"demo bundle built in {time.perf_counter() - t0:.0f} s: {args.out}", file=sys.stderr)
        if not args.no_report:
            from precompute.report import print_report

            print_report(bundle, "validation", False)
    elif args.command == "report":
        from precompute.report import print_report

        return print_report(open_bundle(args.bundle, verify=args.verify), "oracle" if args.oracle else "validation",
                            args.json, recompute=args.recompute)
    elif args.command == "check":
        bundle = open_bundle(args.bundle, verify=True)
        print(f"{args.bundle}: schema {bundle.manifest['schema_version']}, {len(bundle.manifest['files'])} files "
              "verified")
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
    return 0


def user_errors() -> tuple[type[Exception], ...]:
    """The ValueErrors raised for wrong input; each message already names the file, the field and the fix."""
    from precompute.assemble import AssembleError
    from precompute.config import ConfigError
    from precompute.gc import GcError
    from vrf_core.bundle import BundleError
    from vrf_core.data import DatasetError
    from vrf_core.filesafe import UnsafePathError
    from vrf_core.models import ModelError

    from_modules = tuple(error for module in subcommand_modules() for error in getattr(module, "USER_ERRORS", ()))
    return (AssembleError, ConfigError, GcError, BundleError, DatasetError, UnsafePathError, ModelError,
            *from_modules)


def os_error_message(exc: OSError) -> str:
    """'path: reason' (DiskFullError's reason already names the file and the fix)."""
    from vrf_core.filesafe import DiskFullError

    if isinstance(exc, DiskFullError) or not exc.filename:
        return exc.strerror or str(exc)
    return f"{exc.filename}: {exc.strerror}"


def report_crash(exc: BaseException, command_line: str) -> int:
    """An internal error: its full traceback goes to a file, stderr gets one line naming both."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"vrf-lab-crash-{stamp}-{os.getpid()}.txt"
    details = f"{command_line}\n\n{traceback.format_exc()}"
    try:
        path.write_text(details)
    except OSError:
        print(details, file=sys.stderr)  # nowhere to put it: show it rather than lose it
        return 1
    first_line = (str(exc).splitlines() or [""])[0]
    print(f"internal error: {type(exc).__name__}: {first_line} (full traceback in {path})",
          file=sys.stderr)
    return 1


def execute_reporting_errors(args: argparse.Namespace, command_line: str) -> int:
    """`execute`, with user errors as one line (exit status 2) and internal errors as a crash file (1)."""
    try:
        return execute(args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            return report_crash(exc, command_line)
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report_crash(exc, command_line)


def main(argv: list[str] | None = None, prog: str = "python -m precompute") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    return execute_reporting_errors(args, " ".join([prog, *argv]))


if __name__ == "__main__":
    sys.exit(main())
