"""Writing files so that nothing is half-written and nothing leaves its folder.

Used by every part that writes (bundles, stage caches, checkpoints, extraction shards),
none of which needs to know what a bundle is:

- `atomic_write_bytes` / `atomic_write_json` / `atomic_save_npy`: a temporary name in the
  same folder, fsync, rename; readers see the old file or the new one, never a part. A full
  disk raises `DiskFullError` naming the file and the free space, and leaves nothing behind.
- `resolve_inside`: the one way to turn a relative path read from a file or a request into a
  path, refusing anything that leaves its root.
- `kill_point`: the crash-test hook (`VRF_TEST_KILL_AT`, docs/bundle.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import Any, BinaryIO

import numpy as np

KILL_ENV = "VRF_TEST_KILL_AT"


class UnsafePathError(ValueError):
    """A path read from a file or a request leaves the folder it must stay in."""


class DiskFullError(OSError):
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


# ---- paths read from files --------------------------------------------------------

def resolve_inside(root: str | Path, relative: str | os.PathLike) -> Path:
    """`root / relative`, resolved, refusing any path that leaves `root`: absolute paths, drive letters,
    `..` components, NUL bytes, and symbolic links pointing outside."""
    rel = os.fspath(relative)
    parts = rel.replace("\\", "/").split("/")
    if not rel or "\x00" in rel or rel.startswith(("/", "\\", "~")) or PureWindowsPath(rel).drive or ".." in parts:
        raise UnsafePathError(f"{rel!r} is not a relative path inside {root}: absolute paths, '~' and '..' "
                              "are refused")
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise UnsafePathError(f"{rel!r} resolves to {target}, outside {base} (through a symbolic link); refused")
    return target


# ---- atomic writing ---------------------------------------------------------------

def _free_space(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
    except OSError:
        return "unknown"
    return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB"


class _HashingFile:
    """A write-only file that hashes what passes through it (so nothing is read back to hash it)."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> str:
    """Write to a temporary name in the same folder, fsync, rename. Returns the sha256 of what was written."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            hashing = _HashingFile(f)
            write(hashing)
            f.flush()
            os.fsync(f.fileno())
        kill_point("atomic-rename")
        os.replace(tmp, path)
        return hashing.sha.hexdigest()
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                exc.errno,
                f"{path}: no space left on device while writing it ({_free_space(path.parent)} free there). "
                "Free some space (or point run.out elsewhere) and run the same command again: finished "
                "stages are kept and the previous bundle is unchanged") from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Returns the sha256 of `data`."""
    return _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> str:
    return atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def atomic_save_npy(path: Path, arr: np.ndarray) -> str:
    """Save as .npy without pickling (object arrays are refused); returns the sha256 of the file,
    hashed while it is written."""
    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise TypeError(f"{Path(path).name}: object arrays cannot be stored (they would need pickle)")
    return _atomic_write(Path(path), lambda f: np.lib.format.write_array(f, np.ascontiguousarray(arr),
                                                                          allow_pickle=False))


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
