"""VRF accuracy over an (a, b) grid and against k, exactly, without re-weighting every cell.

Along w in [0, 1] each candidate class of a sample scores a line, s_c(w) = w p_ft[c] + (1 - w) p_zs[c]
(paper Eq. 5), and every class outside both top-m lists scores at most the bound line
w r_ft + (1 - w) r_zs (`vrf_core.topm`). The true class y wins where its line lies above every rival
line and above the bound line: an intersection of half-lines, so one interval of w. Once per split and
temperature pair we find, per sample,

- a *sure* interval: the w where s_y beats every rival and the bound by more than SCORE_MARGIN;
  there the float32 mixture (rounding under 6 * 2^-24 on two scores) predicts y, from the tables;
- a *may* interval: the w where no rival beats s_y (or, when y is no candidate, the bound) by more
  than SCORE_MARGIN; outside it a rival certainly wins.

A cell's correct count is then the count of samples whose w lands in their sure interval, plus those in
the thin band between the two intervals, decided by `TopMSplit.mixture_preds` on those rows only. For
the sigmoid and linear rules, w(d; a, b) >= c exactly when a >= d + b tau(c) (tau = logit, or 2c - 1),
so for each b the intervals become intervals of a, counted against the whole a grid by one
`searchsorted` per end; the test carries WEIGHT_MARGIN for w's float32 rounding and a float64
tolerance on the a values. Samples right (or wrong) over the whole of [0, 1] are counted once. The
result equals `TopMSplit.vrf_accuracy` and the full mixture on every cell (tests/test_sensitivity.py).

Usage: `s = Sensitivity(topm_split)`, then `s.grid_accuracy(params, a_values, b_values)` (len(b), len(a))
and `s.k_accuracy(params, k_values)` (len(k),); params gives the held k, rule, scale and calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vrf_core.evaluate import SplitData, VRFParams, knn_array
from vrf_core.topm import TABLE_ARRAYS, TopMSplit, TopMTable
from vrf_core.weights import kth_distance, weight

SCORE_MARGIN = 1e-6  # above float32's rounding of two mixture scores (6 * 2^-24 = 3.6e-7)
WEIGHT_MARGIN = 2e-7  # above twice |float32(w) - w| (2^-25 = 3e-8)
A_TOLERANCE = 1e-13  # relative float64 slack of the a-space thresholds
NEVER_BINDS = 4.0  # a lead no line can lose (scores lie in [0, 1])


@dataclass
class WinIntervals:
    """Per sample of a split at one temperature pair: `always` (N,) bool, right at every w; `active`
    (n,) the rows whose outcome depends on w (the others are wrong at every w); for them, the
    open intervals (sure_lo, sure_hi) where y certainly wins and (may_lo, may_hi) outside which
    it certainly loses, (n,) float64 each."""

    always: np.ndarray
    active: np.ndarray
    sure_lo: np.ndarray
    sure_hi: np.ndarray
    may_lo: np.ndarray
    may_hi: np.ndarray


def _above(c0: np.ndarray, c1: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The open interval of w where c0 + c1 w > t on every row of (R, N) lines: (lo, hi), each (N,);
    empty where lo >= hi."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (t - c0) / c1
    lo = np.where(c1 > 0, x, -np.inf).max(axis=0)
    hi = np.where(c1 < 0, x, np.inf).min(axis=0)
    lo[((c1 == 0) & (c0 <= t)).any(axis=0)] = np.inf
    return lo, hi


def win_intervals(table: TopMTable | None, labels: np.ndarray) -> WinIntervals:
    """The sure and may intervals of every sample from its top-m table (None: no table, every row
    active and decided by the exact path)."""
    n = len(labels)
    if table is None:
        inf = np.full(n, np.inf)
        return WinIntervals(np.zeros(n, bool), np.arange(n), inf, -inf, -inf, inf)
    is_y = table.cand == labels[None, :]
    has_y, cols = is_y.any(axis=0), np.arange(n)
    j = is_y.argmax(axis=0)
    # The reference line, at w = 0 and w = 1: y's own, or (y outside the tables) the bound on every class
    # outside them. Then each rival's lead below it at both ends; y's own entries never bind (scores are in [0, 1]).
    r_zs, r_ft = table.r_zs.astype(np.float64), table.r_ft.astype(np.float64)
    ref0 = np.where(has_y, table.p_zs[j, cols], r_zs)
    ref1 = np.where(has_y, table.p_ft[j, cols], r_ft)
    lead0 = np.where(is_y, NEVER_BINDS, ref0 - table.p_zs)
    lead1 = np.where(is_y, NEVER_BINDS, ref1 - table.p_ft)
    bound0, bound1 = ref0 - r_zs, ref1 - r_ft
    # Lines above a level at both ends are above it all along: right at every w. One rival ahead at both
    # ends is ahead all along: wrong at every w. Only the rest needs its intervals.
    always = has_y & (lead0.min(axis=0) > SCORE_MARGIN) & (lead1.min(axis=0) > SCORE_MARGIN) & \
        (bound0 > SCORE_MARGIN) & (bound1 > SCORE_MARGIN)
    rest = np.flatnonzero(~always & ~((lead0 < -SCORE_MARGIN) & (lead1 < -SCORE_MARGIN)).any(axis=0))
    c0, c1 = lead0[:, rest], lead1[:, rest] - lead0[:, rest]
    may_lo, may_hi = _above(c0, c1, -SCORE_MARGIN)
    sure_lo, sure_hi = _above(c0, c1, SCORE_MARGIN)
    bound_lo, bound_hi = _above(bound0[None, rest], (bound1 - bound0)[None, rest], SCORE_MARGIN)
    sure_lo, sure_hi = np.maximum(sure_lo, bound_lo), np.minimum(sure_hi, bound_hi)
    sure_lo[~has_y[rest]] = np.inf
    keep = ~((may_lo >= may_hi) | (may_hi < 0) | (may_lo > 1))
    return WinIntervals(always, rest[keep], sure_lo[keep], sure_hi[keep], may_lo[keep], may_hi[keep])


def _tau(c: np.ndarray, rule: str) -> np.ndarray:
    """a-space offsets: w(d; a, b) >= c iff a >= d + b tau(c) (sigmoid: logit c; linear: 2c - 1);
    -inf where every w qualifies (c <= 0), +inf where none does (c >= 1)."""
    inside = (c > 0) & (c < 1)
    cc = np.where(inside, c, 0.5)
    t = np.log(cc) - np.log1p(-cc) if rule == "sigmoid" else 2.0 * cc - 1.0
    return np.where(inside, t, np.where(c <= 0, -np.inf, np.inf))


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with starts[i] <= j < stops[i]: (row positions, j), each flat."""
    lens = np.maximum(stops - starts, 0)
    pos = np.repeat(np.arange(len(starts)), lens)
    return pos, np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)


