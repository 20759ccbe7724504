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
