"""The run bundle: the one contract between precompute and the dashboard.

A directory with `manifest.json` and `.npy` arrays (memory-mappable, never
pickled), laid out as documented in docs/bundle.md. A build is staged in
`.staging/` and moved into place when complete; the manifest records each file's
shape, dtype, size and sha256, and is written last. `open_bundle` checks sizes,
.npy headers and shapes against the manifest on every open; `verify=True` also
recomputes every sha256.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, BinaryIO

import numpy as np

from vrf_core.data import ClassProjection
from vrf_core.evaluate import SplitData
from vrf_core.live import TABLE_ARRAYS, TopM
from vrf_core.projection import ProjectedRows, project_logits

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
STAGING = ".staging"
ROLES = ("id_train", "zsf", "id_val", "id_test", "ood")
KILL_ENV = "VRF_TEST_KILL_AT"


class BundleError(ValueError):
    """A bundle cannot be opened or is inconsistent; the message names the file and the fix."""


class DiskFullError(BundleError):
    """The disk filled up while writing; the message names the file. No partial file is left behind."""


# ---- crash-safety test hook ------------------------------------------------------

_kill_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: with `VRF_TEST_KILL_AT=<name>` (or `<name>#<n>`, the n-th time the point is reached)
    the process SIGKILLs itself here, a real crash with no cleanup. Points: docs/bundle.md."""
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    want, _, nth = target.partition("#")
    if want != name:
        return
    _kill_counts[name] = _kill_counts.get(name, 0) + 1
    if _kill_counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# ---- paths from manifests ---------------------------------------------------------

def resolve_inside(root: str | Path, relative: str | os.PathLike) -> Path:
    """`root / relative`, resolved, refusing any path that leaves `root`: absolute paths, drive letters,
    `..` components, NUL bytes, and symbolic links pointing outside. Use it for every path read from a
    manifest or a request."""
    rel = os.fspath(relative)
    parts = rel.replace("\\", "/").split("/")
    if not rel or "\x00" in rel or rel.startswith(("/", "\\", "~")) or PureWindowsPath(rel).drive or ".." in parts:
        raise BundleError(f"{rel!r} is not a relative path inside {root}: absolute paths, '~' and '..' are refused")
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise BundleError(f"{rel!r} resolves to {target}, outside {base} (through a symbolic link); refused")
    return target


# ---- atomic file writing ---------------------------------------------------------

def _free_space(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
    except OSError:
        return "unknown"
    return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB"


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temporary name in the same folder, fsync, rename: readers see the old file or the new one."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        kill_point("atomic-rename")
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{path}: no space left on device while writing it ({_free_space(path.parent)} free there). "
                "Free some space (or point run.out elsewhere) and run the same command again: finished "
                "stages are kept and the previous bundle is unchanged") from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def atomic_save_npy(path: Path, arr: np.ndarray) -> str:
    """Save without pickling; returns the sha256 of the file."""
    if arr.dtype.hasobject:
        raise BundleError(f"{path.name}: object arrays cannot be stored (they would need pickle)")
    _atomic_write(path, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False))
    return sha256_file(path)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make renames inside `folder` durable (a crash of the machine, not only of the process)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- writing --------------------------------------------------------------------

def _entry(path: Path, shape, dtype, digest: str) -> dict:
    return {"shape": list(shape), "dtype": str(dtype), "bytes": path.stat().st_size, "sha256": digest}


