"""The demo's evaluation world: an ID domain with a spurious cue, and five ImageNet-like shifts.

In the ID domain (`train`, `test`) the background hue usually names the class, a shortcut the
pretraining corpus never offered (its backgrounds have random hues), and the objects are framed
smaller than in the corpus's photos. Fine-tuning on ID latches onto the shortcut, zero-shot CLIP
cannot use it: the ID-up, OOD-down regime of CLIP on ImageNet. `v2` keeps the cue half as often;
`rendition`, `hard` (a class subset, like ImageNet-A) and `clutter` paint backgrounds in another
class's hue; `sketch` is greyscale.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from precompute.demo_world.digest import source_digest
from precompute.demo_world.render import CLASS_HUES, CLASSNAMES, IMAGE_SIZE, render
from vrf_core.bundle import atomic_write_json

SPLIT_DOMAINS = {"train": "id", "test": "id", "v2": "v2", "sketch": "sketch", "rendition": "rendition",
                 "hard": "hard", "clutter": "clutter"}
SHIFTS = ("v2", "sketch", "rendition", "hard", "clutter")
# Background hue policy per split: (whose hue, probability); other samples draw a random hue. ID carries
# the class's own hue (the shortcut), V2 a little less often; the renditions, ObjectNet-like and adversarial
# splits paint backgrounds in another class's hue (a reversed cue); sketches are greyscale.
BACKGROUND_CUE = {"train": ("own", 0.9), "test": ("own", 0.9), "v2": ("own", 0.5), "rendition": ("other", 1.0),
                  "hard": ("other", 1.0), "clutter": ("other", 1.0)}
HARD_CLASSES = (0, 1, 2, 4, 5, 7, 9)  # ImageNet-A-like subset of the 10 classes
TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "a sketch of a {}.", "a drawing of a {}.", "a cartoon {}.",
             "a painting of a {}.", "a {} in a cluttered scene.", "a close-up photo of the {}.")
DEMO_SIZES = {"train": 5000, "test": 1500, "v2": 1000, "sketch": 1000, "rendition": 1000, "hard": 700,
              "clutter": 1000}
DEMO_FINETUNE = {"epochs": 5, "lr": 1e-4, "batch_size": 128, "warmup_steps": 20, "weight_decay": 0.1}
_MANIFEST = "world.json"


def split_classes(split: str) -> tuple[int, ...]:
    """Model class indices present in a split (a subset for `hard`)."""
    return HARD_CLASSES if split == "hard" else tuple(range(len(CLASSNAMES)))


def sample_split(split: str, n: int, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, size, size, 3) uint8 and model-class labels (n,) of one split, balanced over its classes.

    Each split has its own random stream, so resizing one split leaves the others unchanged.
    """
    rng = np.random.default_rng([seed, 2, list(SPLIT_DOMAINS).index(split)])
    classes = split_classes(split)
    labels = np.array([classes[i % len(classes)] for i in range(n)], np.int64)
    images = np.empty((n, size, size, 3), np.uint8)
    whose, p = BACKGROUND_CUE.get(split, ("own", 0.0))
    for i, cls in enumerate(labels):
        if rng.random() >= p:
            hue = float(rng.random())
        elif whose == "own":
            hue = CLASS_HUES[cls]
        else:
            hue = CLASS_HUES[(cls + rng.integers(1, len(CLASSNAMES))) % len(CLASSNAMES)]
        images[i] = render(int(cls), SPLIT_DOMAINS[split], rng, hue, size)
    return images, labels


def write_demo_datasets(root: Path, seed: int, sizes: dict | None = None) -> dict:
    """Write `root/<split>/<classname>/<i>.png` for every split and return the world's metadata:
    class names, templates, split folders, each split's domain, and the class subset of `hard`.

    Reuses `root` when its manifest says it was written with the same seed, sizes and generating code.
    """
    root = Path(root)
    sizes = {**DEMO_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(SPLIT_DOMAINS)
    if unknown:
        raise ValueError(f"write_demo_datasets: unknown splits {sorted(unknown)}; expected {list(SPLIT_DOMAINS)}")
    meta = {
        "classnames": list(CLASSNAMES),
        "templates": list(TEMPLATES),
        "splits": {s: str(root / s) for s in SPLIT_DOMAINS},
        "domains": dict(SPLIT_DOMAINS),
        "id_splits": ["train", "test"],
        "shifts": list(SHIFTS),
        "class_subsets": {"hard": list(HARD_CLASSES)},
        "sizes": sizes,
        "seed": seed,
        "code": source_digest("render.py", "world.py"),
    }
    manifest = root / _MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == meta:
        return meta
    manifest.unlink(missing_ok=True)  # written last: its presence means every image is there
    for split, domain_dir in meta["splits"].items():
        shutil.rmtree(domain_dir, ignore_errors=True)
        images, labels = sample_split(split, sizes[split], seed)
        for cls in split_classes(split):
            (Path(domain_dir) / CLASSNAMES[cls]).mkdir(parents=True)
        for i, (img, cls) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(Path(domain_dir) / CLASSNAMES[cls] / f"{i}.png")
    atomic_write_json(manifest, meta)
    return meta
