"""precompute's content-keyed stage results: each stage (a kNN search, one model's extraction of a
split, the embedding map, ...) is stored under a key that is the sha256 of exactly what it reads,
so a changed input recomputes the stages that read it and nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vrf_core.filesafe import atomic_save_npy, atomic_write_json


def content_key(*parts) -> str:
    """sha256 of JSON-able parts (the identity of a stage's inputs)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def array_digest(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.view(np.uint8).reshape(-1) if arr.size else b"")
    return h.hexdigest()


class StageCache:
    """Content-keyed stage results: `root/<stage>-<key[:16]>/` holds a stage's arrays (.npy) and a
    `done.json`. A stage folder is written as `.<name>.partial` and renamed when complete, so it is
    whole or absent. `record` lists what this run computed and what it reused (written to stages.json).
    With `root=None` (synthetic bundles) nothing is stored and everything is computed."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.record: list[dict] = []

    def folder(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key[:16]}"

    def has(self, stage: str, key: str) -> bool:
        return self.root is not None and (self.folder(stage, key) / "done.json").is_file()

    def load(self, stage: str, key: str) -> dict[str, np.ndarray]:
        return {p.stem: np.load(p, mmap_mode="r", allow_pickle=False)
                for p in sorted(self.folder(stage, key).glob("*.npy"))}

    def put(self, stage: str, key: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Publish a stage's arrays; returns them as stored (what a resumed run would read back)."""
        if self.root is None:
            return arrays
        folder = self.folder(stage, key)
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            for name, arr in arrays.items():
                atomic_save_npy(partial / f"{name}.npy", np.asarray(arr))
            atomic_write_json(partial / "done.json", {"stage": stage, "key": key})
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder left by an older version
            os.replace(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return self.load(stage, key)

    def get(self, stage: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The stored result when its key matches, else computed now and stored."""
        if self.has(stage, key):
            self.note(stage, key, "reused")
            return self.load(stage, key)
        t0 = time.perf_counter()
        out = self.put(stage, key, compute())
        self.note(stage, key, "computed", time.perf_counter() - t0)
        return out

    def note(self, stage: str, key: str, status: str, seconds: float = 0.0) -> None:
        self.record.append({"stage": stage, "key": key[:16], "status": status, "seconds": round(seconds, 2)})
