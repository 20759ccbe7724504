"""`precompute demo`: the embedded default experiment, generated on this machine.

The demo world (precompute/demo_world) writes image folders; a tiny open_clip CLIP is
pretrained contrastively on that world's caption corpus; then the ordinary `run`
pipeline treats it exactly like CLIP on ImageNet: zero-shot head from class names
and templates, end-to-end fine-tuning on the ID training split, extraction, bundle.
`finetune="flyp"` fine-tunes with FLYP instead (vrf_core/flyp.py), in a run of its own name.
"""

from __future__ import annotations

import json
from pathlib import Path

from precompute.config import parse_config
from precompute.demo_world.corpus import CorpusSpec
from precompute.demo_world.pretrain import PretrainRecipe, build_pretrained_clip
from precompute.demo_world.ship import install_shipped
from precompute.demo_world.world import DEMO_FINETUNE, DEMO_SIZES, write_demo_datasets
from precompute.pipeline import run
from vrf_core.bundle import Bundle
from vrf_core.progress import log

# A reduced world for tests: the same pipeline, seconds instead of minutes.
SMALL_SIZES = {"train": 600, "test": 200, "v2": 100, "sketch": 100, "rendition": 100, "hard": 70, "clutter": 100}
SMALL_PRETRAIN = {"steps": 40, "corpus": CorpusSpec(size=2000)}
# FLYP on the demo: E2E's schedule (DEMO_FINETUNE), the rate chosen by the fine-tuned model's accuracy on the
# validation split over 3e-5, 1e-4, 3e-4, 1e-3 (86.0, 93.8, 97.2, 97.4 %): training both towers contrastively
# from this tiny CLIP wants a larger rate than E2E's 1e-4 (ImageNet's FLYP rate is a third of E2E's).
DEMO_FLYP = {"mode": "flyp", "lr": 1e-3}


def demo_config(out: Path, model_dir: Path, meta: dict, small: bool, finetune_mode: str = "e2e") -> dict:
    """The demo as an ordinary `run` config (printed into the bundle's manifest like any other)."""
    data = {
        "train": {"type": "folder", "path": meta["splits"]["train"],
                  "val_holdout": max(100, meta["sizes"]["train"] // 10)},
        "test": {"type": "folder", "path": meta["splits"]["test"]},
        "ood": {s: {"type": "folder", "path": meta["splits"][s]} for s in meta["shifts"]},
    }
    finetune = {**DEMO_FINETUNE, **(DEMO_FLYP if finetune_mode == "flyp" else {}), "workers": 0, "seed": 0}
    if small:
        finetune.update(epochs=2)
    name = ("demo-small" if small else "demo") + ("" if finetune_mode == "e2e" else f"-{finetune_mode}")
    return {
        "run": {"name": name, "out": str(out), "seed": 0, "batch_size": 256,
                "workers": 0},
        "model": {"name": f"local-dir:{model_dir}"},
        "classes": {"names": meta["classnames"], "templates": meta["templates"]},
        "data": data,
        "finetune": finetune,
        "ensemble": {"k_max": 50},
        "bundle": {"thumb_size": 96, "umap": True, "umap_max_points": 6000 if not small else 1500},
    }


def build_demo(out: Path, small: bool = False, seed: int = 0, finetune: str = "e2e") -> Bundle:
    out = Path(out).resolve()
    work = out / "world"
    meta = write_demo_datasets(work / "images", seed, SMALL_SIZES if small else DEMO_SIZES)
    recipe = PretrainRecipe(**SMALL_PRETRAIN) if small else PretrainRecipe()
    if not small and install_shipped(work / "clip", seed, recipe):
        log("demo CLIP: using the shipped pretrained weights (precompute/demo_world/weights)")
    model_dir = build_pretrained_clip(work / "clip", seed, recipe)
    raw = demo_config(out, model_dir, meta, small, finetune)
    (work / "demo_config.json").write_text(json.dumps(raw, indent=1))
    return run(parse_config(raw, out, "demo config"))
