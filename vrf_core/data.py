"""Image datasets as flat lists of samples, plus the class projection they carry.

An `ImageSet` is the only thing the extraction and fine-tuning code needs from a
dataset: a length, a way to load sample `i` as an RGB PIL image, its label and a
stable reference string (a relative path, or `file#index` for binary formats).
Each set carries its own `ClassProjection` (WiSE-FT's idea): subset datasets such
as ImageNet-A/R or ObjectNet need no special case anywhere else.

Layout-specific loaders (ImageNet, CIFAR-10, ...) live in `vrf_core.datasets`
and return an `ImageSet`; this module holds the generic folder and CSV layouts.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class DatasetError(ValueError):
    """A dataset on disk does not have the layout or content we expect."""


@dataclass(frozen=True)
class ClassProjection:
    """Maps the model's C-way logits onto a dataset's own classes.

    `groups[j]` lists the model classes that make up dataset class j. The projected
    logit of class j is the maximum over its group (ObjectNet's rule); a subset
    dataset (ImageNet-A/R) has one model class per group.
    """

    groups: tuple[tuple[int, ...], ...]

    @classmethod
    def subset(cls, indices: Sequence[int]) -> ClassProjection:
        return cls(tuple((int(i),) for i in indices))

    @classmethod
    def from_json(cls, obj: dict | None) -> ClassProjection | None:
        if obj is None:
            return None
        return cls(tuple(tuple(int(i) for i in g) for g in obj["groups"]))

    def to_json(self) -> dict:
        return {"groups": [list(g) for g in self.groups]}

    @property
    def num_classes(self) -> int:
        return len(self.groups)

    @property
    def is_subset(self) -> bool:
        return all(len(g) == 1 for g in self.groups)

    def check(self, num_model_classes: int, where: str) -> None:
        for j, g in enumerate(self.groups):
            if not g:
                raise DatasetError(f"{where}: projection group {j} is empty")
            bad = [i for i in g if not 0 <= i < num_model_classes]
            if bad:
                raise DatasetError(
                    f"{where}: projection group {j} names model classes {bad}, "
                    f"outside 0..{num_model_classes - 1}"
                )


@dataclass
class ImageSet:
    """A labelled image dataset: `refs[i]` names sample i, `labels[i]` its class.

    `load_fn(i)` returns sample i as an RGB image. `classnames` are the dataset's
    own classes (after projection); `projection` is None when they equal the model's.
    """

    name: str
    refs: list[str]
    labels: np.ndarray
    classnames: list[str]
    load_fn: Callable[[int], Image.Image]
    projection: ClassProjection | None = None
    root: str = ""
    notes: dict = field(default_factory=dict)
    _files_key: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.refs) != len(self.labels):
            raise DatasetError(f"{self.name}: {len(self.refs)} samples but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classnames)):
            bad = int(self.labels[(self.labels < 0) | (self.labels >= len(self.classnames))][0])
            raise DatasetError(
                f"{self.name}: label {bad} is outside the class list (0..{len(self.classnames) - 1}); "
                "check the class list or the labels file"
            )

    def __len__(self) -> int:
        return len(self.refs)

    def load(self, i: int) -> Image.Image:
        return self.load_fn(i)

    def subset(self, indices: Sequence[int], name: str | None = None) -> ImageSet:
        idx = np.asarray(indices, dtype=np.int64)
        parent = self.load_fn
        return ImageSet(
            name=name or self.name,
            refs=[self.refs[i] for i in idx],
            labels=self.labels[idx],
            classnames=self.classnames,
            load_fn=lambda i: parent(int(idx[i])),
            projection=self.projection,
            root=self.root,
            notes=dict(self.notes),
        )

    def without(self, refs: Sequence[str]) -> ImageSet:
        """This set minus the samples named in `refs` (e.g. unreadable files being skipped)."""
        drop = set(refs)
        return self.subset([i for i, r in enumerate(self.refs) if r not in drop])

    def files_key(self) -> str:
        """Content key of the sample files alone: references plus, for file-backed sets, each file's size
        and modification time (an edited image changes the key without reading every byte)."""
        if self._files_key is None:
            h = hashlib.sha256()
            root = Path(self.root) if self.root else None
            for ref in self.refs:
                h.update(ref.encode())
                h.update(b"\x00")
                if root is not None and "#" not in ref:
                    try:
                        st = (root / ref).stat()
                        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
                    except OSError:
                        h.update(b"missing")
            # Binary formats (CIFAR batches, tar shards, Arrow files): the stats of the files behind the refs.
            h.update(json.dumps(self.notes.get("source_files"), sort_keys=True).encode())
            self._files_key = h.hexdigest()
        return self._files_key

    def fingerprint(self) -> str:
        """Content key of the sample list: files (see `files_key`), labels, classes, projection."""
        h = hashlib.sha256()
        h.update("\x00".join(self.classnames).encode())
        h.update(repr(self.projection.to_json() if self.projection else None).encode())
        h.update(self.labels.tobytes())
        h.update(self.files_key().encode())
        return h.hexdigest()


def open_rgb(path: str | Path, crop_border: int = 0) -> Image.Image:
    """Decode an image file to RGB; `crop_border` trims pixels on every side (ObjectNet)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad files
        raise DatasetError(f"cannot read image {path}: {exc}. Fix or remove the file, "
                           "or set skip_unreadable = true for this dataset") from exc
    if crop_border > 0:
        w, h = im.size
        im = im.crop((crop_border, crop_border, w - crop_border, h - crop_border))
    return im


def file_image_set(
    name: str,
    root: str | Path,
    rel_paths: Sequence[str],
    labels: Sequence[int],
    classnames: Sequence[str],
    projection: ClassProjection | None = None,
    crop_border: int = 0,
) -> ImageSet:
    root = Path(root)
    rel = list(rel_paths)

    def load(i: int) -> Image.Image:
        return open_rgb(root / rel[i], crop_border)

    return ImageSet(name, rel, np.asarray(labels), list(classnames), load, projection, str(root))


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder(
    name: str,
    root: str | Path,
    classnames: Sequence[str] | None = None,
    folder_names: Sequence[str] | None = None,
    projection: ClassProjection | None = None,
    crop_border: int = 0,
) -> ImageSet:
    """`root/<class folder>/<image>`: one subfolder per class.

    `folder_names[j]` is the folder of class j (default: sorted subfolders);
    `classnames[j]` its readable name (default: the folder name). Folders that
    exist on disk but are not listed are an error, as is an empty class folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name}: image folder {root} does not exist; expected {root}/<class>/<image>")
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not on_disk:
        raise DatasetError(f"{name}: {root} has no class subfolders; expected {root}/<class>/<image>")
    folders = list(folder_names) if folder_names is not None else on_disk
    names = list(classnames) if classnames is not None else folders
    if len(names) != len(folders):
        raise DatasetError(f"{name}: {len(names)} class names for {len(folders)} class folders in {root}")
    missing = [f for f in folders if f not in on_disk]
    if missing:
        raise DatasetError(f"{name}: class folders {missing[:5]} are missing under {root}")
    extra = sorted(set(on_disk) - set(folders))
    if extra:
        raise DatasetError(
            f"{name}: {root} has folders {extra[:5]} that are not in the class list; "
            "add them to the class list or remove them"
        )
    rel, labels = [], []
    for j, folder in enumerate(folders):
        files = list_images(root / folder)
        if not files:
            raise DatasetError(f"{name}: class folder {root / folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        rel += [f"{folder}/{p.name}" for p in files]
        labels += [j] * len(files)
    return file_image_set(name, root, rel, labels, names, projection, crop_border)


def csv_manifest(
    name: str,
    csv_path: str | Path,
    classnames: Sequence[str],
    root: str | Path | None = None,
    projection: ClassProjection | None = None,
    crop_border: int = 0,
) -> ImageSet:
    """A CSV with a header `path,label`; label is a class index or a class name.

    Relative paths are resolved against `root` (default: the CSV's folder).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{name}: CSV manifest {csv_path} does not exist")
    root = Path(root) if root is not None else csv_path.parent
    index = {c: j for j, c in enumerate(classnames)}
    rel, labels = [], []
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path}: expected a header line 'path,label', got {reader.fieldnames}")
        for line_no, row in enumerate(reader, start=2):
            lab = row["label"].strip()
            if lab.lstrip("-").isdigit():
                j = int(lab)
            elif lab in index:
                j = index[lab]
            else:
                raise DatasetError(f"{csv_path}:{line_no}: label {lab!r} is not a class index or a known class name")
            if not 0 <= j < len(classnames):
                raise DatasetError(
                    f"{csv_path}:{line_no}: label {j} is outside the class list (0..{len(classnames) - 1})"
                )
            rel.append(row["path"].strip())
            labels.append(j)
    if not rel:
        raise DatasetError(f"{csv_path}: the manifest lists no images")
    return file_image_set(name, root, rel, labels, classnames, projection, crop_border)


def array_image_set(
    name: str,
    images: np.ndarray,
    labels: Sequence[int],
    classnames: Sequence[str],
    ref_prefix: str,
    projection: ClassProjection | None = None,
) -> ImageSet:
    """Images held in memory as uint8 (N, H, W, 3), e.g. decoded from CIFAR/STL binaries."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{name}: expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    refs = [f"{ref_prefix}#{i}" for i in range(len(images))]
    return ImageSet(
        name, refs, np.asarray(labels), list(classnames), lambda i: Image.fromarray(images[i]), projection
    )


def split_indices(n: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (kept, held_out) with `holdout` samples held out."""
    if not 0 < holdout < n:
        raise DatasetError(f"cannot hold out {holdout} of {n} training samples for validation")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])
