"""Exact re-weighting from top-m tables: VRF and OSE predictions for new (a, b, k, rule, scale,
calibration) without forming the full N x C mixture.

The mixture score of class c is s_c = w p_ft[c] + (1 - w) p_zs[c] (paper Eq. 5),
computed in float32 exactly as `vrf_core.evaluate.mixture_preds` does. Each model's
top-m classes are kept per sample, with their probabilities under both models, plus
r_ft and r_zs, the (m+1)-th largest probability of each model. A class outside both
top-m lists has p_ft[c] <= r_ft and p_zs[c] <= r_zs, so, float32 rounding being
monotone, s_c <= w r_ft + (1 - w) r_zs. When that bound is below the best candidate's
score the argmax is among the (at most 2m) candidates; otherwise (rare) the sample's
full row is recomputed. The candidate scores are bit-identical to the full
computation's, and ties go to the smallest class index, as `np.argmax` does, so the
predictions equal `mixture_preds` on every sample (tests/test_topm.py).

Usage: `split = TopMSplit.from_split_data(split_data, t_zs, t_ft)`, then
`split.vrf_accuracy(params)`, `split.vrf_preds(params)`, `split.ose_accuracy(alpha, calibrated)`,
`split.mixture_preds(w, calibrated)`, `split.model_preds("zs" | "ft")` and `split.entropies()` (each
model's softmax entropy, DaWin's input, kept with the tables since they are built in the same pass
over the logits); `ose_curve` and
`vrf_curve` sweep several splits at once. Building a temperature pair's tables (on first use)
costs one pass over both models' logits; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from vrf_core.evaluate import SplitData, VRFParams, knn_array
from vrf_core.row_softmax import ROW_CHUNK, entropy_from_exp, entropy_rows, exp_rows, softmax_rows
from vrf_core.weights import kth_distance, weight

__all__ = ["ENTROPY_ARRAYS", "TABLE_ARRAYS", "TopMSplit", "TopMTable", "ose_curve", "softmax_rows", "vrf_curve"]

TABLE_ARRAYS = ("cand", "p_ft", "p_zs", "r_ft", "r_zs")
ENTROPY_ARRAYS = ("h_zs", "h_ft")  # stored beside the tables since DaWin; absent in older bundles


@dataclass
class TopMTable:
    """Per sample, for one temperature pair: candidate classes (each model's top m), both
    models' float32 probabilities there, and each model's (m+1)-th largest probability.
    Candidate-major, so that reductions over the candidates run along whole rows."""

    cand: np.ndarray  # (2m, N) int32
    p_ft: np.ndarray  # (2m, N) float32
    p_zs: np.ndarray  # (2m, N) float32
    r_ft: np.ndarray  # (N,) float32
    r_zs: np.ndarray  # (N,) float32
    arg_ft: np.ndarray  # (N,) int64, argmax of the fine-tuned logits
    arg_zs: np.ndarray  # (N,) int64
    h_zs: np.ndarray | None = None  # (N,) float32 entropy of each model's softmax at the table's temperature
    h_ft: np.ndarray | None = None  # (None: tables read from a bundle written before DaWin)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The temperature-dependent part, as stored in a bundle (`topm_<name>` arrays)."""
        out = {n: getattr(self, n) for n in TABLE_ARRAYS}
        return out | ({n: getattr(self, n) for n in ENTROPY_ARRAYS} if self.h_zs is not None else {})

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], arg_zs: np.ndarray, arg_ft: np.ndarray) -> TopMTable:
        """Tables read back from a bundle; arg_zs / arg_ft are the models' predictions (`preds_*`);
        the entropies are optional."""
        t = cls(*(arrays[n] for n in TABLE_ARRAYS), arg_ft=np.asarray(arg_ft), arg_zs=np.asarray(arg_zs),
                **{n: arrays.get(n) for n in ENTROPY_ARRAYS})
        m2, n = t.cand.shape
        if m2 % 2 or any(a.shape != (m2, n) for a in (t.p_ft, t.p_zs)) or \
                any(a.shape != (n,) for a in (t.r_ft, t.r_zs, t.arg_ft, t.arg_zs)) or \
                any(a is not None and a.shape != (n,) for a in (t.h_zs, t.h_ft)):
            raise ValueError(f"top-m tables of inconsistent shapes: cand {t.cand.shape}, p_ft {t.p_ft.shape}, "
                             f"p_zs {t.p_zs.shape}, r_ft {t.r_ft.shape}, r_zs {t.r_zs.shape}, "
                             f"preds {t.arg_zs.shape}/{t.arg_ft.shape}")
        return t


