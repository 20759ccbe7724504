"""Checking the arrays of `precompute import` (docs/import.md) before any expensive work: dtype, shape,
NaN or inf, labels and predictions inside the class list, unit-norm features, image files present.
Each problem is one line naming the file, the array and the fix (ArrayImportError)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precompute.importer_config import ImportConfig, SplitPlan
from precompute.importer_files import ArrayImportError, LoadedArray, read_split
from vrf_core.filesafe import UnsafePathError, resolve_inside
from vrf_core.progress import log

CHUNK_ROWS = 1 << 16  # rows checked at a time, so that a memory-mapped array is never copied whole
NORM_TOLERANCE = 1e-2  # float16 features of unit norm are within 1e-3 of it
KINDS = {"labels": "iu", "paths": "U", "preds": "iu", "features": "f", "logits": "f"}
KIND_WORDS = {"iu": "an integer dtype (int64, int32, ...)", "f": "a floating-point dtype (float16, float32, float64)",
              "U": "strings (save them as np.array(paths, dtype=str))"}


@dataclass(frozen=True)
class Dims:
    """The sizes a split's arrays must have, and what each symbol is (for the error messages)."""

    split: str
    n: int
    num_classes: int  # C, the model's
    split_classes: int  # C', after the projection
    dim: int | None  # D, from the training split's features_ft (None when that is not 2-D)
    num_alphas: int | None  # A

    def expected(self, name: str) -> tuple[tuple, str]:
        """The shape `name` must have, and the meaning of its symbols."""
        n = f"N = {self.n} samples of split {self.split}"
        d = f"D = {self.dim} feature dimensions, as the training split's features_ft" if self.dim else "D features"
        if name.startswith("features"):
            return (self.n, self.dim or "D"), f"{n}, {d}"
        if name.startswith("logits"):
            return (self.n, self.num_classes), f"{n}, C = {self.num_classes} classes"
        if name == "preds_wse":
            return (self.num_alphas, self.n), f"A = {self.num_alphas} alphas of ensemble.wse_alphas, {n}"
        return (self.n,), n


def _kind(name: str) -> str:
    return KINDS[name.split("_")[0]]


def _nonfinite(arr: np.ndarray) -> tuple[int, int]:
    """(number of NaN or infinite values once cast to float32, first row holding one)."""
    count, first = 0, -1
    for start in range(0, len(arr), CHUNK_ROWS):
        bad = ~np.isfinite(np.asarray(arr[start:start + CHUNK_ROWS], np.float32))
        rows = bad.reshape(len(bad), -1).any(axis=1)
        count += int(bad.sum())
        if first < 0 and rows.any():
            first = start + int(np.flatnonzero(rows)[0])
    return count, first


def _off_norm_row(arr: np.ndarray) -> tuple[int, float] | None:
    for start in range(0, len(arr), CHUNK_ROWS):
        norms = np.linalg.norm(np.asarray(arr[start:start + CHUNK_ROWS], np.float32), axis=1)
        off = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
        if len(off):
            return start + int(off[0]), float(norms[off[0]])
    return None


def _check_range(shown: str, name: str, values: np.ndarray, count: int, classes_said: str) -> None:
    bad = np.flatnonzero((values < 0) | (values >= count))
    if len(bad):
        raise ArrayImportError(f"{shown}: {name} holds {len(bad)} value(s) outside 0..{count - 1}, e.g. "
                               f"{int(values.flat[bad[0]])} at position {int(bad[0])} ({classes_said})")


