"""Projection of C-way model logits onto a dataset's own classes (before softmax and argmax)."""

from __future__ import annotations

import numpy as np

from vrf_core.data import ClassProjection


def project_logits(logits: np.ndarray, projection: ClassProjection | None) -> np.ndarray:
    """(N, C) -> (N, C'): column j is the max of the model logits in group j."""
    if projection is None:
        return logits
    if projection.is_subset:
        return logits[..., [g[0] for g in projection.groups]]
    return np.stack([logits[..., list(g)].max(axis=-1) for g in projection.groups], axis=-1)


class ProjectedRows:
    """(N, C) model logits (e.g. memory-mapped) seen through a projection, projected only where read:
    `x[rows]` gives float32 projected rows, `np.asarray(x)` all of them. Lets a split's logits be
    opened without reading them (the top-m tables need only the rows they cannot decide)."""

    def __init__(self, logits: np.ndarray, projection: ClassProjection):
        self.logits, self.projection = logits, projection
        self.shape = (logits.shape[0], projection.num_classes)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, tuple):  # x[rows, cols]: project the rows, then index the columns
            return self[rows[0]][(slice(None), *rows[1:])]
        return project_logits(np.asarray(self.logits[rows], dtype=np.float32), self.projection)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)
