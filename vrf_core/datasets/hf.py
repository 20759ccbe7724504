"""Hugging Face datasets on disk, read with pyarrow alone (the `datasets` package is not needed).

Two layouts: a folder written by `Dataset.save_to_disk` (Arrow IPC stream files listed in state.json,
features in dataset_info.json), or parquet files (a file, folder or glob; features in the schema's
`huggingface` metadata). An Image feature is a struct {bytes, path}; a ClassLabel feature's names map
the dataset's labels onto [classes] names by name (a dataset naming only some classes gets a subset
projection, as a folder source does). Arrow files are memory-mapped, so opening a set reads the label
column only; parquet is compressed, so `load(i)` decodes the image column of i's row group (a few
recently used row groups are kept: sequential extraction decodes each once).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vrf_core.data import ClassProjection, DatasetError, ImageSet
from vrf_core.datasets.webdataset import (
    ClassLookup,
    common_root,
    decode_image,
    name_key,
    relative_name,
    shard_files,
    shard_stats,
)

CACHED_ROW_GROUPS = 4  # per parquet file and process


class ArrowImages:
    """The image column of one Arrow file, memory-mapped (a `save_to_disk` shard: an IPC stream)."""

    def __init__(self, path: Path):
        self.path = path
        self.chunks: dict[str, tuple[list[pa.Array], np.ndarray]] = {}
        source = pa.memory_map(str(path))
        try:
            self.table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            try:
                self.table = pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid as exc:
                raise DatasetError(f"{path}: not an Arrow IPC file ({exc}); give a save_to_disk folder, "
                                   ".arrow or .parquet files") from None

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def image(self, row: int, column: str) -> object:
        if column not in self.chunks:  # record batches of ~1000 rows: find the one holding `row` by bisection
            chunks = self.table.column(column).chunks
            self.chunks[column] = (chunks, np.cumsum([0] + [len(c) for c in chunks]))
        chunks, starts = self.chunks[column]
        chunk = int(np.searchsorted(starts, row, side="right") - 1)
        return chunks[chunk][row - int(starts[chunk])].as_py()


class ParquetImages:
    """The image column of one parquet file, decoded a row group at a time (a few kept, per process)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.file = pq.ParquetFile(path, memory_map=True)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{path}: not a parquet file ({exc}); fix path") from None
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.starts = np.cumsum([0] + sizes)
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.groups: OrderedDict[tuple[int, str], pa.Array] = OrderedDict()

    @property
    def schema(self) -> pa.Schema:
        return self.file.schema_arrow

    def column(self, name: str) -> pa.ChunkedArray:
        return self.file.read(columns=[name]).column(name)

    def image(self, row: int, column: str) -> object:
        group = int(np.searchsorted(self.starts, row, side="right") - 1)
        with self.lock:
            if self.pid != os.getpid():  # a forked DataLoader worker: its own file handle and cache
                self.file, self.pid = pq.ParquetFile(self.path, memory_map=True), os.getpid()
                self.groups = OrderedDict()
            if (group, column) not in self.groups:
                table = self.file.read_row_group(group, columns=[column])
                self.groups[(group, column)] = table.column(0).combine_chunks()
                while len(self.groups) > CACHED_ROW_GROUPS:
                    self.groups.popitem(last=False)
            values = self.groups[(group, column)]
            self.groups.move_to_end((group, column))
        return values[row - int(self.starts[group])].as_py()


