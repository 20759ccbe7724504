"""Exact kNN of evaluation samples to the ZSF set: `vrf_core.knn`'s torch path against the
reference approach (a flat faiss L2 index searched per dataset), plus IVF with measured
recall; timed on a sample of the queries spread over the test sets, and extrapolated."""

from __future__ import annotations

import os
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks.measure import Row, ratio, seconds, timed
from vrf_core.bundle import open_bundle
from vrf_core.knn import knn_sqdist, l2_normalize


def exact_reference(queries: list[np.ndarray], base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference approach: a flat faiss L2 index on the ZSF set, searched per dataset."""
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    out = [index.search(q, k) for q in queries]
    return np.concatenate([d for d, _ in out]), np.concatenate([i for _, i in out])


def bench_knn(path: Path, n_queries: int, repeats: int) -> list[Row]:
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    bundle = open_bundle(path)
    base = l2_normalize(np.asarray(bundle.array("zsf", "features_ft"), np.float32))
    names = bundle.split_names("id_test") + bundle.split_names("ood")
    total = sum(bundle.splits[s]["n"] for s in names)
    queries = []
    for s in names:
        take = max(1, round(n_queries * bundle.splits[s]["n"] / total))
        queries.append(l2_normalize(np.asarray(bundle.array(s, "features_ft")[:take], np.float32)))
    nq, k = sum(len(q) for q in queries), bundle.k_max
    scale_up = total / nq
    every = np.concatenate(queries)
    ref_t, (ref_d, ref_i) = timed(lambda: exact_reference(queries, base, k), max(1, repeats // 3))
    fast_t, (fast_d, fast_i) = timed(lambda: knn_sqdist(every, base, k, backend="torch"), max(1, repeats // 3))
    worst = float(np.abs(fast_d - ref_d).max())
    if worst > 1e-4:
        raise AssertionError(f"torch kNN distances differ from the flat index by {worst}")
    same = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(fast_i, ref_i)]))
    lists = int(2 ** int(np.log2(min(3 * np.sqrt(len(base)), len(base) / 39))))  # faiss: >= 39 points a list
    t0 = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.train(base)  # what knn_sqdist(..., ivf_lists=lists) builds, timed apart from the search
    index.add(base)
    build_t = time.perf_counter() - t0
    desc = f"{nq} of {total} queries x {len(base)} ZSF, k = {k}, {threads} threads"
    rows = [Row(f"kNN exact: {desc}", seconds(fast_t), seconds(ref_t), ratio(ref_t, fast_t),
                ">= 1x (as fast as flat L2)", "yes" if fast_t <= ref_t else "no",
                f"torch matmul + top-k (knn_sqdist backend 'torch', what 'auto' picks) vs faiss IndexFlatL2 per "
                f"dataset; all {total} queries extrapolated: {fast_t * scale_up / 60:.1f} vs "
                f"{ref_t * scale_up / 60:.1f} min; max distance diff {worst:.1e}, same neighbours "
                f"{100 * same:.2f}% (the rest are ties)")]
    for nprobe in (32, 128):
        index.nprobe = nprobe
        ivf_t, (_, ivf_i) = timed(lambda: index.search(every, k), 1)
        recall = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ivf_i, ref_i)]))
        recall1 = float(np.mean(ivf_i[:, 0] == ref_i[:, 0]))
        rows.append(Row(f"kNN approximate: IVF{lists}, nprobe {nprobe}, same queries (search only)",
                        seconds(ivf_t), seconds(ref_t), ratio(ref_t, ivf_t), "recall measured", "-",
                        f"recall@{k} {recall:.3f}, recall@1 {recall1:.3f} on this synthetic geometry; index build "
                        f"{build_t:.1f} s once; all queries extrapolated {(build_t + ivf_t * scale_up) / 60:.1f} min"))
    return rows
