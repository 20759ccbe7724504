"""The paper's analyses as plain functions on arrays: parameter sweeps, accuracy per
distance bin, distance densities, top-k predictions, unit conversions.

Used by the dashboard to redraw its views when a, b, k or the weight rule change
(the re-weighted predictions themselves come from `vrf_core.topm`); no I/O, no Streamlit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from vrf_core.evaluate import VRFParams


def sweep(params: VRFParams, name: str, values: Sequence[float]) -> list[VRFParams]:
    """`params` with one numeric field (a, b or k) set to each of `values`."""
    cast = type(getattr(params, name))
    return [replace(params, **{name: cast(v)}) for v in values]


def density(values: np.ndarray, grid: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """Gaussian kernel density of `values` on an evenly spaced `grid` (Scott's bandwidth by default),
    from a histogram on the grid convolved with the kernel: O(N + G^2), for large N."""
    values = np.asarray(values, dtype=np.float64)
    step = float(grid[1] - grid[0])
    if bandwidth is None:
        bandwidth = 1.06 * float(np.std(values)) * len(values) ** -0.2
    bandwidth = max(bandwidth, step)
    edges = np.append(grid - step / 2, grid[-1] + step / 2)
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), edges)
    offsets = (np.arange(len(grid)) - np.arange(len(grid))[:, None]) * step
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2) / (bandwidth * np.sqrt(2 * np.pi))
    return kernel @ counts / max(len(values), 1)


def distance_bin_edges(distances: Sequence[np.ndarray], n_bins: int = 12, tail: float = 0.01) -> np.ndarray:
    """(n_bins + 1,) equal-width edges over the pooled distances, trimming a `tail` fraction on each
    side into the outer bins, so every dataset is binned on the same axis."""
    pooled = np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in distances])
    lo, hi = np.quantile(pooled, [tail, 1.0 - tail])
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, n_bins + 1)
    edges[0], edges[-1] = min(lo, pooled.min()), max(hi, pooled.max())
    return edges


def binned_accuracy(d: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distance bin: (count, accuracy); accuracy is NaN in empty bins."""
    bins = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(bins, minlength=len(edges) - 1).astype(np.float64)
    hits = np.bincount(bins, weights=np.asarray(correct, dtype=np.float64), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, hits / count


def accuracy_ratio_by_bin(d: np.ndarray, correct_ft: np.ndarray, correct_zs: np.ndarray, edges: np.ndarray,
                          min_count: int = 20) -> dict[str, np.ndarray]:
    """The paper's justification plot: acc_ft / acc_zs per distance bin (it falls as d grows).

    Returns count, acc_ft, acc_zs and ratio per bin; the ratio is NaN where a bin holds
    fewer than `min_count` samples or the zero-shot accuracy is 0.
    """
    count, acc_ft = binned_accuracy(d, correct_ft, edges)
    _, acc_zs = binned_accuracy(d, correct_zs, edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where((count >= min_count) & (acc_zs > 0), acc_ft / acc_zs, np.nan)
    return {"count": count, "acc_ft": acc_ft, "acc_zs": acc_zs, "ratio": ratio}


def top_k(probs: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """probs: (C,) -> the k most probable classes and their probabilities, descending."""
    k = min(k, len(probs))
    idx = np.argpartition(-probs, k - 1)[:k]
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    return idx, probs[idx]


def convert_scale(a: float, b: float, src: str, dst: str) -> tuple[float, float]:
    """(a, b) on distance scale `src` -> the matching pair on `dst` ("squared" or "l2").

    The centre maps exactly (a_l2 = sqrt(a_sq)); the width keeps the slope of w at the
    centre (d_sq = d_l2^2, so b_sq = 2 a_l2 b_l2).
    """
    if src == dst:
        return a, b
    if (src, dst) == ("squared", "l2"):
        a_l2 = float(np.sqrt(max(a, 0.0)))
        return a_l2, b / (2.0 * a_l2) if a_l2 > 0 else b
    if (src, dst) == ("l2", "squared"):
        return a * a, 2.0 * a * b if a > 0 else b
    raise ValueError(f"unknown distance scales {src!r} -> {dst!r}; use 'squared' or 'l2'")