def hf_files(path: Path) -> tuple[list[Path], dict]:
    """(data files, features from dataset_info.json or {}) of a save_to_disk folder, or parquet/Arrow files."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise DatasetError(f"{path}: a DatasetDict (splits {splits}); set path to one split's folder, e.g. "
                           f"{path / (splits[0] if splits else 'train')}")
    if (path / "state.json").is_file():
        try:
            state = json.loads((path / "state.json").read_text())
            names = [entry["filename"] for entry in state["_data_files"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path / 'state.json'}: no list _data_files of {{filename}} ({exc}); write the "
                               "folder again with save_to_disk") from None
        files = [path / n for n in names]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: listed in {path / 'state.json'} but missing; copy the whole folder")
        info = path / "dataset_info.json"
        features = (json.loads(info.read_text()).get("features") or {}) if info.is_file() else {}
        return files, features
    return shard_files(path, (".parquet", ".arrow"), "parquet or Arrow file"), {}


def schema_features(schema: pa.Schema) -> dict:
    """The features `datasets` writes into an Arrow/parquet schema's metadata (key b"huggingface")."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def check_columns(source: ArrowImages | ParquetImages, image_column: str, label_column: str) -> None:
    names = source.schema.names
    for option, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in names:
            raise DatasetError(f"{source.path}: no {option.split('_')[0]} column {column!r} (columns: {names}); "
                               f"set options.{option} to one of them")
    kind = source.schema.field(image_column).type
    struct_ok = pa.types.is_struct(kind) and {"bytes", "path"} & {kind.field(i).name for i in range(kind.num_fields)}
    if not (struct_ok or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise DatasetError(f"{source.path}: image column {image_column!r} has type {kind}, not an Image feature "
                           "(struct of bytes, path) or binary; set options.image_column to the image column")


def image_bytes(value: object, data_file: Path) -> bytes:
    """An Image feature's stored value -> encoded bytes: its `bytes`, else the file at its `path`."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            return (data_file.parent / value["path"]).read_bytes()  # an absolute path stays absolute
    elif isinstance(value, bytes):
        return value
    raise DatasetError("the image cell holds neither bytes nor a path")


def dataset_labels(raw: pa.ChunkedArray, names: list[str] | None, classnames: list[str],
                   where: str, column: str) -> tuple[np.ndarray, list[str], ClassProjection | None]:
    """(labels, the set's class names, projection): ClassLabel ids through their names, else ids or names."""
    if raw.null_count:
        row = int(np.flatnonzero(raw.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(f"{where}#{row}: label column {column!r} is empty; fill it or drop those rows")
    values = raw.to_pylist()
    if not names:
        classes = ClassLookup(classnames)
        found = {v: classes.index(v, where, f"label column {column!r} value") for v in dict.fromkeys(values)}
        return np.asarray([found[v] for v in values], np.int64), classnames, None
    index = ClassLookup(classnames).by_name
    unknown = [n for n in names if name_key(n) not in index]
    if unknown:
        raise DatasetError(f"{where}: ClassLabel names {unknown[:5]} of column {column!r} are not in [classes] "
                           "names; add them, or rename the classes to match")
    ids = np.asarray([index[name_key(n)] for n in names])
    bad = [v for v in values if not isinstance(v, int) or not 0 <= v < len(names)]
    if bad:
        raise DatasetError(f"{where}: label column {column!r} value {bad[0]!r} is outside its ClassLabel "
                           f"(0..{len(names) - 1}); fix the label")
    model_labels = ids[np.asarray(values, np.int64)]
    if len(set(ids.tolist())) == len(classnames):
        return model_labels, classnames, None
    used = sorted(set(ids.tolist()))
    position = {j: p for p, j in enumerate(used)}
    return (np.asarray([position[j] for j in model_labels], np.int64), [classnames[j] for j in used],
            ClassProjection.subset(used))


def hf_dataset(name: str, path: str | Path, model_classnames: Sequence[str], image_column: str = "image",
               label_column: str = "label") -> ImageSet:
    """`type = "hf"`: a save_to_disk folder or parquet/Arrow files with an image and a label column."""
    classnames = list(model_classnames)
    path = Path(str(path)).expanduser()
    files, features = hf_files(path)
    sources = [ArrowImages(f) if f.suffix == ".arrow" else ParquetImages(f) for f in files]
    root = common_root(files)
    refs: list[str] = []
    labels, sets = [], set()
    for source in sources:
        check_columns(source, image_column, label_column)
        feature = (features or schema_features(source.schema)).get(label_column) or {}
        names = feature.get("names") if feature.get("_type") == "ClassLabel" else None
        file_labels, set_names, projection = dataset_labels(source.column(label_column), names, classnames,
                                                            str(source.path), label_column)
        sets.add((tuple(set_names), json.dumps(projection.to_json() if projection else None)))
        labels.append(file_labels)
        refs += [f"{relative_name(source.path, root)}#{row}" for row in range(len(file_labels))]
    if len(sets) > 1:
        raise DatasetError(f"{path}: its files name different ClassLabel lists; give files of one dataset split")

    starts = np.cumsum([0] + [len(f) for f in labels])  # sample i is row i - starts[k] of file k

    def load(i: int) -> Image.Image:
        k = int(np.searchsorted(starts, i, side="right") - 1)
        row = i - int(starts[k])
        where = f"{root}/{refs[i]}"
        try:
            data = image_bytes(sources[k].image(row, image_column), sources[k].path)
        except (DatasetError, OSError) as exc:
            raise DatasetError(f"cannot read image {where}: {exc}") from exc
        return decode_image(data, where)

    if not refs:
        raise DatasetError(f"{path}: the dataset holds no rows; fix path")
    set_names, projection_json = sets.pop()
    stats = shard_stats(files, root)
    return ImageSet(name, refs, np.concatenate(labels), list(set_names), load,
                    ClassProjection.from_json(json.loads(projection_json)), str(root),
                    notes={"source_files": {n: [s, t] for n, s, t in stats}})