def _grid_hits(d: np.ndarray, grid: np.ndarray, b: float, offsets: tuple[np.ndarray, ...]):
    """For one b and an ascending a grid (G,): the count of rows surely right at each a (G,), and the
    (row position, grid index) pairs in the uncertain band, flat. offsets: `Sensitivity._a_offsets`."""
    tol = A_TOLERANCE * (np.abs(grid).max() + (np.abs(d).max() if len(d) else 0.0) + 40 * b)
    sure_lo, sure_hi, may_lo, may_hi = (d + b * t for t in offsets)
    m0, m1 = np.searchsorted(grid, may_lo - tol, "left"), np.searchsorted(grid, may_hi + tol, "right")
    s0 = np.maximum(np.searchsorted(grid, sure_lo + tol, "left"), m0)
    s1 = np.minimum(np.searchsorted(grid, sure_hi - tol, "right"), m1)
    empty = s1 <= s0  # then the whole may range is uncertain
    s0, s1 = np.where(empty, m1, s0), np.where(empty, m1, s1)
    g = len(grid) + 1
    sure = np.cumsum(np.bincount(s0, minlength=g) - np.bincount(s1, minlength=g))[:-1]
    pos, j = _ranges(np.concatenate([m0, s1]), np.concatenate([s0, m1]))  # below and above the sure range
    return sure, pos % max(len(d), 1), j


class _Rows:
    """Rows of a (possibly memory-mapped or projected) logits array, read only where indexed."""

    def __init__(self, logits, rows: np.ndarray):
        self.logits, self.rows = logits, rows
        self.shape = (len(rows), logits.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self.logits[self.rows[idx]], dtype=np.float32)


