"""`precompute import --config FILE`: a complete bundle from features and logits a user already has
(docs/import.md). The config (precompute/importer_config.py) names each split's arrays; every array
is read (importer_files.py) and checked (importer_checks.py) before any expensive work, then the
usual stages run through `precompute.assemble.assemble`: ZSF set, exact kNN, routing scores,
embedding map, derived tables. `export_arrays` writes a bundle's arrays back in the import format."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from precompute.assemble import AssembleSettings, Extracted, assemble, check_zsf_size
from precompute.importer_checks import read_and_check
from precompute.importer_config import ImportConfig, SplitPlan
from precompute.importer_files import ArrayImportError
from vrf_core.bundle import Bundle, open_bundle
from vrf_core.data import open_rgb
from vrf_core.extract import jpeg_thumbnail
from vrf_core.filesafe import resolve_inside
from vrf_core.progress import log, progress
from vrf_core.zsf import zsf_mask

__all__ = ["ArrayImportError", "export_arrays", "import_bundle"]


def assemble_settings(cfg: ImportConfig) -> AssembleSettings:
    e, b = cfg.ensemble, cfg.bundle
    return AssembleSettings(
        k_max=e.k_max, k_rule=e.k_rule, distance=e.distance, calibration=e.calibration,
        wse_alphas=[float(a) for a in e.wse_alphas] if e.wse_alphas is not None else None,
        ose_alphas=[float(a) for a in e.ose_alphas], weight_rule=e.weight_rule, knn_backend=e.knn_backend,
        train_sample=b.train_sample, umap=b.umap, umap_max_points=b.umap_max_points,
        umap_neighbors=b.umap_neighbors, seed=cfg.run.seed)


def _features(arr: np.ndarray | None, normalize: bool) -> np.ndarray | None:
    if arr is None or not normalize:
        return arr
    arr = np.asarray(arr, np.float32)
    return arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)


def _refs(cfg: ImportConfig, plan: SplitPlan, arrays: dict) -> np.ndarray:
    """Image paths where given, else `file#row` (docs/bundle.md's reference for binary formats)."""
    if "paths" in arrays:
        return np.asarray(arrays["paths"]).astype(str)
    origin = plan.section.arrays or plan.section.files["labels"]
    return np.array([f"{origin}#{i}" for i in range(len(arrays["labels"]))])


def _thumbnails(cfg: ImportConfig, plan: SplitPlan, paths, rows, desc: str) -> list[bytes]:
    root = cfg.resolve(plan.section.images)
    return [jpeg_thumbnail(open_rgb(resolve_inside(root, str(paths[i]))), cfg.bundle.thumb_size)
            for i in progress(rows, desc=desc, total=len(rows))]


def _extracted(cfg: ImportConfig, plan: SplitPlan, arrays: dict) -> Extracted:
    normalize = cfg.bundle.normalize_features
    source = {"imported": plan.section.arrays or dict(plan.section.files)}
    if plan.section.images:
        source["images"] = str(cfg.resolve(plan.section.images))
    ex = Extracted(role=plan.role, labels=np.asarray(arrays["labels"]).astype(np.int64),
                   refs=_refs(cfg, plan, arrays), features_ft=_features(arrays["features_ft"], normalize),
                   features_zs=_features(arrays.get("features_zs"), normalize), logits_zs=arrays.get("logits_zs"),
                   logits_ft=arrays.get("logits_ft"), preds_wse=arrays.get("preds_wse"),
                   classnames=plan.classnames, projection=plan.projection, source=source)
    for model in ("zs", "ft"):
        if f"preds_{model}" in arrays and f"logits_{model}" not in arrays:
            setattr(ex, f"preds_{model}", np.asarray(arrays[f"preds_{model}"]).astype(np.int64))
    return ex


def import_bundle(cfg: ImportConfig) -> Bundle:
    """Reads and checks every array, then writes the bundle at run.out (the one already there is kept
    until the new one is complete, and untouched when anything fails)."""
    from precompute.pipeline import exclusive  # one writer per folder, as for `precompute run`

    t0 = time.perf_counter()
    arrays = read_and_check(cfg)
    splits = {plan.name: _extracted(cfg, plan, arrays[plan.name]) for plan in cfg.splits}
    train = splits.pop(cfg.train.name)
    settings = assemble_settings(cfg)
    mask = zsf_mask(train.predictions("zs"), train.predictions("ft"), train.labels)
    check_zsf_size(int(mask.sum()), len(mask), settings, float((train.predictions("zs") == train.labels).mean()),
                   float((train.predictions("ft") == train.labels).mean()))
    log(f"import: {len(cfg.splits)} splits read and checked in {time.perf_counter() - t0:.1f} s")

    thumbs = cfg.bundle.thumb_size > 0
    for plan in cfg.splits[1:]:
        if thumbs and plan.section.images:
            paths = splits[plan.name].refs
            splits[plan.name].thumbs = _thumbnails(cfg, plan, paths, range(len(paths)), f"thumbnails {plan.name}")

    def zsf_thumbs(idx: np.ndarray) -> list[bytes]:
        return _thumbnails(cfg, cfg.train, train.refs, idx, "thumbnails zsf")

    extra = {"classnames": cfg.classnames, "templates": list(cfg.classes.templates), "models": cfg.models,
             "config": cfg.to_json()}
    out = cfg.resolve(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        bundle = assemble(out, cfg.run.name, train, splits, settings, extra,
                          zsf_thumbs if thumbs and cfg.train.section.images else None)
    log(f"import: bundle written in {time.perf_counter() - t0:.1f} s: {out}")
    return bundle


# ---- the import format, written from a bundle ------------------------------------------

def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value) -> str:
    """A JSON-like value as TOML (None entries are left out: TOML has no null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # JSON's escapes are TOML's, but DEL must be escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def write_import_config(path: Path, raw: dict) -> None:
    """Writes an import config (the dict tomllib reads from one) as TOML: [run], [classes], [models.<m>],
    [ensemble], [bundle], [data.<role>] and [data.ood.<name>] tables of key = value lines."""
    tables: dict[tuple[str, ...], dict] = {}
    for section, body in raw.items():
        if section == "models":
            tables |= {("models", m): v for m, v in body.items()}
        elif section == "data":
            tables |= {("data", r): v for r, v in body.items() if r != "ood"}
            tables |= {("data", "ood", n): v for n, v in body.get("ood", {}).items()}
        else:
            tables[(section,)] = body
    parts = []
    for header, body in tables.items():
        lines = [f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in body.items() if v is not None]
        parts.append(f"[{'.'.join(_toml_key(h) for h in header)}]\n" + "".join(lines))
    path.write_text("\n".join(parts), encoding="utf-8")


def export_arrays(bundle_path: str | Path, out_dir: str | Path,
                  train_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Writes the bundle's evaluation splits as `<split>.npz` and an `import.toml` that imports them
    (into `out_dir/bundle`) with the bundle's settings; returns the config's path. A bundle stores no
    model outputs of the training split, so `train.npz` is written from `train_arrays` (labels, both
    models' logits or predictions, features_ft) when given, else the caller supplies it."""
    bundle = open_bundle(bundle_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = bundle.manifest
    data: dict = {"train": {"arrays": "train.npz"}, "ood": {}}
    if train_arrays is not None:
        np.savez(out_dir / "train.npz", **{k: np.asarray(v) for k, v in train_arrays.items()})
    for split in bundle.split_names("id_val", "id_test", "ood"):
        entry = m["splits"][split]
        names = ["labels", "features_ft", "features_zs", "logits_zs", "logits_ft", "preds_wse"]
        arrays = {n: np.asarray(bundle.array(split, n)) for n in names if bundle.has(split, n)}
        np.savez(out_dir / f"{split}.npz", paths=np.asarray(bundle.array(split, "refs")), **arrays)
        groups = (entry.get("projection") or {}).get("groups")
        section = {"arrays": f"{split}.npz",
                   "projection": None if groups is None else [g[0] if len(g) == 1 else g for g in groups],
                   "classnames": entry.get("classnames") if groups else None}
        role = {"id_val": "val", "id_test": "test"}.get(entry["role"])
        (data if role else data["ood"])[role or split] = section
    embedding = m.get("embedding")
    umap = {"umap_max_points": embedding["max_points"], "umap_neighbors": embedding["n_neighbors"]} if embedding else {}
    raw = {
        "run": {"name": m["name"], "out": "bundle", "seed": (m.get("config") or {}).get("run", {}).get("seed", 0)},
        "classes": {"names": m["classnames"], "templates": m.get("templates") or []},
        "models": m.get("models") or {},
        "ensemble": {**{k: m["ensemble"].get(k) for k in ("wse_alphas", "ose_alphas", "k_max", "distance",
                                                            "calibration", "weight_rule")},
                     "k_rule": m["zsf"]["k_rule"]},
        "bundle": {"train_sample": m["splits"]["train"]["n"], "thumb_size": 0, "umap": embedding is not None, **umap},
        "data": data,
    }
    path = out_dir / "import.toml"
    write_import_config(path, raw)
    return path