class BundleWriter:
    """Stages a build in `root/.staging/` and moves it into place in `finalize`.

    Until `finalize` the bundle already at `root`, if any, is untouched and still opens: a crash or a
    full disk while staging costs nothing (a new writer removes a crashed run's staging folder).
    `finalize` removes the old manifest first (readers check it after reading, so none mixes two
    builds), moves the new files in, deletes the old build's files the new manifest does not list,
    and writes the manifest last.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stage = self.root / STAGING
        shutil.rmtree(self.stage, ignore_errors=True)
        self.files: dict[str, dict] = {}

    def put(self, split: str, name: str, arr: np.ndarray) -> None:
        arr = np.asarray(arr)
        rel = f"splits/{split}/{name}.npy"
        path = resolve_inside(self.stage, rel)  # refuses split names such as '../x'
        digest = atomic_save_npy(path, arr)
        self.files[rel] = _entry(path, arr.shape, arr.dtype, digest)
        kill_point("bundle-put")

    def put_thumbs(self, split: str, jpegs: list[bytes]) -> None:
        """Thumbnails as one blob of concatenated JPEGs plus an offsets array (N + 1,)."""
        offsets = np.zeros(len(jpegs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(j) for j in jpegs])
        rel = f"splits/{split}/thumbs.bin"
        blob = b"".join(jpegs)
        path = resolve_inside(self.stage, rel)
        atomic_write_bytes(path, blob)
        self.files[rel] = _entry(path, [len(blob)], "bytes", hashlib.sha256(blob).hexdigest())
        self.put(split, "thumbs_offsets", offsets)

    def staged(self, manifest: dict) -> Bundle:
        """The staged build, readable before `finalize` (to choose hyperparameters from its arrays)."""
        return Bundle(self.stage, {**manifest, "files": self.files})

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def finalize(self, manifest: dict) -> Path:
        manifest = {**manifest, "schema_version": SCHEMA_VERSION, "files": dict(sorted(self.files.items()))}
        where = self.root / MANIFEST
        validate_manifest(manifest, where)
        check_shapes(manifest, where)
        where.unlink(missing_ok=True)
        fsync_dir(self.root)
        for i, rel in enumerate(manifest["files"]):
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.stage / rel, self.root / rel)
            if i == len(self.files) // 2:
                kill_point("bundle-commit")
        self._remove_unlisted(manifest["files"])
        atomic_write_json(where, manifest)
        fsync_dir(self.root)
        shutil.rmtree(self.stage, ignore_errors=True)
        return where

    def _remove_unlisted(self, files: dict) -> None:
        """Files of an earlier build (and temporary files of a crashed one) that the new manifest does not list."""
        for p in sorted((self.root / "splits").rglob("*"), reverse=True):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and rel not in files:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        for p in self.root.glob(f".{MANIFEST}.*.tmp"):
            p.unlink()


# ---- reading --------------------------------------------------------------------

REQUIRED_KEYS = ("schema_version", "name", "classnames", "splits", "files", "ensemble", "feature_dim")
# Arrays with one row per sample of their split (first dimension = the split's n).
PER_SAMPLE = ("labels", "refs", "train_index", "is_zsf", "preds_zs", "preds_ft", "knn_sqdist", "knn_index", "umap",
              "score_mahalanobis", "score_relative_mahalanobis", "score_knn")


def validate_manifest(m: dict, where: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise BundleError(f"{where}: manifest lacks keys {missing}; rebuild the bundle with precompute")
    version = m["schema_version"]
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        fix = "upgrade this tool (the bundle is newer)" if newer else "rebuild it with this version's precompute"
        raise BundleError(f"{where}: bundle schema version {version!r} but this tool reads version "
                          f"{SCHEMA_VERSION}; {fix}")
    for name, s in m["splits"].items():
        if s.get("role") not in ROLES:
            raise BundleError(f"{where}: split {name!r} has role {s.get('role')!r}; expected one of {ROLES}")
    if not isinstance(m["files"], dict):
        raise BundleError(f"{where}: 'files' must map relative paths to their shape, dtype and sha256")
    for rel in m["files"]:
        resolve_inside(where.parent, rel)


def check_shapes(m: dict, where: Path) -> None:
    """Shapes recorded in the manifest agree with each other: one feature dimension and one class count
    across all parts, one row per sample of each split. Catches bundles stitched from different runs."""
    dim, classes = int(m["feature_dim"]), int(m.get("num_classes") or len(m["classnames"]))
    alphas = m["ensemble"].get("wse_alphas") or []
    for rel, info in m["files"].items():
        match = re.fullmatch(r"splits/([^/]+)/([^/]+)\.npy", rel)
        if not match:
            continue
        split, name = match.groups()
        if split not in m["splits"]:
            raise BundleError(f"{where}: {rel} belongs to no split listed under 'splits'; rebuild the bundle")
        n, shape = m["splits"][split]["n"], tuple(info["shape"])
        expected = {"features_zs": (n, dim), "features_ft": (n, dim), "logits_zs": (n, classes),
                    "logits_ft": (n, classes), "logits_wse": (len(alphas), n, classes),
                    "thumbs_offsets": (n + 1,)}.get(name)
        if name.startswith("features_") and len(shape) == 2 and shape[1] != dim:
            raise BundleError(f"{where.parent / rel}: feature dimension {shape[1]} differs from the bundle's "
                              f"feature_dim {dim}: the bundle mixes parts of different runs; rebuild it")
        if expected is not None and shape != expected:
            raise BundleError(f"{where.parent / rel}: shape {shape} but the manifest implies {expected} (split "
                              f"{split!r} has n = {n}); the bundle mixes parts of different runs; rebuild it")
        if name == "preds_wse" and shape != (len(alphas), n):
            raise BundleError(f"{where.parent / rel}: shape {shape} but the manifest implies {(len(alphas), n)} "
                              f"({len(alphas)} WSE alphas, n = {n}); the bundle is inconsistent, rebuild it")
        if name.startswith("live_") and (not shape or shape[-1] != n):
            raise BundleError(f"{where.parent / rel}: {shape[-1] if shape else 0} samples along the last axis but "
                              f"split {split!r} has n = {n}; the bundle is inconsistent, rebuild it")
        if name in PER_SAMPLE and (not shape or shape[0] != n):
            raise BundleError(f"{where.parent / rel}: {shape[0] if shape else 0} rows but split {split!r} has "
                              f"n = {n}; the bundle is inconsistent, rebuild it")


def _npy_header(path: Path) -> tuple[tuple, np.dtype]:
    """Shape and dtype from a .npy header, without reading (or unpickling) the data."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major)
        if read is None:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return arr.shape, arr.dtype
        shape, _, dtype = read(f)
    return shape, dtype