def _largest(e: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns (m, n) of each row's m largest values and the (m+1)-th largest value (n,).
    m + 1 argmax passes, each hiding its pick (e >= 0, so -inf hides), then e is restored:
    about 2.5x faster than argpartition for m = 5 of 1000, which also holds the GIL."""
    rows = np.arange(len(e))
    idx = np.empty((m + 1, len(e)), np.intp)
    vals = np.empty((m + 1, len(e)), e.dtype)
    for j in range(m + 1):
        idx[j] = e.argmax(axis=1)
        vals[j] = e[rows, idx[j]]
        e[rows, idx[j]] = -np.inf
    for j in range(m + 1):
        e[rows, idx[j]] = vals[j]
    return idx[:m], vals[m]


def _top_m_block(l_zs: np.ndarray, l_ft: np.ndarray, t_zs: float, t_ft: float, m: int,
                 buffers: tuple[np.ndarray, np.ndarray] | None = None):
    """Candidates and bounds of a block of rows. Only the probabilities that are kept are divided
    out; p = float32(e / s) is monotone in e, so ranking by e ranks the probabilities. The entropies
    come from the same exponentials (`row_softmax.entropy_from_exp`, as `entropy_rows` forms them).
    buffers: two reused (>= n, C) float64 blocks for the exponentials."""
    b_ft, b_zs = buffers or (None, None)
    e_ft, s_ft, arg_ft, x = exp_rows(l_ft, t_ft, keep_shifted=True, out=b_ft)
    h_ft = entropy_from_exp(e_ft, s_ft, x)
    e_zs, s_zs, arg_zs, x = exp_rows(l_zs, t_zs, keep_shifted=True, out=b_zs)  # one shifted block alive at a time
    h_zs = entropy_from_exp(e_zs, s_zs, x)
    del x
    tops, bounds = [], []
    for e, s in ((e_ft, s_ft), (e_zs, s_zs)):
        top, r = _largest(e, m)
        tops.append(top.T)
        bounds.append((r / s[:, 0]).astype(np.float32))
    cand = np.concatenate(tops, axis=1)
    p_ft = (np.take_along_axis(e_ft, cand, axis=1) / s_ft).astype(np.float32)
    p_zs = (np.take_along_axis(e_zs, cand, axis=1) / s_zs).astype(np.float32)
    return cand.T, p_ft.T, p_zs.T, bounds[0], bounds[1], arg_ft, arg_zs, h_zs, h_ft


def _build_top_m(logits_zs, logits_ft, t_zs: float, t_ft: float, m: int, threads: int) -> TopMTable:
    n = len(logits_ft)
    t = TopMTable(np.empty((2 * m, n), np.int32), np.empty((2 * m, n), np.float32),
              np.empty((2 * m, n), np.float32), np.empty(n, np.float32), np.empty(n, np.float32),
              np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32))

    local = threading.local()  # each thread's two exponential blocks, reused from block to block

    def fill(s: int) -> None:
        e = min(s + ROW_CHUNK, n)
        if not hasattr(local, "buffers"):
            local.buffers = tuple(np.empty((ROW_CHUNK, logits_ft.shape[1]), np.float64) for _ in range(2))
        (t.cand[:, s:e], t.p_ft[:, s:e], t.p_zs[:, s:e], t.r_ft[s:e], t.r_zs[s:e], t.arg_ft[s:e],
         t.arg_zs[s:e], t.h_zs[s:e], t.h_ft[s:e]) = _top_m_block(
            logits_zs[s:e], logits_ft[s:e], t_zs, t_ft, m, local.buffers)

    # exp and the divisions release the GIL, so row blocks overlap in threads.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(0, n, ROW_CHUNK)))
    return t


@dataclass
class TopMSplit:
    """One evaluation split ready for exact re-weighting (the dashboard's live controls, hyperparameter tuning).

    The split's logits may be memory-mapped: after the per-temperature tables are built
    (on first use), only the rows that need the full computation are read again.
    `fallback_rows` counts the samples recomputed in full so far (for the benchmark).
    """

    split: SplitData
    t_zs: float
    t_ft: float
    m: int = 5
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    fallback_rows: int = 0
    _tables: dict = field(default_factory=dict, repr=False)
    _distances: dict = field(default_factory=dict, repr=False)
    _entropies: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_split_data(cls, split: SplitData, t_zs: float, t_ft: float, m: int = 5,
                        tables: dict[tuple[float, float], TopMTable] | None = None) -> TopMSplit:
        """t_zs, t_ft: the calibrated temperatures (used when `calibrate` is on, else T = 1).
        tables: prebuilt tables by temperature pair (e.g. read from a bundle); the ones
        missing are built on first use."""
        out = cls(split, float(t_zs), float(t_ft), m)
        for temps, table in (tables or {}).items():
            if len(table.r_ft) != len(split):
                raise ValueError(f"split {split.name}: top-m tables for {len(table.r_ft)} samples, split has "
                                 f"{len(split)}")
            out._tables[(float(temps[0]), float(temps[1]))] = table
        return out

    @property
    def temperatures(self) -> tuple[float, float]:
        """The calibrated pair (used when `calibrated`)."""
        return self.t_zs, self.t_ft

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels

    def __len__(self) -> int:
        return len(self.split)

    def _temperatures(self, calibrated: bool) -> tuple[float, float]:
        return (self.t_zs, self.t_ft) if calibrated else (1.0, 1.0)

    def _top_m(self, calibrated: bool) -> TopMTable | None:
        """Built on first use for each temperature pair; None when m covers every class."""
        temps = self._temperatures(calibrated)
        if temps in self._tables:
            return self._tables[temps]
        m = min(self.m, self.split.logits_ft.shape[1] - 1)
        if m < 1:
            return None
        self._tables[temps] = _build_top_m(self.split.logits_zs, self.split.logits_ft, *temps, m, self.threads)
        return self._tables[temps]

    def tables(self) -> dict[tuple[float, float], TopMTable]:
        """The tables for T = 1 and for the calibrated temperatures (built if needed), to store in a
        bundle; empty when m covers every class (then nothing needs storing)."""
        out = {}
        for calibrated in (False, True):
            t = self._top_m(calibrated)
            if t is not None:
                out[self._temperatures(calibrated)] = t
        return out

    def mixture_preds(self, w: np.ndarray | float, calibrated: bool = True) -> np.ndarray:
        """argmax of w * p_ft + (1 - w) * p_zs, equal to `evaluate.mixture_preds`; w scalar or (N,)."""
        w = np.asarray(w, dtype=np.float32)
        t = self._top_m(calibrated)
        if t is None:
            return self._full_preds(np.arange(len(self)), w, calibrated)
        w1 = 1.0 - w  # float32, rounded as in the full mixture
        score = w * t.p_ft
        score += w1 * t.p_zs
        best = score.max(axis=0)
        preds = np.where(score == best, t.cand, np.iinfo(np.int32).max).min(axis=0).astype(np.int64)
        bound = w * t.r_ft + w1 * t.r_zs  # on every class outside both top-m lists
        unsure = np.flatnonzero(bound >= best)
        if len(unsure):
            preds[unsure] = self._full_preds(unsure, w, calibrated)
        return preds

    def _full_preds(self, rows: np.ndarray, w: np.ndarray, calibrated: bool) -> np.ndarray:
        self.fallback_rows += len(rows)
        t_zs, t_ft = self._temperatures(calibrated)
        w = w[rows, None] if w.ndim == 1 else w
        p = w * softmax_rows(self.split.logits_ft[rows], t_ft)
        p += (1.0 - w) * softmax_rows(self.split.logits_zs[rows], t_zs)
        return p.argmax(axis=1)

    def model_preds(self, model: str) -> np.ndarray:
        """Predictions of one model alone ("zs" or "ft"): argmax of its logits, found while the
        tables are built (no second pass over the logits)."""
        t = self._top_m(True)
        if t is None:
            return np.asarray(self.split.logits_zs if model == "zs" else self.split.logits_ft).argmax(axis=1)
        return t.arg_zs if model == "zs" else t.arg_ft

    def entropies(self, calibrated: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each model's entropy (N,) float32 (zero-shot, fine-tuned) at the calibrated temperatures (or
        T = 1): stored with the tables, or (older bundles, m covering every class) computed from the logits
        once, with the same operations (`row_softmax.entropy_rows`)."""
        t = self._top_m(calibrated)
        if t is not None and t.h_zs is not None:
            return t.h_zs, t.h_ft
        temps = self._temperatures(calibrated)
        if temps not in self._entropies:
            self._entropies[temps] = (entropy_rows(self.split.logits_zs, temps[0]),
                                      entropy_rows(self.split.logits_ft, temps[1]))
        return self._entropies[temps]

    def vrf_weights(self, params: VRFParams) -> np.ndarray:
        """w(x) for every sample (vrf_core.weights); the k-th distance is cached per (neighbours, features,
        k, scale), read from the array those pick (`evaluate.knn_array`)."""
        key = (params.neighbours, params.features, params.k, params.scale)
        if key not in self._distances:
            self._distances[key] = kth_distance(knn_array(self.split, params), params.k, params.scale)
        return weight(self._distances[key], params.a, params.b, params.rule)

    def vrf_preds(self, params: VRFParams) -> np.ndarray:
        return self.mixture_preds(self.vrf_weights(params), params.calibrate)

    def vrf_accuracy(self, params: VRFParams) -> float:
        return float((self.vrf_preds(params) == self.labels).mean())

    def ose_accuracy(self, alpha: float, calibrated: bool = False) -> float:
        return float((self.mixture_preds(alpha, calibrated) == self.labels).mean())


def ose_curve(splits: list[TopMSplit], alphas: list[float], calibrated: bool = False) -> np.ndarray:
    """OSE accuracy (len(alphas), len(splits)) for every alpha."""
    return np.array([[s.ose_accuracy(al, calibrated) for s in splits] for al in alphas])


def vrf_curve(splits: list[TopMSplit], params: VRFParams, a_values: list[float]) -> np.ndarray:
    """VRF accuracy (len(a_values), len(splits)) as a varies, the other settings held."""
    return np.array([[s.vrf_accuracy(replace(params, a=float(a))) for s in splits] for a in a_values])
