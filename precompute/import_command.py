"""`precompute import --config FILE` (and `vrf-lab import`): the command-line side of
precompute/importer.py, kept apart so that building the parser imports neither torch nor the importer."""

from __future__ import annotations

import argparse

from precompute.importer_files import ArrayImportError

USER_ERRORS = (ArrayImportError,)  # one line and exit status 2 (precompute/__main__.py)


def register(subparsers) -> None:
    """Adds `import --config FILE` to precompute's command line."""
    p = subparsers.add_parser("import", help="a bundle from features and logits you already have (docs/import.md)")
    p.add_argument("--config", required=True, help="import config (TOML; docs/import.md)")


def run(args: argparse.Namespace) -> int:
    from precompute.importer import import_bundle
    from precompute.importer_config import load_import_config
    from precompute.report import print_report

    bundle = import_bundle(load_import_config(args.config))
    print_report(bundle, "validation", False)
    return 0
