"""Tiny open_clip models and image folders made inside the tests (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
CLASSES = ["red square", "green circle", "blue triangle", "yellow cross"]
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 220, 40)]


def tiny_local_dir(folder: Path, seed: int = 0) -> Path:
    """An open_clip 'local-dir' model folder with random weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    cfg_path = folder / "tiny.json"
    cfg_path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_path)
    model = open_clip.create_model("tiny")
    cfg_path.unlink()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def draw(label: int, rng: np.random.Generator, style: str = "photo", size: int = 32) -> Image.Image:
    img = np.full((size, size, 3), 128 if style == "photo" else 255, np.uint8)
    colour = np.array(COLOURS[label]) if style == "photo" else np.array([40, 40, 40])
    x0, y0 = rng.integers(2, size // 2, 2)
    s = rng.integers(size // 4, size // 2)
    img[y0:y0 + s, x0:x0 + s] = colour
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def image_folder_tree(root: Path, n_per_class: int, seed: int, style: str = "photo",
                      classes: list[int] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    for j in classes if classes is not None else range(len(CLASSES)):
        d = root / CLASSES[j].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            draw(j, rng, style).save(d / f"{i:03d}.png")
    return root


def tiny_config(tmp: Path, model_dir: Path, **finetune) -> Path:
    """A complete `precompute run` config over tiny folders."""
    image_folder_tree(tmp / "data/train", 24, 1)
    image_folder_tree(tmp / "data/test", 10, 2)
    image_folder_tree(tmp / "data/sketch", 8, 3, style="sketch")
    image_folder_tree(tmp / "data/subset", 8, 4, classes=[0, 2, 3])
    ft = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "warmup_steps": 2, "workers": 0, **finetune}
    ft_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ft.items())
    text = f"""
[run]
name = "tiny"
out = "bundle"
batch_size = 32
workers = 0

[model]
name = "local-dir:{model_dir}"

[classes]
names = {json.dumps(CLASSES)}
templates = ["a photo of a {{}}.", "a drawing of a {{}}."]

[data.train]
type = "folder"
path = "data/train"
val_holdout = 16

[data.test]
type = "folder"
path = "data/test"

[data.ood.sketch]
type = "folder"
path = "data/sketch"

[data.ood.subset]
type = "folder"
path = "data/subset"

[finetune]
{ft_lines}

[ensemble]
wse_alphas = [0.0, 0.5, 1.0]
k_max = 8

[bundle]
umap = false
thumb_size = 32
"""
    path = tmp / "run.toml"
    path.write_text(text)
    return path
