"""Selections that land on the edge of their search range, so that a reader knows to widen it.

Flagged (one entry each, {"name", "value", "low", "high", "at": "low" | "high"}):
- T_zs, T_ft at either end of the temperature bracket (`calibration.T_MIN`, `T_MAX`; the
  paper's [0.1, 10]), unless calibration is off;
- VRF's and each ablation's a at the first or last value of its grid (`tuning.vrf_grid`), and
  b likewise (not for the binary rule, which does not search b);
- k at the largest candidate, or at the smallest when that is above 1 (k = 1 is the smallest k
  there is: nothing to widen), when more than one k was searched.
Not flagged: the OSE, WSE and logit-ensemble alphas at 0 or 1 (the range is the whole
interpolation: an end is a legitimate answer, "one model alone"), routing thresholds (set by
the kept fraction, not searched).
"""

from __future__ import annotations

import math

from vrf_core.calibration import T_MAX, T_MIN
from vrf_core.evaluate import ABLATION_ROWS, ROW_VRF, Hyperparameters, SplitData, VRFParams
from vrf_core.tuning import TuningSpec, vrf_grid

_HINTS = {
    "T": "the temperature bracket of vrf_core.calibration ends there; a model this far from calibrated, or a "
         "tuning split this small or this easy, deserves a look",
    "a": "the a grid follows the tuning split's k-th distances (vrf_core.tuning.vrf_grid); widen it",
    "b": "the b grid is a fixed set of fractions of the distances' spread (vrf_core.tuning.vrf_grid); widen it",
    "k": "add k values beyond it (the candidates: vrf_core.tuning.default_k_values, up to ensemble.k_max)",
}


def _edge(name: str, value: float, low: float, high: float, rel: float = 1e-9) -> dict | None:
    for at, end in (("low", low), ("high", high)):
        if math.isclose(value, end, rel_tol=rel, abs_tol=rel * 1e-3):
            return {"name": name, "value": float(value), "low": float(low), "high": float(high), "at": at}
    return None


def _vrf_edges(tune: SplitData, spec: TuningSpec, label: str, p: VRFParams) -> list[dict | None]:
    a_grid, b_grid = vrf_grid(tune, p.k, p.scale, p.neighbours, p.features)
    out = [_edge(f"{label} a", p.a, a_grid[0], a_grid[-1])]
    if p.rule != "binary":
        out.append(_edge(f"{label} b", p.b, b_grid[0], b_grid[-1]))
    ks = sorted(spec.k_values)
    if len(ks) > 1:
        e = _edge(f"{label} k", p.k, ks[0], ks[-1])
        out.append(e if e is None or e["at"] == "high" or ks[0] > 1 else None)
    return out


def tuning_edges(tune: SplitData, spec: TuningSpec, hp: Hyperparameters) -> list[dict]:
    """Every selection of `hp` (chosen on `tune` with `spec`) at an edge of its search range."""
    out: list[dict | None] = []
    if spec.calibration != "none":  # confidence fits return the bracket's end; NLL fits converge onto it
        out += [_edge("T_zs", hp.t_zs, T_MIN, T_MAX, 1e-6), _edge("T_ft", hp.t_ft, T_MIN, T_MAX, 1e-6)]
    out += _vrf_edges(tune, spec, ROW_VRF, hp.vrf)
    for key, params in hp.ablations.items():
        out += _vrf_edges(tune, spec, ABLATION_ROWS[key], params)
    return [e for e in out if e is not None]


def edge_sentence(edge: dict) -> str:
    """One line for a reader: 'VRF a = 1.234 is the largest value searched (0.1–1.234): widen ...'."""
    kind = edge["name"].rsplit(" ", 1)[-1]
    hint = _HINTS["T" if kind in ("T_zs", "T_ft") else kind]
    which = "largest" if edge["at"] == "high" else "smallest"
    return (f"{edge['name']} = {edge['value']:.4g} is the {which} value searched "
            f"({edge['low']:.4g}–{edge['high']:.4g}): {hint}")
