"""webdataset tar shards (open_clip training, clip_benchmark) read by random access with the standard library.

A sample is the group of tar members sharing a key (the member path up to the first dot of its
basename, webdataset's rule): `000017.png` + `000017.cls` is sample `000017`. Each shard is indexed
once (member name, data offset, size: `tarfile` seeks over the data, it never reads it), so
`load(i)` opens the shard, seeks to one member and decodes one image; nothing is extracted to disk.
Shards must be uncompressed tars (a `.tar.gz` cannot be read at an offset without decompressing).

The helpers below are shared with `vrf_core.datasets.hf` (Arrow and parquet
files are shards too): their cache key covers every shard's size and modification time.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vrf_core.data import DatasetError, ImageSet

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")  # preferred in this order when a sample has several
LABEL_MEMBERS = ("cls", "json")  # small: read while indexing, so no shard is opened again per label
BRACE = re.compile(r"\{([^{}]*)\}")
NUMERIC_RANGE = re.compile(r"(\d+)\.\.(\d+)")


def shard_stats(files: Sequence[Path], root: Path) -> tuple[tuple[str, int, int], ...]:
    stats = [(f, f.stat()) for f in files]
    return tuple((relative_name(f, root), st.st_size, st.st_mtime_ns) for f, st in stats)


def relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def common_root(files: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def decode_image(data: bytes, ref: str) -> Image.Image:
    """Encoded image bytes -> RGB; a bad image raises a DatasetError naming the sample."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad data
        raise DatasetError(f"cannot read image {ref}: {exc}. Fix or remove the sample, "
                           "or set skip_unreadable = true for this dataset") from exc


def name_key(name: str) -> str:
    """Class names compare as the folder sources compare them: case and '_' vs ' ' ignored."""
    return name.strip().lower().replace("_", " ")


class ClassLookup:
    """A label given as a class index (int or integer text) or a class name -> its index in `classnames`."""

    def __init__(self, classnames: Sequence[str]):
        self.classnames = list(classnames)
        self.by_name = {name_key(c): j for j, c in enumerate(self.classnames)}

    def index(self, label: object, where: str, field_name: str) -> int:
        if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
            if name_key(label) not in self.by_name:
                raise DatasetError(f"{where}: {field_name} {label!r} is not one of the {len(self.classnames)} class "
                                   "names of [classes] names; fix the label or the class list")
            return self.by_name[name_key(label)]
        if isinstance(label, bool) or not isinstance(label, int | str | np.integer):
            raise DatasetError(f"{where}: {field_name} {label!r} is neither a class index nor a class name")
        j = int(label)
        if not 0 <= j < len(self.classnames):
            raise DatasetError(f"{where}: {field_name} {j} is outside the class list "
                               f"(0..{len(self.classnames) - 1}); fix the label or [classes] names")
        return j


def expand_braces(pattern: str) -> list[str]:
    """webdataset's shard notation: `{000000..000009}` (zero-padded range) and `{a,b}` (alternatives)."""
    match = BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    numeric = NUMERIC_RANGE.fullmatch(body)
    if numeric:
        first, last = numeric.groups()
        width = max(len(first), len(last)) if len(first) > 1 and first.startswith("0") else 0  # braceexpand's rule
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    return [p for c in choices for p in expand_braces(head + c + tail)]


def shard_files(path: str | Path, suffixes: Sequence[str], kind: str) -> list[Path]:
    """The files `path` names: one file, a folder (its files with `suffixes`, sorted, recursively), a glob or
    a brace pattern. A listed file that does not exist, or a pattern matching nothing, is an error."""
    text = str(Path(str(path)).expanduser())
    if Path(text).is_dir():
        found = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.name.endswith(tuple(suffixes)))
        if not found:
            raise DatasetError(f"{text}: the folder holds no {kind} ({', '.join(suffixes)}); set path to the files")
        return found
    files: list[Path] = []
    for pattern in expand_braces(text):
        if glob.has_magic(pattern):
            matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matched:
                raise DatasetError(f"{pattern}: the pattern in path = {str(path)!r} matches no {kind}; fix the path")
            files += matched
        elif not Path(pattern).is_file():
            raise DatasetError(f"{pattern}: {kind} named by path = {str(path)!r} does not exist; fix the path "
                               "or the shard range")
        else:
            files.append(Path(pattern))
    return list(dict.fromkeys(files))


