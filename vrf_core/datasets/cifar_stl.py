"""CIFAR-10 (its python batch files) as ID data, STL-10 (its binary files) as the OOD shift.

Both are labelled in CIFAR-10's class space: STL-10's "monkey" has no CIFAR-10 counterpart and
is dropped, its other classes are renamed (STL "car" is CIFAR "automobile"), and CIFAR's "frog"
simply has no STL-10 samples. The model's class names must be CIFAR-10's ten, in their order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vrf_core.data import DatasetError, ImageSet, array_image_set
from vrf_core.datasets.layout import choice, dataset_loader, descend, require_files, require_model_classes
from vrf_core.datasets.metadata import stl10_to_cifar10_labels
from vrf_core.datasets.safe_pickle import parse_pickle

CIFAR_SIDE, STL_SIDE = 32, 96


def _file_stats(files) -> dict[str, list[int]]:
    """{file name: [size, mtime_ns]}: the pixels of these sets live in a few binary files, not one file per image."""
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}


def _cifar_split(name: str, model_classnames: list[str], split: str) -> str:
    require_model_classes(name, model_classnames, 10, "CIFAR-10")
    return choice(name, "split", split, ("train", "test"))


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,)) from one batch file: rows of 3072 bytes, R then G then B planes."""
    batch = parse_pickle(path.read_bytes(), str(path))
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    entries = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be a uint8 array with 3072 columns")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(y, int) for y in labels):
        raise DatasetError(f"{path}: 'labels' must be a list of {len(data)} integers")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, dtype=np.int64)


@dataset_loader(
    "path/cifar-10-batches-py/data_batch_1..data_batch_5 (train) and test_batch (test), the CIFAR-10 "
    "'python version' archive extracted (path may also be cifar-10-batches-py itself)"
)
def cifar10(name: str, path: Path, model_classnames: list[str], split: str = "train") -> ImageSet:
    split = _cifar_split(name, model_classnames, split)
    root = descend(path, "cifar-10-batches-py")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches = [_cifar_batch(f) for f in require_files(name, root, files)]
    images = np.ascontiguousarray(np.concatenate([b[0] for b in batches]))
    labels = np.concatenate([b[1] for b in batches])
    ds = array_image_set(name, images, labels, model_classnames, ref_prefix=f"cifar-10-batches-py/{split}")
    ds.root = str(root)
    ds.notes["source_files"] = _file_stats(root / f for f in files)
    return ds


@dataset_loader(
    "path/stl10_binary/{split}_X.bin and {split}_y.bin: uint8 images stored column-major as 3x96x96, "
    "labels 1..10 (path may also be stl10_binary itself)"
)
def stl10(name: str, path: Path, model_classnames: list[str], split: str = "test") -> ImageSet:
    split = _cifar_split(name, model_classnames, split)
    root = descend(path, "stl10_binary")
    x_file, y_file = require_files(name, root, [f"{split}_X.bin", f"{split}_y.bin"])
    stl_labels = np.fromfile(y_file, dtype=np.uint8).astype(np.int64)
    if len(stl_labels) == 0 or stl_labels.min() < 1 or stl_labels.max() > 10:
        raise DatasetError(f"{name}: {y_file} must hold one byte per image with labels 1..10")
    image_bytes = 3 * STL_SIDE * STL_SIDE
    if x_file.stat().st_size != len(stl_labels) * image_bytes:
        raise DatasetError(f"{name}: {x_file} has {x_file.stat().st_size} bytes, expected {len(stl_labels)} "
                           f"images x {image_bytes} bytes for the {len(stl_labels)} labels in {y_file.name}")
    # Column-major 3x96x96 per image: axes (channel, x, y) in C order, hence the (0, 3, 2, 1) transpose to HWC.
    pixels = np.memmap(x_file, dtype=np.uint8, mode="r", shape=(len(stl_labels), 3, STL_SIDE, STL_SIDE))
    cifar_labels = np.asarray(stl10_to_cifar10_labels())[stl_labels - 1]
    keep = np.flatnonzero(cifar_labels >= 0)

    def load(i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(pixels[keep[i]].transpose(2, 1, 0)))

    refs = [f"stl10_binary/{split}_X.bin#{i}" for i in keep]
    ds = ImageSet(name, refs, cifar_labels[keep], model_classnames, load, None, str(root))
    ds.notes["removed"] = {"class": "monkey", "count": int(len(stl_labels) - len(keep))}
    ds.notes["source_files"] = _file_stats([x_file, y_file])
    return ds