def check_files(root: Path, m: dict) -> None:
    """Every listed file exists with the recorded size; .npy headers match the recorded shape and dtype
    and hold no Python objects. Reads a few bytes per file: cheap enough for every open."""
    missing = [rel for rel in m["files"] if not resolve_inside(root, rel).is_file()]
    if missing:
        raise BundleError(f"{root}: {len(missing)} file(s) listed in the manifest are missing "
                          f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); rebuild the bundle")
    for rel, info in m["files"].items():
        path = resolve_inside(root, rel)
        size = path.stat().st_size
        if "bytes" in info and size != info["bytes"]:
            raise BundleError(f"{path}: {size} bytes but the manifest records {info['bytes']} (truncated or "
                              "replaced); rebuild the bundle")
        if not rel.endswith(".npy"):
            continue
        try:
            shape, dtype = _npy_header(path)
        except Exception as exc:
            raise BundleError(f"{path}: not a readable .npy file ({exc}); rebuild the bundle") from exc
        if dtype.hasobject:
            raise BundleError(f"{path}: holds Python objects (dtype {dtype}), which would need unpickling; "
                              "refused. Bundles hold plain numeric and string arrays only")
        if list(shape) != info["shape"] or str(dtype) != info["dtype"]:
            raise BundleError(f"{path}: shape {tuple(shape)} {dtype} differs from the manifest's "
                              f"{tuple(info['shape'])} {info['dtype']}; the bundle is inconsistent, rebuild it")
    for rel in m["files"]:
        if rel.endswith("/thumbs.bin") and rel.replace("thumbs.bin", "thumbs_offsets.npy") in m["files"]:
            offsets = np.load(resolve_inside(root, rel.replace("thumbs.bin", "thumbs_offsets.npy")), mmap_mode="r",
                              allow_pickle=False)
            if len(offsets) and int(offsets[-1]) != resolve_inside(root, rel).stat().st_size:
                raise BundleError(f"{root / rel}: thumbnail offsets end at {int(offsets[-1])} but the file holds "
                                  f"{resolve_inside(root, rel).stat().st_size} bytes; rebuild the bundle")


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass
class Bundle:
    path: Path
    manifest: dict
    # Identity of the manifest file when opened; reads check it afterwards, so an array of a newer
    # build is never combined with this manifest (None: a staged build, not yet on disk).
    stamp: tuple | None = None

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

    def file(self, rel: str) -> Path:
        """Path of a file the manifest lists (never outside the bundle)."""
        if rel not in self.manifest["files"]:
            raise BundleError(f"{self.path}: the manifest lists no file {rel}")
        path = resolve_inside(self.path, rel)
        if not path.is_file():
            raise BundleError(f"{path}: file listed in the manifest is missing; rebuild the bundle")
        return path

    def _check_unchanged(self) -> None:
        if self.stamp is not None and _stamp(self.path / MANIFEST) != self.stamp:
            raise BundleError(f"{self.path}: the bundle was rebuilt after it was opened; open it again")

    def array(self, split: str, name: str) -> np.ndarray:
        rel = f"splits/{split}/{name}.npy"
        path = self.file(rel)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise BundleError(f"{path}: cannot read array ({exc}); rebuild the bundle") from exc
        self._check_unchanged()
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
        with open(self.file(f"splits/{split}/thumbs.bin"), "rb") as f:
            f.seek(int(offsets[i]))
            data = f.read(int(offsets[i + 1] - offsets[i]))
        self._check_unchanged()
        return data

    def split_data(self, split: str, wse: bool = True, lazy: bool = False) -> SplitData:
        """Arrays of one evaluation split, logits projected to its classes (float32).
        wse=False leaves out the WSE logits (projecting them is most of the cost on subset datasets).
        lazy=True leaves the logits memory-mapped and projects rows only when they are read
        (`ProjectedRows`): opening a split then reads none of its logits."""
        proj = self.projection(split)

        def logits(name: str) -> np.ndarray | ProjectedRows:
            raw = self.array(split, name)
            if lazy and proj is not None:
                return ProjectedRows(raw, proj)
            return project_logits(np.asarray(raw, dtype=np.float32), proj)

        ood_scores = {n: np.asarray(self.array(split, f"score_{n}"))
                      for n in ("mahalanobis", "relative_mahalanobis", "knn") if self.has(split, f"score_{n}")}
        logits_wse = None
        if wse and self.has(split, "logits_wse"):
            # Kept as stored (float16, memory-mapped when unprojected): a float32 copy of an
            # ImageNet-sized (A, N, C) array needs gigabytes, and only its argmax is used.
            logits_wse = project_logits(self.array(split, "logits_wse"), proj)
        return SplitData(
            name=split,
            role=self.splits[split]["role"],
            labels=np.asarray(self.array(split, "labels")),
            logits_zs=logits("logits_zs"),
            logits_ft=logits("logits_ft"),
            knn_sqdist=np.asarray(self.array(split, "knn_sqdist"), dtype=np.float32),
            logits_wse=logits_wse,
            ood_scores=ood_scores,
        )

    def wse_predictions(self, split: str) -> np.ndarray | None:
        """(A, N) predictions of the weight-space ensemble at each of `wse_alphas`: the stored
        `preds_wse`, else the argmax of the projected WSE logits, one alpha at a time (an
        ImageNet-sized split's WSE logits are gigabytes); None without WSE logits."""
        if self.has(split, "preds_wse"):
            return np.asarray(self.array(split, "preds_wse"))
        if not self.has(split, "logits_wse"):
            return None
        raw, proj = self.array(split, "logits_wse"), self.projection(split)
        return np.stack([project_logits(raw[i], proj).argmax(axis=1) for i in range(len(raw))]).astype(np.int32)

    def live_tables(self, split: str) -> dict[tuple[float, float], TopM]:
        """The live re-weighting tables precompute stored for a split, by temperature pair
        (manifest `live`); empty for bundles written without them."""
        info = self.manifest.get("live")
        if not info or not self.has(split, "live_cand"):
            return {}
        arrays = {n: self.array(split, f"live_{n}") for n in TABLE_ARRAYS}
        preds = self.array(split, "preds_zs"), self.array(split, "preds_ft")
        temps = [(float(tz), float(tf)) for tz, tf in info["temperatures"]]
        if any(len(a) != len(temps) for a in arrays.values()):
            raise BundleError(f"{self.file(f'splits/{split}/live_cand.npy')}: tables for "
                              f"{len(arrays['cand'])} temperature pairs, the manifest lists {len(temps)}; "
                              "rebuild the bundle")
        try:
            return {t: TopM.from_arrays({n: a[p] for n, a in arrays.items()}, *preds) for p, t in enumerate(temps)}
        except ValueError as exc:
            raise BundleError(f"{self.path / 'splits' / split}: {exc}; rebuild the bundle") from exc

    def verify(self) -> None:
        """Recompute every file's sha256 and compare with the manifest."""
        for rel, info in self.manifest["files"].items():
            path = self.file(rel)
            if sha256_file(path) != info["sha256"]:
                raise BundleError(f"{path}: checksum differs from the manifest (corrupted or modified); "
                                  "rebuild the bundle")
        self._check_unchanged()


def open_bundle(path: str | Path, verify: bool = False) -> Bundle:
    """Open a bundle, checking the manifest, every file's presence, size and .npy header, and the shapes'
    agreement (cheap: a few bytes per file); `verify=True` also recomputes every sha256 (reads it all)."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: no manifest; is {path} a bundle? Build one with "
                          "`python -m precompute demo` or `python -m precompute run --config FILE`")
    stamp = _stamp(mpath)
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc}); rebuild the bundle") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    validate_manifest(manifest, mpath)
    check_shapes(manifest, mpath)
    check_files(path, manifest)
    bundle = Bundle(path, manifest, stamp)
    bundle._check_unchanged()
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
