"""The run bundle: the one contract between precompute and the dashboard.

A directory with `manifest.json` and `.npy` arrays (memory-mappable, never
pickled), laid out as documented in docs/bundle.md. Every file is written under a
temporary name and renamed when complete; the manifest records each array's
shape, dtype and sha256, and is itself written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrf_core.data import ClassProjection
from vrf_core.evaluate import SplitData
from vrf_core.projection import project_logits

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ROLES = ("id_train", "zsf", "id_val", "id_test", "ood")


class BundleError(ValueError):
    """A bundle cannot be opened or is inconsistent; the message names the file and the fix."""


# ---- atomic file writing ---------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def atomic_save_npy(path: Path, arr: np.ndarray) -> str:
    """Save without pickling; returns the sha256 of the file."""
    if arr.dtype == object:
        raise BundleError(f"{path.name}: object arrays cannot be stored (they would need pickle)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
        return digest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- writing --------------------------------------------------------------------

class BundleWriter:
    """Writes arrays into `root/splits/<split>/<name>.npy` and records them for the manifest."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, dict] = {}

    def array_path(self, split: str, name: str) -> Path:
        return self.root / "splits" / split / f"{name}.npy"

    def put(self, split: str, name: str, arr: np.ndarray) -> None:
        arr = np.asarray(arr)
        digest = atomic_save_npy(self.array_path(split, name), arr)
        self.record(split, name, arr.shape, arr.dtype, digest)

    def record(self, split: str, name: str, shape, dtype, digest: str) -> None:
        rel = f"splits/{split}/{name}.npy"
        self.files[rel] = {"shape": list(shape), "dtype": str(np.dtype(dtype)), "sha256": digest}

    def adopt(self, split: str, name: str) -> None:
        """Record an array already in place (written by an earlier, cached stage)."""
        path = self.array_path(split, name)
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        self.record(split, name, arr.shape, arr.dtype, sha256_file(path))

    def put_thumbs(self, split: str, jpegs: list[bytes]) -> None:
        """Thumbnails as one blob of concatenated JPEGs plus an offsets array (N + 1,)."""
        offsets = np.zeros(len(jpegs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(j) for j in jpegs])
        path = self.root / "splits" / split / "thumbs.bin"
        blob = b"".join(jpegs)
        atomic_write_bytes(path, blob)
        self.files[f"splits/{split}/thumbs.bin"] = {
            "shape": [len(blob)], "dtype": "bytes", "sha256": hashlib.sha256(blob).hexdigest()}
        self.put(split, "thumbs_offsets", offsets)

    def finalize(self, manifest: dict) -> Path:
        manifest = dict(manifest)
        manifest["schema_version"] = SCHEMA_VERSION
        manifest["files"] = dict(sorted(self.files.items()))
        validate_manifest(manifest, self.root / MANIFEST)
        atomic_write_json(self.root / MANIFEST, manifest)
        return self.root / MANIFEST


# ---- reading --------------------------------------------------------------------

REQUIRED_KEYS = ("schema_version", "name", "classnames", "splits", "files", "ensemble", "feature_dim")


