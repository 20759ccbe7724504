"""`precompute gc OUT [--dry-run]`: remove the cached stages and fine-tuning checkpoints of an
output folder that its last completed run did not use.

Every stage result is kept under `OUT/cache/<stage>-<key>` and every fine-tuning run under
`OUT/checkpoints/ft-<key>`, keyed by the content of their inputs, so that an unchanged rerun
recomputes nothing. Changing a config leaves the old results behind (at ImageNet scale,
gigabytes of features per stage). `OUT/stages.json` lists what the last run used; gc keeps
exactly that. It refuses when that run did not finish (its stages would be needed to resume)
and takes the folder's run lock, so it never races a run.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from precompute.pipeline import exclusive
from vrf_core.bundle import BundleError, open_bundle

KEYED = re.compile(r"(.+)-[0-9a-f]{16}")
PARTIAL = re.compile(r"\.(.+)\.partial")


class GcError(ValueError):
    """The folder cannot be collected safely; the message names the file and the fix."""


@dataclass
class Collection:
    kept: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0


def used_paths(out: Path) -> set[Path]:
    """The stage folders and checkpoint folders the last run of `out` used; raises GcError unless that
    run finished (its record holds the assemble stage of the bundle now in `out`)."""
    record_file = out / "stages.json"
    try:
        record = json.loads(record_file.read_text())["stages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GcError(f"{record_file}: no readable record of the last run ({exc}); run `python -m precompute run` "
                      "for this folder first") from exc
    assembled = [r["key"] for r in record if r.get("stage") == "assemble"]
    try:
        manifest_key = open_bundle(out).manifest.get("assemble_key", "")
    except BundleError as exc:
        raise GcError(f"{out}: the last run left no readable bundle ({exc}); finish the run before collecting, "
                      "its cached stages are what it resumes from") from exc
    if not assembled or not manifest_key.startswith(assembled[-1]):
        raise GcError(f"{record_file}: the last run did not finish (no completed assemble stage for the bundle in "
                      f"{out}); finish or resume it before collecting, its cached stages are what it resumes from")
    used = set()
    for r in record:
        if r["stage"] == "finetune":
            used.add(out / "checkpoints" / f"ft-{r['key']}")
        elif r["stage"] != "assemble":
            used.add(out / "cache" / f"{r['stage']}-{r['key']}")
    return used


def _candidates(folder: Path) -> list[Path]:
    """Keyed result folders (`<name>-<16 hex>`) and half-written ones (`.<name>.partial`) under folder,
    not looking inside them."""
    found = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.is_dir():
            found += [p] if KEYED.fullmatch(p.name) or PARTIAL.fullmatch(p.name) else _candidates(p)
    return found


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def collect(out: str | Path, dry_run: bool = False) -> Collection:
    out = Path(out).resolve()
    if not out.is_dir():
        raise GcError(f"{out}: no such folder")
    result = Collection()
    with exclusive(out):
        used = used_paths(out)
        for root in (out / "cache", out / "checkpoints"):
            for folder in _candidates(root):
                if folder in used:
                    result.kept.append(folder)
                    continue
                result.removed.append(folder)
                result.freed_bytes += _size(folder)
                if not dry_run:
                    shutil.rmtree(folder)
            if not dry_run and root.is_dir():  # folders the removals left empty (cache/extract/<old split>/)
                for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    if not any(d.iterdir()):
                        d.rmdir()
    return result