def needed_arrays(plan: SplitPlan, wse: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Arrays the split's role needs, and pairs of which one is needed (the training split's models)."""
    needed = ["labels", "features_ft"] + (["paths"] if plan.section.images else [])
    if plan.role == "id_train":
        return needed, [("logits_zs", "preds_zs"), ("logits_ft", "preds_ft")]
    return needed + ["logits_zs", "logits_ft"] + (["preds_wse"] if wse else []), []


def check_split(cfg: ImportConfig, plan: SplitPlan, loaded: dict[str, LoadedArray], dim: int | None) -> dict:
    """The split's arrays, every one checked; raises ArrayImportError at the first problem."""
    alphas = cfg.ensemble.wse_alphas
    where = plan.section.arrays or f"{plan.key}.files"
    needed, either = needed_arrays(plan, alphas is not None)
    for name in needed + [a for a, b in either if a not in loaded and b not in loaded]:
        if name not in loaded:
            also = " (or its preds_" + name.split("_")[1] + ")" if name.startswith("logits") and either else ""
            why = " (data.<split>.images is set)" if name == "paths" else ""
            raise ArrayImportError(f"{where}: split {plan.name} has no {name}{also}{why}; add it there or give "
                                   f"{plan.key}.files.{name} = \"<file>.npy\"")
    if "preds_wse" in loaded and alphas is None and plan.role != "id_train":
        raise ArrayImportError(f"{loaded['preds_wse'].file}: preds_wse is given but ensemble.wse_alphas is not set; "
                               "list the alphas its rows were computed at")
    unused = {"preds_wse"} if plan.role == "id_train" else {"preds_zs", "preds_ft"}
    for name in sorted(unused & set(loaded)):
        log(f"{loaded[name].file}: {name} of split {plan.name} is not used (the bundle derives it or has no place "
            "for it)")
        del loaded[name]
    labels = loaded["labels"]
    if labels.array.ndim != 1:
        raise ArrayImportError(f"{labels.file}: labels has shape {labels.array.shape}, expected (N,): one label "
                               f"per sample of split {plan.name}")
    split_classes = plan.projection.num_classes if plan.projection else len(cfg.classnames)
    if plan.role == "id_train":  # D is the training split's features_ft's (its features_zs must have it too)
        ft = loaded["features_ft"].array
        dim = ft.shape[1] if ft.ndim == 2 else None
    dims = Dims(plan.name, len(labels.array), len(cfg.classnames), split_classes, dim,
                len(alphas) if alphas else None)
    out = {}
    for name, item in loaded.items():
        arr = item.array
        kind = _kind(name)
        if arr.dtype.kind not in kind:
            raise ArrayImportError(f"{item.file}: {name} has dtype {arr.dtype}, expected {KIND_WORDS[kind]}")
        shape, symbols = dims.expected(name)
        if tuple(arr.shape) != shape:
            shown = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ArrayImportError(f"{item.file}: {name} has shape {arr.shape}, expected {shown} ({symbols})")
        if kind == "f":
            count, row = _nonfinite(arr)
            if count:
                raise ArrayImportError(f"{item.file}: {name} holds {count} NaN or infinite value(s) (in float32), "
                                       f"first in row {row} of split {plan.name}; fix the model outputs")
        out[name] = arr
    said = (f"split {plan.name} has C' = {split_classes} classes through {plan.key}.projection" if plan.projection
            else f"split {plan.name} has C = {split_classes} classes, classes.names")
    _check_range(labels.file, "labels", np.asarray(out["labels"]), split_classes, said)
    if "preds_wse" in out:
        _check_range(loaded["preds_wse"].file, "preds_wse", np.asarray(out["preds_wse"]), split_classes,
                     f"WSE predictions in the split's classes: {said}")
    for name in ("preds_zs", "preds_ft"):
        if name in out:
            _check_range(loaded[name].file, name, np.asarray(out[name]), len(cfg.classnames),
                         f"predictions over the model's C = {len(cfg.classnames)} classes")
    if not cfg.bundle.normalize_features:
        for name in ("features_ft", "features_zs"):
            off = _off_norm_row(out[name]) if name in out else None
            if off:
                raise ArrayImportError(
                    f"{loaded[name].file}: {name} row {off[0]} of split {plan.name} has L2 norm {off[1]:.4g}; the "
                    "bundle's features are L2-normalised (kNN distances on the unit sphere): normalise them, or "
                    "set bundle.normalize_features = true")
    if plan.section.images:
        check_images(cfg, plan, loaded["paths"].file, out["paths"])
    return out


def check_images(cfg: ImportConfig, plan: SplitPlan, shown: str, paths: np.ndarray) -> None:
    """Every path names a file inside the images root (only a stat each: decoding is the thumbnails' work)."""
    root = cfg.resolve(plan.section.images)
    if not root.is_dir():
        raise ArrayImportError(f"{cfg.source}: {plan.key}.images = {plan.section.images!r}: no such folder ({root})")
    missing = []
    for i, rel in enumerate(paths.tolist()):
        try:
            path = resolve_inside(root, rel)
        except UnsafePathError as exc:
            raise ArrayImportError(f"{shown}: paths row {i} of split {plan.name}: {exc}") from None
        if not path.is_file():
            missing.append(rel)
    if missing:
        raise ArrayImportError(f"{shown}: paths: {len(missing)} of {len(paths)} images of split {plan.name} do not "
                               f"exist under {root} (e.g. {', '.join(missing[:3])}); fix {plan.key}.images or the "
                               "paths")


def read_and_check(cfg: ImportConfig) -> dict[str, dict[str, np.ndarray]]:
    """Every split's arrays (split name -> array name -> array), all checked; the training split first,
    since the others' feature dimension is its."""
    out: dict[str, dict[str, np.ndarray]] = {}
    dim = None
    for plan in cfg.splits:
        out[plan.name] = check_split(cfg, plan, read_split(cfg, plan), dim)
        dim = dim or out[plan.name]["features_ft"].shape[1]
    return out