def validate_manifest(m: dict, where: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise BundleError(f"{where}: manifest lacks keys {missing}; rebuild the bundle with precompute")
    if m["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: bundle schema version {m['schema_version']} but this tool reads version "
            f"{SCHEMA_VERSION}; rebuild it with this version's precompute"
        )
    for name, s in m["splits"].items():
        if s.get("role") not in ROLES:
            raise BundleError(f"{where}: split {name!r} has role {s.get('role')!r}; expected one of {ROLES}")


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def classnames(self) -> list[str]:
        return self.manifest["classnames"]

    @property
    def splits(self) -> dict[str, dict]:
        return self.manifest["splits"]

    @property
    def wse_alphas(self) -> list[float] | None:
        return self.manifest["ensemble"].get("wse_alphas")

    @property
    def ose_alphas(self) -> list[float]:
        return self.manifest["ensemble"].get("ose_alphas", [round(i / 10, 2) for i in range(11)])

    @property
    def k_max(self) -> int:
        return int(self.manifest["ensemble"]["k_max"])

    def split_names(self, *roles: str) -> list[str]:
        return [n for n, s in self.splits.items() if not roles or s["role"] in roles]

    def has(self, split: str, name: str) -> bool:
        return f"splits/{split}/{name}.npy" in self.manifest["files"]

    def array(self, split: str, name: str) -> np.ndarray:
        rel = f"splits/{split}/{name}.npy"
        if rel not in self.manifest["files"]:
            raise BundleError(f"{self.path}: the manifest lists no array {rel}")
        path = self.path / rel
        if not path.is_file():
            raise BundleError(f"{path}: file listed in the manifest is missing; rebuild the bundle")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise BundleError(f"{path}: cannot read array ({exc}); rebuild the bundle") from exc
        expected = self.manifest["files"][rel]
        if list(arr.shape) != expected["shape"] or str(arr.dtype) != expected["dtype"]:
            raise BundleError(
                f"{path}: shape {arr.shape} {arr.dtype} differs from the manifest's "
                f"{tuple(expected['shape'])} {expected['dtype']}; the bundle is inconsistent, rebuild it"
            )
        return arr

    def projection(self, split: str) -> ClassProjection | None:
        return ClassProjection.from_json(self.splits[split].get("projection"))

    def split_classnames(self, split: str) -> list[str]:
        return self.splits[split].get("classnames") or self.classnames

    def thumbnail(self, split: str, i: int) -> bytes:
        offsets = self.array(split, "thumbs_offsets")
        with open(self.path / "splits" / split / "thumbs.bin", "rb") as f:
            f.seek(int(offsets[i]))
            return f.read(int(offsets[i + 1] - offsets[i]))

    def split_data(self, split: str) -> SplitData:
        """Arrays of one evaluation split, logits projected to its classes (float32)."""
        proj = self.projection(split)
        ood_scores = {n: np.asarray(self.array(split, f"score_{n}"))
                      for n in ("mahalanobis", "relative_mahalanobis", "knn") if self.has(split, f"score_{n}")}
        wse = None
        if self.has(split, "logits_wse"):
            # Kept as stored (float16, memory-mapped when unprojected): a float32 copy of an
            # ImageNet-sized (A, N, C) array needs gigabytes, and only its argmax is used.
            wse = project_logits(self.array(split, "logits_wse"), proj)
        return SplitData(
            name=split,
            role=self.splits[split]["role"],
            labels=np.asarray(self.array(split, "labels")),
            logits_zs=project_logits(np.asarray(self.array(split, "logits_zs"), dtype=np.float32), proj),
            logits_ft=project_logits(np.asarray(self.array(split, "logits_ft"), dtype=np.float32), proj),
            knn_sqdist=np.asarray(self.array(split, "knn_sqdist"), dtype=np.float32),
            logits_wse=wse,
            ood_scores=ood_scores,
        )

    def verify(self) -> None:
        """Recompute every file's sha256 and compare with the manifest."""
        for rel, info in self.manifest["files"].items():
            path = self.path / rel
            if not path.is_file():
                raise BundleError(f"{path}: file listed in the manifest is missing; rebuild the bundle")
            if sha256_file(path) != info["sha256"]:
                raise BundleError(f"{path}: checksum differs from the manifest (corrupted or modified); "
                                  "rebuild the bundle")


def open_bundle(path: str | Path, verify: bool = False) -> Bundle:
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: no manifest; is {path} a bundle? Build one with "
                          "`python -m precompute demo` or `python -m precompute run --config FILE`")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc}); rebuild the bundle") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    validate_manifest(manifest, mpath)
    bundle = Bundle(path, manifest)
    missing = [rel for rel in manifest["files"] if not (path / rel).is_file()]
    if missing:
        raise BundleError(f"{path}: {len(missing)} file(s) listed in the manifest are missing, e.g. "
                          f"{missing[0]}; rebuild the bundle")
    if verify:
        bundle.verify()
    return bundle


def find_bundles(root: str | Path) -> list[Path]:
    """Folders under `root` (at most two levels down) that hold a manifest."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [root] if (root / MANIFEST).is_file() else []
    for p in sorted(root.glob("*/" + MANIFEST)) + sorted(root.glob("*/*/" + MANIFEST)):
        found.append(p.parent)
    return sorted(set(found))
