"""`vrf-lab`, the console command of an installed vrf-lab (pyproject.toml, [project.scripts]).

    vrf-lab demo | run | import | report | check | gc | convert | synthetic ...   = python -m precompute ...
    vrf-lab dashboard [--bundles DIR] [--port N] [--address HOST] [--headless] = python -m dashboard ...

A thin front end: the precompute subcommands are parsed and run by precompute/__main__.py (same options,
same exit statuses), `dashboard` starts the Streamlit app through dashboard/__main__.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from precompute.__main__ import build_parser, execute_reporting_errors

PROG = "vrf-lab"


def add_dashboard_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dashboard", help="the Streamlit dashboard over a folder of bundles",
                              description="Starts the dashboard (python -m dashboard) on a folder of bundles.")
    p.add_argument("--bundles", default="bundles",
                   help="folder searched for bundles (default: ./bundles, relative to the current folder)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default: 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")


def streamlit_options(args: argparse.Namespace) -> list[str]:
    """dashboard/__main__.py's arguments: Streamlit's options, then `--` and the app's own."""
    options = ["--server.port", str(args.port), "--server.address", args.address]
    if args.headless:
        options += ["--server.headless", "true"]
    # absolute: the dashboard's "build the demo" button runs precompute from another working folder
    return [*options, "--", "--bundles", str(Path(args.bundles).resolve())]


def start_dashboard(args: argparse.Namespace) -> int:
    from dashboard.__main__ import main as dashboard_main  # imports Streamlit and plotly: only for this command

    print(f"Dashboard: http://{args.address}:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    dashboard_main(streamlit_options(args))
    return 0


def build_vrf_lab_parser() -> argparse.ArgumentParser:
    parser = build_parser(PROG, add_more_subcommands=add_dashboard_subcommand)
    parser.description = "Build, inspect and browse VRF run bundles."
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_vrf_lab_parser().parse_args(argv)
    if args.command == "dashboard":
        return start_dashboard(args)
    return execute_reporting_errors(args, " ".join([PROG, *argv]))


if __name__ == "__main__":
    sys.exit(main())
