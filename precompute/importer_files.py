"""Reading the arrays of `precompute import` (docs/import.md): `.npy` per array, one `.npz` per
split (keys = array names) or parquet (one row per sample, columns = array names, list columns for
vectors). Nothing is ever unpickled; each problem is one line naming the file, the array and the fix.
What the arrays must hold is checked in precompute/importer_checks.py."""

from __future__ import annotations

import difflib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the config module imports torch (through precompute.config): not needed to name the error
    from precompute.importer_config import ImportConfig, SplitPlan

ARRAY_NAMES = ("labels", "paths", "features_ft", "features_zs", "logits_zs", "logits_ft", "preds_zs", "preds_ft",
               "preds_wse")  # what a split's arrays may be called


class ArrayImportError(ValueError):
    """An imported array is missing, unreadable or wrong; the message names the file, the array and the fix."""


@dataclass
class LoadedArray:
    file: str  # as the config names it
    array: np.ndarray


def _unknown_arrays(shown: str, names, what: str = "array") -> None:
    for name in names:
        if name not in ARRAY_NAMES:
            close = difflib.get_close_matches(name, ARRAY_NAMES, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(ARRAY_NAMES)}"
            raise ArrayImportError(f"{shown}: unknown {what} {name!r}; {hint}")


def _pickled(shown: str, name: str) -> ArrayImportError:
    return ArrayImportError(f"{shown}: {name} is an array of Python objects, which would need unpickling (refused); "
                            "save numbers as a numeric dtype and strings as np.array(values, dtype=str)")


def _read_npy(path: Path, shown: str, name: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _pickled(shown, name) from None
        raise ArrayImportError(f"{shown}: {name} is not a readable .npy file ({exc})") from None
    except OSError as exc:
        raise ArrayImportError(f"{shown}: {name} cannot be read ({exc.strerror or exc})") from None


def _read_npz(path: Path, shown: str) -> dict[str, LoadedArray]:
    if not zipfile.is_zipfile(path):
        raise ArrayImportError(f"{shown}: not a .npz archive (write one with np.savez(path, labels=..., ...))")
    with np.load(path, allow_pickle=False) as archive:
        _unknown_arrays(shown, archive.files)
        out = {}
        for name in archive.files:
            try:
                out[name] = LoadedArray(shown, archive[name])
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise _pickled(shown, name) from None
                raise ArrayImportError(f"{shown}: {name} cannot be read ({exc})") from None
        return out


def _column_array(column, shown: str, name: str) -> np.ndarray:
    """One parquet column as an array: numbers (N,), strings (N,), lists of equal length (N, L)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ArrayImportError(f"{shown}: column {name} has {column.null_count} missing (null) value(s), first at "
                               f"row {row}")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ArrayImportError(f"{shown}: column {name} holds lists of different lengths ({lengths[0]} at row 0, "
                                   f"{lengths[row]} at row {row}); every row needs the same length")
        values = column.flatten()
        if values.null_count:
            raise ArrayImportError(f"{shown}: column {name} has {values.null_count} missing (null) list element(s)")
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            raise ArrayImportError(f"{shown}: column {name} is a list of {values.type}, expected lists of numbers")
        return values.to_numpy(zero_copy_only=False).reshape(len(column), int(lengths[0]) if len(lengths) else 0)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.array(column.to_pylist(), dtype=str)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return column.to_numpy(zero_copy_only=False)
    raise ArrayImportError(f"{shown}: column {name} has type {kind}, expected numbers, strings or lists of numbers")


def _read_parquet(path: Path, shown: str) -> dict[str, LoadedArray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ArrayImportError(f"{shown}: not a readable parquet file ({exc})") from None
    _unknown_arrays(shown, table.column_names, "column")
    out = {}
    for name in table.column_names:
        arr = _column_array(table.column(name).combine_chunks(), shown, name)
        # A parquet row is a sample: its preds_wse is the list of A predictions; the bundle stores (A, N).
        out[name] = LoadedArray(shown, arr.T if name == "preds_wse" else arr)
    return out


def _existing(cfg: ImportConfig, rel: str, key: str) -> Path:
    path = cfg.resolve(rel)
    if not path.is_file():
        raise ArrayImportError(f"{rel}: no such file ({path}); fix {key} in {cfg.source} (paths are relative to "
                               "the config's folder)")
    return path


def read_split(cfg: ImportConfig, plan: SplitPlan) -> dict[str, LoadedArray]:
    """The split's arrays as the config names them (`files` entries replace those of `arrays`)."""
    out: dict[str, LoadedArray] = {}
    section = plan.section
    if section.arrays:
        path = _existing(cfg, section.arrays, f"{plan.key}.arrays")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            out |= _read_npz(path, section.arrays)
        elif suffix in (".parquet", ".pq"):
            out |= _read_parquet(path, section.arrays)
        else:
            raise ArrayImportError(f"{section.arrays}: {plan.key}.arrays must be a .npz or .parquet file (single "
                                   f"arrays: {plan.key}.files = {{ labels = \"labels.npy\", ... }})")
    for name, rel in section.files.items():
        if not isinstance(rel, str):
            raise ArrayImportError(f"{cfg.source}: {plan.key}.files.{name} must be a .npy file name")
        out[name] = LoadedArray(rel, _read_npy(_existing(cfg, rel, f"{plan.key}.files.{name}"), rel, name))
    return out
