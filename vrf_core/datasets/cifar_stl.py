"""CIFAR-10 (its python batch files) as ID data, STL-10 (its binary files) as the OOD shift.

Both are labelled in CIFAR-10's class space: STL-10's "monkey" has no CIFAR-10 counterpart and
is dropped, its other classes are renamed (STL "car" is CIFAR "automobile"), and CIFAR's "frog"
simply has no STL-10 samples. The model's class names must be CIFAR-10's ten, in their order.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image

from vrf_core.data import DatasetError, ImageSet, array_image_set
from vrf_core.datasets.layout import choice, dataset_loader, descend, require_files, require_model_classes
from vrf_core.datasets.metadata import stl10_to_cifar10_labels
from vrf_core.safe_unpickle import SafeUnpickleError, load_allowlisted

CIFAR_SIDE, STL_SIDE = 32, 96
_NUMERIC_DTYPE = re.compile(r"[biuf]\d{1,2}")  # numpy's pickled dtype names: u1, i8, f4, b1, ...


def _ascii(value: object) -> object:
    """numpy's names as text: a Python 2 `str` arrives as bytes (the unpickler keeps them raw)."""
    return value.decode("ascii") if isinstance(value, bytes) else value


class _PickledDtype:
    """numpy.dtype(name, align, copy) as a pickle calls it; the byte order arrives by BUILD."""

    def __init__(self, name: object):
        name = _ascii(name)
        if not isinstance(name, str) or not _NUMERIC_DTYPE.fullmatch(name):
            raise pickle.UnpicklingError(f"dtype {name!r:.40} is not a plain numeric type")
        self.dtype = np.dtype(name)

    def __setstate__(self, state: object) -> None:
        byteorder = _ascii(state[1]) if isinstance(state, tuple) and len(state) > 1 else None
        if byteorder not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")
        if byteorder in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(byteorder)


def _checked_shape(shape: object, dtype: object, data: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"bad array shape {shape!r:.80}")
    if not isinstance(dtype, _PickledDtype) or type(data) not in (bytes, bytearray):
        raise pickle.UnpicklingError("array data must be the raw bytes of a numeric dtype")
    if len(data) != math.prod(shape) * dtype.dtype.itemsize:
        raise pickle.UnpicklingError(f"{len(data)} data bytes do not fill an array of shape {shape} and {dtype.dtype}")
    return shape


class _PickledArray(np.ndarray):
    """The empty array numpy's _reconstruct makes; its BUILD state is checked before numpy's __setstate__ sees it."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1 or type(state[3]) is not bool:
            raise pickle.UnpicklingError("unexpected ndarray state")
        _, shape, dtype, fortran_order, data = state
        shape = _checked_shape(shape, dtype, data)
        super().__setstate__((1, shape, dtype.dtype, fortran_order, bytes(data)))


def _numpy_dtype(name: object, align: object = False, copy: object = True) -> _PickledDtype:
    return _PickledDtype(name)  # align and copy change nothing for a plain numeric dtype


def _numpy_ndarray(*_args: object) -> NoReturn:
    raise pickle.UnpicklingError("numpy.ndarray is allowed only as the first argument of _reconstruct")


def _numpy_reconstruct(subtype: object, shape: object, typecode: object) -> _PickledArray:
    """Protocols 2-4: _reconstruct(ndarray, (0,), b"b") makes an empty array that BUILD then fills."""
    if subtype is not _numpy_ndarray or shape != (0,) or _ascii(typecode) != "b":
        raise pickle.UnpicklingError("numpy _reconstruct with unexpected arguments")
    return np.empty(0, np.int8).view(_PickledArray)


def _numpy_frombuffer(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """Protocol 5: numpy's _frombuffer(data, dtype, shape, order) with its data in-band."""
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"unexpected array order {order!r:.20}")
    shape = _checked_shape(shape, dtype, data)
    return np.frombuffer(data, dtype.dtype).reshape(shape, order=order)


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """Protocol 2 from Python 3 writes bytes as _codecs.encode(text, "latin1")."""
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode with arguments other than (text, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """Protocol 2 from Python 3 writes b"" as __builtin__.bytes()."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments")
    return b""


# Every global a CIFAR batch (a dict of bytes, lists and one uint8 array) names, as numpy 1 or 2 writes it.
CIFAR_PICKLE_GLOBALS: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): _numpy_ndarray,
    ("numpy", "dtype"): _numpy_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}


def _file_stats(files) -> dict[str, list[int]]:
    """{file name: [size, mtime_ns]}: the pixels of these sets live in a few binary files, not one file per image."""
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}


def _cifar_split(name: str, model_classnames: list[str], split: str) -> str:
    require_model_classes(name, model_classnames, 10, "CIFAR-10")
    return choice(name, "split", split, ("train", "test"))


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,)) from one batch file: rows of 3072 bytes, R then G then B planes."""
    try:
        batch = load_allowlisted(path, CIFAR_PICKLE_GLOBALS)
    except SafeUnpickleError as exc:
        raise DatasetError(f"{exc} (a CIFAR-10 'python version' batch names only numpy's array globals)") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    entries = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be a uint8 array with 3072 columns")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(y, int) for y in labels):
        raise DatasetError(f"{path}: 'labels' must be a list of {len(data)} integers")
    images = data.view(np.ndarray).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
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