class Sensitivity:
    """One split's VRF accuracy over many (a, b) or k at once, equal to `TopMSplit.vrf_accuracy` on each."""

    def __init__(self, split: TopMSplit):
        self.split = split
        self._intervals: dict[bool, WinIntervals] = {}
        self._offsets: dict[tuple[bool, str], tuple[np.ndarray, ...]] = {}
        self._active_sqdist: dict[tuple, np.ndarray] = {}
        self.exact_rows = 0  # (row, cell) pairs decided by the exact path so far (for the benchmark)

    def _table(self, calibrated: bool) -> TopMTable | None:
        return self.split.tables().get(self.split.temperatures if calibrated else (1.0, 1.0))

    def intervals(self, calibrated: bool) -> WinIntervals:
        if calibrated not in self._intervals:
            self._intervals[calibrated] = win_intervals(self._table(calibrated), self.split.labels)
        return self._intervals[calibrated]

    def _a_offsets(self, calibrated: bool, rule: str) -> tuple[np.ndarray, ...]:
        """tau of the shrunk sure and the widened may interval ends: (sure lo, sure hi, may lo, may hi)."""
        key = (calibrated, rule)
        if key not in self._offsets:
            iv = self.intervals(calibrated)
            self._offsets[key] = (_tau(iv.sure_lo + WEIGHT_MARGIN, rule), _tau(iv.sure_hi - WEIGHT_MARGIN, rule),
                                  _tau(iv.may_lo - WEIGHT_MARGIN, rule), _tau(iv.may_hi + WEIGHT_MARGIN, rule))
        return self._offsets[key]

    def _exact_correct(self, rows: np.ndarray, w: np.ndarray, calibrated: bool) -> np.ndarray:
        """Whether `TopMSplit.mixture_preds` gets y right on `rows` (repeats allowed) at weights w."""
        s, data = self.split, self.split.split
        self.exact_rows += len(rows)
        sub = SplitData(data.name, data.role, s.labels[rows], _Rows(data.logits_zs, rows),
                        _Rows(data.logits_ft, rows), np.empty((len(rows), 0), np.float32))
        table = self._table(calibrated)
        tables = None if table is None else {
            (s.temperatures if calibrated else (1.0, 1.0)): TopMTable(
                *(getattr(table, n)[..., rows] for n in TABLE_ARRAYS), arg_ft=table.arg_ft[rows],
                arg_zs=table.arg_zs[rows])}
        live = TopMSplit.from_split_data(sub, s.t_zs, s.t_ft, s.m, tables)
        return live.mixture_preds(np.asarray(w, dtype=np.float32), calibrated) == sub.labels

    def _counts_at_weights(self, w: np.ndarray, calibrated: bool) -> np.ndarray:
        """Correct counts (G,) at weights w (G, n) of the active rows, each as `vrf_weights` gives it."""
        iv = self.intervals(calibrated)
        w = np.asarray(w, dtype=np.float32)
        sure = (w > iv.sure_lo) & (w < iv.sure_hi)
        cell, pos = np.nonzero((w > iv.may_lo) & (w < iv.may_hi) & ~sure)
        counts = sure.sum(axis=1) + int(iv.always.sum())
        if len(pos):
            right = self._exact_correct(iv.active[pos], w[cell, pos], calibrated)
            counts += np.bincount(cell, weights=right, minlength=len(w)).astype(np.int64)
        return counts

    def _distances(self, params: VRFParams) -> np.ndarray:
        """The active rows' k-th distances, as `TopMSplit.vrf_weights` finds them (element by element)."""
        key = (params.calibrate, params.neighbours, params.features)
        if key not in self._active_sqdist:  # gathered once: a column of the whole (N, K) array is strided
            rows = self.intervals(params.calibrate).active
            self._active_sqdist[key] = np.asarray(knn_array(self.split.split, params)[rows])
        return kth_distance(self._active_sqdist[key], params.k, params.scale)

    def grid_accuracy(self, params: VRFParams, a_values, b_values) -> np.ndarray:
        """VRF accuracy (len(b), len(a)) at every (a, b), the rest of `params` held."""
        a = np.asarray(a_values, dtype=np.float64)
        b = np.asarray(b_values, dtype=np.float64)
        n, d = len(self.split), self._distances(params)
        if params.rule == "binary":  # w in {0, 1}: b plays no part
            w = np.stack([weight(d, float(x), 1.0, "binary") for x in a])
            return np.tile(self._counts_at_weights(w, params.calibrate) / n, (len(b), 1))
        order = np.argsort(a)
        iv = self.intervals(params.calibrate)
        offsets = self._a_offsets(params.calibrate, params.rule)
        counts = np.zeros((len(b), len(a)), np.int64)
        for i, bb in enumerate(b):
            if bb <= 0:
                raise ValueError(f"b must be positive, got {bb}")
            sure, pos, j = _grid_hits(d, a[order], float(bb), offsets)
            counts[i, order] = sure
            if len(pos):
                j = order[j]
                w = weight(d[pos], a[j], float(bb), params.rule)  # element by element as `vrf_weights`
                counts[i] += np.bincount(j, weights=self._exact_correct(iv.active[pos], w, params.calibrate),
                                         minlength=len(a)).astype(np.int64)
        return (counts + int(iv.always.sum())) / n

    def k_accuracy(self, params: VRFParams, k_values) -> np.ndarray:
        """VRF accuracy (len(k),) at every k, the rest of `params` held."""
        w = [weight(self._distances(replace(params, k=int(k))), params.a, params.b, params.rule) for k in k_values]
        return self._counts_at_weights(np.stack(w), params.calibrate) / len(self.split)
