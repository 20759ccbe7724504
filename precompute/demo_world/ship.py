"""The shipped demo CLIP: a float16 copy of the pretrained weights, committed to the repository
so that `make demo` fits its 5-minute budget on 2 cores without a GPU.

Regenerate it (after changing the renderer, the corpus or the recipe) with
    python -m precompute.demo_world.ship
which pretrains from scratch exactly as `precompute demo` would and writes `weights/`.
The copy is used only when its recipe key equals the current one (the key covers the
recipe, the seed and the source of render.py, corpus.py and pretrain.py); otherwise the
demo pretrains here.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from precompute.demo_world.pretrain import CONFIG_FILE, RECIPE_FILE, WEIGHTS_FILE, PretrainRecipe, build_pretrained_clip

SHIPPED = Path(__file__).parent / "weights"


def install_shipped(out_dir: Path, seed: int, recipe: PretrainRecipe) -> bool:
    """Copy the shipped weights (back to float32) into `out_dir` when they match the recipe and seed."""
    marker, key = SHIPPED / RECIPE_FILE, recipe.key(seed)
    if not marker.is_file() or json.loads(marker.read_text()).get("key") != key:
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / RECIPE_FILE).is_file() and json.loads((out_dir / RECIPE_FILE).read_text()).get("key") == key:
        return True
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(SHIPPED / WEIGHTS_FILE)).items()}
    save_file(sd, str(out_dir / WEIGHTS_FILE))
    shutil.copy(SHIPPED / CONFIG_FILE, out_dir / CONFIG_FILE)
    shutil.copy(marker, out_dir / RECIPE_FILE)  # last: its presence means the folder is complete
    return True


def ship(seed: int = 0) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_pretrained_clip(Path(tmp) / "clip", seed, PretrainRecipe())
        return ship_folder(folder)


def ship_folder(folder: Path) -> Path:
    """Write a float16 copy of a pretrained local-dir folder into weights/."""
    SHIPPED.mkdir(exist_ok=True)
    sd = load_file(str(folder / WEIGHTS_FILE))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, str(SHIPPED / WEIGHTS_FILE))
    shutil.copy(folder / CONFIG_FILE, SHIPPED / CONFIG_FILE)
    meta = json.loads((folder / RECIPE_FILE).read_text())
    meta["stored_as"] = "float16 copy of the float32 pretraining output"
    (SHIPPED / RECIPE_FILE).write_text(json.dumps(meta, indent=1))
    return SHIPPED


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(ship(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