@dataclass
class _Sample:
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # extension -> (data offset, size)
    label_members: dict[str, bytes] = field(default_factory=dict)  # "cls"/"json" -> its content


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a tar member, webdataset's rule: the key ends at the first dot of the basename."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not dot or not stem or not extension:
        return None
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def index_shard(shard: Path) -> dict[str, _Sample]:
    """key -> its members' offsets, in the order the keys first appear in the tar."""
    samples: dict[str, _Sample] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                parts = split_member_name(member.name) if member.isfile() else None
                if parts is None:
                    continue
                key, extension = parts
                sample = samples.setdefault(key, _Sample())
                if extension in sample.members:
                    raise DatasetError(f"{shard}: sample {key!r} has two members {key}.{extension}; "
                                       "each key needs one member per extension")
                sample.members[extension] = (member.offset_data, member.size)
                if extension in LABEL_MEMBERS:
                    sample.label_members[extension] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError) as exc:
        raise DatasetError(f"{shard}: not an uncompressed tar shard ({exc}); decompress .tar.gz shards "
                           "(gunzip) or fix path") from None
    if not samples:
        raise DatasetError(f"{shard}: the shard holds no samples (members named <key>.<extension>)")
    return samples


def read_member(shard: Path, offset: int, size: int) -> bytes:
    with open(shard, "rb") as f:
        f.seek(offset)
        return f.read(size)


def sample_label(shard: Path, key: str, sample: _Sample, label_key: str, classes: ClassLookup) -> int:
    where = f"{shard}#{key}"
    if "cls" in sample.label_members:
        text = sample.label_members["cls"].decode("utf-8", "replace").strip()
        return classes.index(text, where, "label (.cls)")
    if "json" in sample.label_members:
        try:
            meta = json.loads(sample.label_members["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{where}: its .json member is not valid JSON ({exc}); fix the shard") from None
        if not isinstance(meta, dict) or label_key not in meta:
            keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
            raise DatasetError(f"{where}: its .json has no key {label_key!r} (keys: {keys}); set "
                               "options.label_key to the key holding the label")
        return classes.index(meta[label_key], where, f"label (.json {label_key!r})")
    raise DatasetError(f"{where}: no label member (.cls, or .json with key {label_key!r}); members: "
                       f"{sorted(sample.members)}; add a label or fix the shard")


def webdataset_shards(name: str, path: str | Path, model_classnames: Sequence[str],
                      label_key: str = "label") -> ImageSet:
    """`type = "webdataset"`: tar shards (a file, folder, glob or `{000000..000009}` pattern); each sample's
    image is its .jpg/.jpeg/.png/.webp member, its label a .cls (class index or name) or a .json key."""
    classnames = list(model_classnames)
    classes = ClassLookup(classnames)
    shards = shard_files(path, (".tar",), "webdataset shard")
    root = common_root(shards)
    stats = shard_stats(shards, root)
    refs: list[str] = []
    labels: list[int] = []
    members: list[tuple[int, int, int]] = []  # (shard number, data offset, size) of each sample's image
    for s, shard in enumerate(shards):
        for key, sample in index_shard(shard).items():
            extension = next((e for e in IMAGE_MEMBERS if e in sample.members), None)
            if extension is None:
                raise DatasetError(f"{shard}: sample {key!r} has no image member (members: "
                                   f"{sorted(sample.members)}); add {key}.jpg/.png/.webp or remove the sample")
            refs.append(f"{relative_name(shard, root)}#{key}")
            labels.append(sample_label(shard, key, sample, label_key, classes))
            members.append((s, *sample.members[extension]))
    images = np.asarray(members, np.int64).reshape(-1, 3)  # one array, not a million tuples

    def load(i: int) -> Image.Image:
        s, offset, size = (int(v) for v in images[i])
        return decode_image(read_member(shards[s], offset, size), f"{root}/{refs[i]}")

    # notes["source_files"] (each shard's size and mtime) is part of the set's files_key: an edited shard
    # changes every cache keyed by it.
    return ImageSet(name, refs, np.asarray(labels, np.int64), classnames, load, None, str(root),
                    notes={"source_files": {n: [s, t] for n, s, t in stats}})
