"""The embedding map: a 2-D UMAP of the fine-tuned features, computed once in precompute (never per
interaction in the dashboard)."""

from __future__ import annotations

import numpy as np

from vrf_core.filesafe import kill_point
from vrf_core.knn import knn_sqdist


def compute_embedding(parts: dict[str, np.ndarray], max_points: int, n_neighbors: int,
                      seed: int) -> dict[str, np.ndarray]:
    """2-D UMAP of the fine-tuned features of several splits at once (cosine metric, exact kNN
    graph from faiss). Each split keeps at most its share of `max_points`; other rows are NaN."""
    import umap

    rng = np.random.default_rng(seed)
    total = sum(len(x) for x in parts.values())
    frac = min(1.0, max_points / max(total, 1))
    chosen = {n: np.sort(rng.choice(len(x), size=max(1, int(round(len(x) * frac))), replace=False))
              for n, x in parts.items() if len(x)}
    feats = np.concatenate([np.asarray(parts[n][idx], dtype=np.float32) for n, idx in chosen.items()])
    k = min(n_neighbors, len(feats) - 1)
    sq, idx = knn_sqdist(feats, feats, k, backend="faiss", exclude_self=True)
    # UMAP's precomputed graph includes each point itself at distance 0 in column 0.
    knn_idx = np.concatenate([np.arange(len(feats))[:, None], idx], 1)
    knn_dist = np.concatenate([np.zeros((len(feats), 1), np.float32), np.sqrt(sq) / np.sqrt(2)], 1)
    kill_point("umap")
    reducer = umap.UMAP(n_neighbors=k + 1, metric="cosine", random_state=seed,
                        precomputed_knn=(knn_idx, knn_dist, None), n_jobs=1)
    coords = reducer.fit_transform(feats).astype(np.float32)
    out, start = {}, 0
    for n, x in parts.items():
        full = np.full((len(x), 2), np.nan, dtype=np.float32)
        if n in chosen:
            full[chosen[n]] = coords[start:start + len(chosen[n])]
            start += len(chosen[n])
        out[n] = full
    return out
