"""Fixture builders that copy the benchmark suites' real on-disk layouts with tiny generated images.

Used by test_datasets.py (layout and label checks) and test_recipes_e2e.py (each recipe run end to end).
Images are either one constant colour (layout checks) or a class-coloured square (`class_square`), which
a tiny model learns in a few steps.
"""

from __future__ import annotations

import colorsys
import io
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def encoded(fmt: str, colour=(90, 120, 150), size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


JPEG = encoded("JPEG")


def class_colour(j: int) -> tuple[int, int, int]:
    """A saturated colour per class index; hues step by the golden ratio, so nearby indices differ most."""
    r, g, b = colorsys.hsv_to_rgb((j * 0.6180339887) % 1.0, 0.9, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def class_square(j: int, rng: np.random.Generator, size: int = 16, border: int = 0) -> np.ndarray:
    """(size, size, 3) uint8: a square of class j's colour on grey, at a random place, with pixel noise;
    with `border`, a red frame that many pixels wide (ObjectNet's)."""
    img = np.full((size, size, 3), 128, np.uint8)
    s = int(rng.integers(size // 3, size // 2 + 1))
    x0, y0 = rng.integers(border, size - border - s + 1, 2)
    img[y0:y0 + s, x0:x0 + s] = class_colour(j)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    if border:
        frame = np.ones((size, size), bool)
        frame[border:-border, border:-border] = False
        img[frame] = (255, 0, 0)
    return img


def image_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def class_tree(root: Path, folders: Sequence[str], suffix: str = ".JPEG",
               image: bytes | Callable[[int, int], bytes] = JPEG, extra: Mapping[int, int] | None = None) -> list[int]:
    """root/<folder>/img_k<suffix> with extra[j] (default 1) images in folder j; `image` is every file's bytes,
    or `image(j, k)` those of image k of folder j. Returns the counts."""
    counts = []
    for j, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        counts.append((extra or {}).get(j, 1))
        for k in range(counts[-1]):
            (root / folder / f"img_{k}{suffix}").write_bytes(image(j, k) if callable(image) else image)
    return counts


def bordered_png(border: int = 2) -> bytes:
    im = np.zeros((10, 12, 3), np.uint8)
    im[...] = (255, 0, 0)
    im[border:-border, border:-border] = (0, 255, 0)
    return image_bytes(im)


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes (SHORT_BINSTRING / BINSTRING), as the real CIFAR files have them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_pickle(obj, fmt) -> bytes:
    """`fmt` = "py2" (the CIFAR archive's own encoding) or a pickle protocol number."""
    if fmt == "py2":
        buf = io.BytesIO()
        Python2Pickler(buf, protocol=2).dump(obj)
        return buf.getvalue()
    return pickle.dumps(obj, protocol=fmt)


# (label, rng) -> one (side, side, 3) uint8 image; None: uniform noise
Draw = Callable[[int, np.random.Generator], np.ndarray] | None


def cifar_fixture(root: Path, fmt="py2", per_batch: int = 3, draw: Draw = None) -> tuple[dict, dict]:
    """cifar-10-batches-py/ with real-format batches; returns {split: images (N,32,32,3)}, {split: labels}."""
    rng = np.random.default_rng(2)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = {"train": [], "test": []}, {"train": [], "test": []}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, fname in enumerate(names):
        split = "test" if fname == "test_batch" else "train"
        n = per_batch + (1 if split == "test" else 0)
        imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labs = [int(y) for y in rng.integers(0, 10, size=n)]
        if draw is not None:
            imgs = np.stack([draw(y, rng) for y in labs])
        batch = {
            b"batch_label": f"batch {b}".encode(),
            b"labels": labs,
            b"data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072),  # rows: 1024 R, 1024 G, 1024 B bytes
            b"filenames": [f"img_{b}_{k}.png".encode() for k in range(n)],
        }
        (folder / fname).write_bytes(dump_pickle(batch, fmt))
        images[split].append(imgs)
        labels[split] += labs
    return {k: np.concatenate(v) for k, v in images.items()}, labels


def stl_fixture(root: Path, split: str, stl_labels: list[int], draw: Draw = None) -> np.ndarray:
    """stl10_binary/{split}_X.bin and _y.bin (labels 1..10); `draw` gets the 1-based STL label."""
    rng = np.random.default_rng(3)
    if draw is None:
        images = rng.integers(0, 256, size=(len(stl_labels), 96, 96, 3), dtype=np.uint8)
    else:
        images = np.stack([draw(y, rng) for y in stl_labels])
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    # The official format: each image stored column-major as 3x96x96, i.e. axes (channel, x, y).
    (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
    (folder / f"{split}_y.bin").write_bytes(bytes(stl_labels))
    return images
