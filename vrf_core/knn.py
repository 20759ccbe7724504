"""Exact (and optionally approximate) k-nearest-neighbour distances to the ZSF set.

Features are L2-normalised, so the squared L2 distance is 2 - 2 * cosine and lies
in [0, 4]. Distances are returned sorted ascending up to `k_max`, so that k can be
changed later without a new search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# torch is imported where a search runs: the dashboard reads bundles through modules that import
# this one, and importing torch costs it 1.4 s of its cold start.

BACKENDS = ("auto", "faiss", "torch")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _faiss_search(queries: np.ndarray, base: np.ndarray, k: int, threads: int | None,
                  ivf_lists: int = 0, nprobe: int = 32) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    d = base.shape[1]
    if ivf_lists:
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, ivf_lists, faiss.METRIC_INNER_PRODUCT)
        index.train(base)
        index.nprobe = nprobe
    else:
        index = faiss.IndexFlatIP(d)
    index.add(base)
    sims, idx = index.search(queries, k)
    return sims, idx


def default_devices() -> list[str]:
    """Every visible CUDA device, else the CPU."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


def _free_bytes(device: str) -> int:
    if device == "cpu":
        return 1 << 62
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free


def _merge(best: tuple | None, v: torch.Tensor, i: torch.Tensor, k: int) -> tuple:
    import torch

    if best is None:
        return v, i
    cat_s, cat_i = torch.cat([best[0], v], 1), torch.cat([best[1], i], 1)
    s, order = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
    return s, cat_i.gather(1, order)


def _torch_search(queries: np.ndarray, base: np.ndarray, k: int, devices: list[str] | None = None,
                  query_chunk: int = 8192, base_chunk: int = 262144, cpu_block: int = 2**26,
                  memory_budget: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Matmul + top-k, chunked over queries and over the base, merged exactly.

    The base is cut into shards of `base_chunk` rows, spread round-robin over `devices` (several
    GPUs share a ZSF set none of them could hold). A device keeps its shards resident when they fit
    in `memory_budget` bytes (default: half its free memory); otherwise they stay in (pinned) host
    memory and are copied to it for each query chunk. On the CPU a block of scores holds at most
    `cpu_block` floats (256 MiB)."""
    import torch

    devices = devices or default_devices()
    if devices == ["cpu"]:
        query_chunk = max(1, min(query_chunk, cpu_block // max(1, min(len(base), base_chunk))))
    dtype = torch.float32
    starts = list(range(0, len(base), base_chunk))
    owner = {s: devices[n % len(devices)] for n, s in enumerate(starts)}
    share = {d: sum(min(base_chunk, len(base) - s) for s in starts if owner[s] == d) * base.shape[1] * 4
             for d in devices}
    resident = {d: share[d] <= (memory_budget if memory_budget is not None else _free_bytes(d) // 2)
                for d in devices}
    shards = []
    for s in starts:
        host = torch.from_numpy(np.ascontiguousarray(base[s:s + base_chunk])).to(dtype)
        dev = owner[s]
        if resident[dev]:
            shards.append((s, dev, host.to(dev)))
        else:
            shards.append((s, dev, host.pin_memory() if dev != "cpu" else host))
    sims_out = np.empty((len(queries), k), dtype=np.float32)
    idx_out = np.empty((len(queries), k), dtype=np.int64)
    home = devices[0]
    for q0 in range(0, len(queries), query_chunk):
        host_q = torch.from_numpy(queries[q0:q0 + query_chunk]).to(dtype)
        q_on = {d: host_q.to(d) for d in devices}
        best = None
        for start, dev, b in shards:
            b = b.to(dev, non_blocking=True)  # a no-op for resident shards
            v, i = (q_on[dev] @ b.T).topk(min(k, len(b)), dim=1)
            best = _merge(best, v.to(home), (i + start).to(home), k)
        sims_out[q0:q0 + len(host_q)] = best[0].float().cpu().numpy()
        idx_out[q0:q0 + len(host_q)] = best[1].cpu().numpy()
    return sims_out, idx_out


def knn_sqdist(queries: np.ndarray, base: np.ndarray, k_max: int, backend: str = "auto",
               exclude_self: bool = False, threads: int | None = None,
               ivf_lists: int = 0, nprobe: int = 32,
               devices: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances (N, k) and indices (N, k) of the nearest base points, ascending.

    queries: (N, D), base: (M, D); both are L2-normalised here.
    exclude_self: the queries are the base itself (same order); each point's own
      match is dropped, so ZSF members are measured against the other members.
    backend: "faiss" (CPU, exact flat or IVF), "torch" (matmul + top-k in blocks, CPU or
      CUDA), "auto" (torch for exact search: on 2 CPU cores it is about 5x faster than a
      flat faiss index at k = 100, docs/benchmarks.md; faiss for IVF).
    ivf_lists > 0 selects the approximate IVF index (faiss only).
    devices: where the torch backend runs (default: every visible GPU, the ZSF set sharded over
      them and streamed from host memory when it does not fit; else the CPU).
    """
    q = l2_normalize(queries)
    b = l2_normalize(base)
    if exclude_self and len(q) != len(b):
        raise ValueError("exclude_self needs the queries to be the base itself")
    k_eff = min(k_max + int(exclude_self), len(b))
    if k_eff < 1 or k_max < 1:
        raise ValueError(f"cannot search {k_max} neighbours in a set of {len(b)} points")
    if backend == "auto":
        backend = "faiss" if ivf_lists else "torch"
    if backend == "faiss":
        sims, idx = _faiss_search(q, b, k_eff, threads, ivf_lists, nprobe)
    elif backend == "torch":
        sims, idx = _torch_search(q, b, k_eff, devices)
    else:
        raise ValueError(f"unknown kNN backend {backend!r}; choose 'faiss', 'torch' or 'auto'")
    if exclude_self:
        sims, idx = _drop_self(sims, idx)
    sq = np.clip(2.0 - 2.0 * sims, 0.0, 4.0).astype(np.float32)
    return sq[:, :k_max], idx[:, :k_max].astype(np.int64)


def _drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (row i matches base i); if duplicates pushed it
    out of the list, drop the last column instead."""
    n, k = idx.shape
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k - 1)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return sims[keep].reshape(n, k - 1), idx[keep].reshape(n, k - 1)


def brute_force_sqdist(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    """Straightforward reference: all pairwise squared distances, sorted (for tests)."""
    q, b = l2_normalize(queries).astype(np.float64), l2_normalize(base).astype(np.float64)
    d = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.sort(d, axis=1)[:, :k]
