"""The run bundle on disk: the one contract between precompute, the dashboard and any other
tool that writes bundles (docs/bundle.md; the schema itself is vrf_core.bundle_schema).

Storage only: a directory with `manifest.json` and `.npy` arrays (memory-mappable, never
pickled). A build is staged in `.staging/` and moved into place when complete; the manifest
records each file's shape, dtype, size and sha256 (hashed while writing) and is written last.
`open_bundle` checks the manifest against the schema, every file's size and .npy header on
every open; `verify=True` also recomputes every sha256. Arrays come back as arrays and the
manifest as a dict: `vrf_core.bundle_adapter` turns them into the math's objects.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrf_core import filesafe
from vrf_core.bundle_schema import SCHEMA_VERSION, check_manifest
from vrf_core.filesafe import atomic_save_npy, atomic_write_bytes, atomic_write_json, fsync_dir, kill_point, sha256_file

MANIFEST = "manifest.json"
STAGING = ".staging"


class BundleError(ValueError):
    """A bundle cannot be opened or is inconsistent; the message names the file and the fix."""


def resolve_inside(root: str | Path, relative: str | os.PathLike) -> Path:
    """`filesafe.resolve_inside`, raising BundleError: use it for every path read from a manifest."""
    try:
        return filesafe.resolve_inside(root, relative)
    except filesafe.UnsafePathError as exc:
        raise BundleError(str(exc)) from None


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
        if arr.dtype.hasobject:
            raise BundleError(f"{rel}: object arrays cannot be stored (they would need pickle)")
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
        self.files[rel] = _entry(path, [len(blob)], "bytes", atomic_write_bytes(path, blob))
        self.put(split, "thumbs_offsets", offsets)

    def staged(self, manifest: dict) -> Bundle:
        """The staged build, readable before `finalize` (to choose hyperparameters from its arrays)."""
        return Bundle(self.stage, {**manifest, "files": self.files})

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def finalize(self, manifest: dict) -> Path:
        manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": dict(sorted(self.files.items()))}
        where = self.root / MANIFEST
        problem = check_manifest(manifest)
        if problem:  # a writer's bug, caught before the old bundle is touched
            raise BundleError(f"{where} (not written): {problem}")
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
        return self.manifest["ensemble"]["ose_alphas"]

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

    def split_classnames(self, split: str) -> list[str]:
        return self.splits[split].get("classnames") or self.classnames

    def thumbnail(self, split: str, i: int) -> bytes:
        offsets = self.array(split, "thumbs_offsets")
        with open(self.file(f"splits/{split}/thumbs.bin"), "rb") as f:
            f.seek(int(offsets[i]))
            data = f.read(int(offsets[i + 1] - offsets[i]))
        self._check_unchanged()
        return data

    def verify(self) -> None:
        """Recompute every file's sha256 and compare with the manifest."""
        for rel, info in self.manifest["files"].items():
            path = self.file(rel)
            if sha256_file(path) != info["sha256"]:
                raise BundleError(f"{path}: checksum differs from the manifest (corrupted or modified); "
                                  "rebuild the bundle")
        self._check_unchanged()


def open_bundle(path: str | Path, verify: bool = False) -> Bundle:
    """Open a bundle, checking the manifest against schema 2 (keys, arrays per role, each array's dtype and
    shape), every file's presence, size and .npy header (cheap: a few bytes per file); `verify=True` also
    recomputes every sha256 (reads it all). Raises BundleError naming the first thing wrong."""
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
    for rel in manifest.get("files") if isinstance(manifest.get("files"), dict) else ():
        resolve_inside(path, rel)  # before anything else: a path leaving the bundle is refused outright
    problem = check_manifest(manifest, str(path))
    if problem:
        raise BundleError(f"{mpath}: {problem}")
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
