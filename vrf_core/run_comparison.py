"""Two or more runs side by side: which evaluation splits they share, their results tables with
differences, and the samples one run gets right and another wrong.

Runs are compared only where they saw the same samples: a split is shared when every run has it
under the same name and role, with the same class list and the same samples (the stored `refs`)
carrying the same labels. The sample order may differ: each run's rows are aligned to the first
run's order by their refs. Differences are "run minus the first run" (the reference), in the
table's units (accuracy as a fraction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vrf_core.evaluate import OOD_AVG


@dataclass(frozen=True)
class RunSplit:
    """One run's evaluation split as far as the comparison needs it. refs, labels: (N,)."""

    name: str
    role: str
    refs: np.ndarray
    labels: np.ndarray
    classnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplitMatch:
    """Whether a split is shared by every run; `rows[r]` maps the first run's sample order to run r's rows
    (run r's row rows[r][j] is the first run's row j), `reason` says why a split is not shared."""

    name: str
    shared: bool
    reason: str = ""
    reordered: bool = False
    rows: tuple[np.ndarray, ...] = field(default=(), repr=False)


def _alignment(first: RunSplit, other: RunSplit) -> tuple[np.ndarray | None, str]:
    """Rows of `other` in the order of `first`'s samples, or None with the reason they differ."""
    if len(first.refs) != len(other.refs):
        return None, f"{len(first.refs):,} samples against {len(other.refs):,}"
    a, b = np.asarray(first.refs).astype(str), np.asarray(other.refs).astype(str)
    if np.array_equal(a, b):
        return np.arange(len(a)), ""
    if len(np.unique(a)) != len(a) or len(np.unique(b)) != len(b):
        return None, "the same number of samples but a different order, and repeated refs prevent aligning them"
    order_a, order_b = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    differ = int(np.count_nonzero(a[order_a] != b[order_b]))
    if differ:
        missing = int(np.count_nonzero(~np.isin(a, b)))
        return None, f"different samples: {missing:,} of {len(a):,} refs are not in both"
    rows = np.empty(len(a), dtype=np.int64)
    rows[order_a] = order_b  # a[order_a[j]] == b[order_b[j]]
    return rows, ""


def match_splits(runs: list[dict[str, RunSplit]], names: list[str]) -> list[SplitMatch]:
    """Every split name of any run, in the first run's order (then the others'), shared or not (with why).
    runs: per run, split name -> RunSplit; names: the runs' labels, for the reasons."""
    order = list(dict.fromkeys(n for run in runs for n in run))
    out = []
    for split in order:
        absent = [names[r] for r, run in enumerate(runs) if split not in run]
        if absent:
            out.append(SplitMatch(split, False, f"not in {', '.join(absent)}"))
            continue
        out.append(_match_one(split, [run[split] for run in runs], names))
    return out


def _match_one(split: str, parts: list[RunSplit], names: list[str]) -> SplitMatch:
    first, rows = parts[0], [np.arange(len(parts[0].refs))]
    for name, other in zip(names[1:], parts[1:]):
        if other.role != first.role:
            return SplitMatch(split, False, f"role {first.role} in {names[0]}, {other.role} in {name}")
        if tuple(other.classnames) != tuple(first.classnames):
            return SplitMatch(split, False, f"different class lists in {names[0]} and {name}")
        aligned, why = _alignment(first, other)
        if aligned is None:
            return SplitMatch(split, False, f"{names[0]} and {name}: {why}")
        wrong = int(np.count_nonzero(np.asarray(other.labels)[aligned] != np.asarray(first.labels)))
        if wrong:
            return SplitMatch(split, False, f"{names[0]} and {name}: the same samples but {wrong:,} labels differ")
        rows.append(aligned)
    reordered = any(not np.array_equal(r, rows[0]) for r in rows[1:])
    return SplitMatch(split, True, "", reordered, tuple(rows))


# ---- results tables ----------------------------------------------------------------------------

def ood_average(per_split: dict[str, float | np.ndarray], shifts: list[str]) -> float | np.ndarray:
    """Unweighted mean over `shifts` (accuracies, or curves of equal length); NaN without shifts."""
    if not shifts:
        return float("nan")
    return np.mean([np.asarray(per_split[s], dtype=np.float64) for s in shifts], axis=0)


@dataclass
class ResultsComparison:
    """acc[r, i, j]: run r's accuracy of methods[i] on columns[j] (the shared splits, then OOD_AVG over the
    shared shifts when there are any); only_in: method -> the runs that have it (methods not in all)."""

    methods: list[str]
    columns: list[str]
    acc: np.ndarray
    only_in: dict[str, list[int]]

    def difference(self, run: int, reference: int = 0) -> np.ndarray:
        """(M, S) run minus reference."""
        return self.acc[run] - self.acc[reference]


def compare_results(tables: list[dict], splits: list[str], shifts: list[str]) -> ResultsComparison:
    """tables: per run, the stored results rows ({method: {split: {"acc", ...}}}); splits: the shared
    evaluation splits in column order; shifts: those of role 'ood' (their mean is the OOD_AVG column, so every
    run's average covers the same shifts)."""
    methods = [m for m in tables[0] if all(m in t for t in tables[1:])]
    every = list(dict.fromkeys(m for t in tables for m in t))
    only_in = {m: [r for r, t in enumerate(tables) if m in t] for m in every if m not in methods}
    columns = list(splits) + ([OOD_AVG] if shifts else [])
    acc = np.full((len(tables), len(methods), len(columns)), np.nan)
    for r, table in enumerate(tables):
        for i, method in enumerate(methods):
            row = {s: cell["acc"] for s, cell in table[method].items() if s in splits}
            for j, split in enumerate(splits):
                acc[r, i, j] = row.get(split, np.nan)
            if shifts and all(s in row for s in shifts):
                acc[r, i, -1] = ood_average(row, shifts)
    return ResultsComparison(methods, columns, acc, only_in)


# ---- samples one run gets right and the other wrong ---------------------------------------------

@dataclass
class Disagreements:
    """The samples of one shared split where exactly one of runs A and B is right, in the first run's sample
    order. order: (n,) their positions in that order (`SplitMatch.rows[r][order]`: rows in run r); rows_a,
    rows_b: their rows in run A's and run B's split; labels, pred_a, pred_b: (n,)."""

    split: str
    order: np.ndarray
    rows_a: np.ndarray
    rows_b: np.ndarray
    labels: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray

    @property
    def a_right(self) -> np.ndarray:
        """(n,) True where A is right (and B wrong), False where B is right (and A wrong)."""
        return self.pred_a == self.labels

    def counts(self) -> tuple[int, int]:
        """(A right and B wrong, B right and A wrong)."""
        n_a = int(np.count_nonzero(self.a_right))
        return n_a, len(self.labels) - n_a


def disagreements(match: SplitMatch, a: int, b: int, labels_a: np.ndarray, preds_a: np.ndarray,
                  preds_b: np.ndarray) -> Disagreements:
    """Samples of a shared split that run a gets right and run b wrong, or the reverse, in the first run's
    sample order. labels_a, preds_a: (N,) in run a's row order; preds_b: (N,) in run b's."""
    if not match.shared:
        raise ValueError(f"split {match.name} is not shared: {match.reason}")
    rows_a, rows_b = match.rows[a], match.rows[b]
    y, pa, pb = np.asarray(labels_a)[rows_a], np.asarray(preds_a)[rows_a], np.asarray(preds_b)[rows_b]
    keep = np.flatnonzero((pa == y) != (pb == y))
    return Disagreements(match.name, keep, rows_a[keep], rows_b[keep], y[keep], pa[keep], pb[keep])
