"""`precompute convert SRC.pt DST.safetensors`: a WiSE-FT checkpoint (a pickled whole ImageClassifier) as a
safetensors state dict of vrf_core.models.ImageClassifier, read without running code from the file.

The result is what [finetune] checkpoint (and load_classifier_weights) reads; its `visual.*` tensors are also
the image tower a [model] section can start from.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Adds `convert SRC DST` to precompute's command line (no torch import: it runs for every --help)."""
    p = subparsers.add_parser("convert", help="a WiSE-FT zeroshot.pt / finetuned.pt file as a safetensors state dict")
    p.add_argument("src", help="WiSE-FT checkpoint (a pickled src.models.modeling.ImageClassifier)")
    p.add_argument("dst", help="output .safetensors file (visual.* and head.weight of vrf_core.models.ImageClassifier)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vrf_core.legacy_checkpoint import convert_to_safetensors
    from vrf_core.models import ModelError

    if Path(args.dst).suffix != ".safetensors":
        raise ModelError(f"{args.dst}: the output must be a .safetensors file")
    state = convert_to_safetensors(args.src, args.dst)
    classes, dim = state["head.weight"].shape
    print(f"{args.dst}: {len(state)} tensors, head {classes} classes x {dim} features", file=sys.stderr)
    return 0
