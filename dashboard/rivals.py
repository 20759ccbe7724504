"""The rival methods on the pages: the results table's row order, their tuned values, their marks on the
Trade-off chart and the per-sample ceiling drawn as a reference (never ranked as a method).

Every number comes from the bundle: the stored results rows and ceiling, the tuned hyperparameters. A bundle
derived before these methods lacks their rows; each function then draws nothing for them.
"""

from __future__ import annotations

import numpy as np

from dashboard.theme import CEILING_COLOR, logit_ticks, method_color
from vrf_core import evaluate as ev
from vrf_core.evaluate import Hyperparameters

ROW_GROUPS = ((ev.ROW_ZS, ev.ROW_FT), (ev.ROW_WSE, ev.ROW_OSE, ev.ROW_OSE_CAL, ev.ROW_LOGIT, ev.ROW_LOGIT_CAL),
              (ev.ROUTE_PREFIX,), (ev.ROW_DAWIN, ev.ROW_DAWIN_TRANSDUCTIVE), (ev.ROW_VRF_TRAIN, ev.ROW_VRF_ZS),
              (ev.ROW_VRF,))
CURVE_DASH = {ev.ROW_OSE: "dot", ev.ROW_LOGIT: "dash", ev.ROW_LOGIT_CAL: "dashdot"}
POINTS = {ev.ROW_DAWIN: ("diamond", "top left"), ev.ROW_DAWIN_TRANSDUCTIVE: ("diamond-open", "top right"),
          ev.ROW_VRF_TRAIN: ("triangle-up", "bottom right"), ev.ROW_VRF_ZS: ("triangle-down", "bottom left")}
CEILING = "either model right"
HOVER = "ID %{customdata[3]:.1f}%<br>OOD %{customdata[4]:.1f}%"


# ---- the results table ---------------------------------------------------------------------------------
def row_rank(method: str) -> float:
    """The table's groups: the two models, one weight for every sample, routing, the sample-wise rival, VRF's
    ablations, VRF. A method no group names goes just before VRF's ablations."""
    for rank, names in enumerate(ROW_GROUPS):
        if method in names or (ev.ROUTE_PREFIX in names and method.startswith(ev.ROUTE_PREFIX)):
            return rank
    return len(ROW_GROUPS) - 2.5


def ordered(table: dict) -> dict:
    """The rows of a results table in their groups' order, stable within a group (the stored order)."""
    return {m: table[m] for m in sorted(table, key=row_rank)}


def tuned_rows(hps: dict[str, Hyperparameters], fmt) -> dict[str, dict[str, str]]:
    """The rivals' tuned values per tuning mode, formatted by `fmt` (rows absent where no mode has them)."""
    rows = {}
    for label, name in ((f"{ev.ROW_LOGIT} alpha", "logit_alpha"), (f"{ev.ROW_LOGIT_CAL} alpha", "logit_cal_alpha")):
        if any(getattr(h, name) is not None for h in hps.values()):
            rows[label] = {m: fmt(getattr(h, name)) for m, h in hps.items()}
    for key, method in ev.ABLATION_ROWS.items():
        if any(key in h.ablations for h in hps.values()):
            for name in ("a", "b", "k"):
                rows[f"{method} {name}"] = {m: fmt(getattr(h.ablations[key], name)) if key in h.ablations else "—"
                                            for m, h in hps.items()}
    return rows


# ---- the Trade-off chart (`plot`: the page's TradeoffPlot) ------------------------------------------------
def tuned_alphas(hp: Hyperparameters) -> dict[str, float | None]:
    """The logit ensembles' tuned alphas, for the rings on their curves (None in older bundles)."""
    return {ev.ROW_LOGIT: hp.logit_alpha, ev.ROW_LOGIT_CAL: hp.logit_cal_alpha}


def points(plot, rows: dict, tuned_on: str) -> None:
    """DaWin and VRF's two ablations as labelled points of the stored results table."""
    opts = plot.opts
    for method, (symbol, where) in POINTS.items():
        if opts.id_name not in rows.get(method, {}) or opts.y_axis not in rows[method]:
            continue
        i, o = rows[method][opts.id_name]["acc"], rows[method][opts.y_axis]["acc"]
        plot.anchors.append(i)
        plot.points(method, [i], [o], [["info", 0.0, method, 100 * i, 100 * o]],
                    f"<b>{method}</b>, tuned on {tuned_on}<br>" + HOVER, mode="markers+text", text=[method],
                    textposition=where, textfont=dict(size=11, color=method_color(method)),
                    marker=dict(size=13, symbol=symbol, color=method_color(method), line=dict(width=1, color="white")))
        plot.rows.append({"method": method, "hyperparameter": "", "value": np.nan, "ID acc": i, "OOD acc": o})


def _widen(axis: dict, value: float, logit: bool) -> None:
    """Stretch a fixed axis range to show `value`, and the logit ticks with it."""
    if "range" in axis:
        pad = 0.05 if logit else 1.0
        axis["range"] = [min(axis["range"][0], value - pad), max(axis["range"][1], value + pad)]
    if logit:
        ticks = list(axis.get("tickvals", [])) + [value]
        axis.update(logit_ticks(axis.get("range") or [min(ticks), max(ticks)]))


def ceiling_lines(plot, ceiling: dict[str, float], x_axis: dict, y_axis: dict) -> None:
    """The per-sample ceiling as dashed lines at its ID and OOD accuracy, labelled; no marker, no legend
    entry: it is a reference, not a method. Widens a zoomed frame to show them."""
    opts = plot.opts
    if opts.id_name not in ceiling or opts.y_axis not in ceiling:
        return
    i, o = ceiling[opts.id_name], ceiling[opts.y_axis]
    x, y = float(opts.tx(i)), float(opts.tx(o))
    line, font = dict(color=CEILING_COLOR, width=1.5, dash="dash"), dict(size=11, color=CEILING_COLOR)
    plot.fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line=line, name=f"{CEILING} (ID)")
    plot.fig.add_shape(type="line", x0=0, x1=1, xref="paper", y0=y, y1=y, line=line, name=f"{CEILING} (OOD)")
    plot.fig.add_annotation(x=x, y=1, yref="paper", text=f"{CEILING}: ID {100 * i:.1f}%", showarrow=False,
                            xanchor="right", yanchor="top", textangle=-90, font=font)
    plot.fig.add_annotation(x=0, xref="paper", y=y, text=f"{CEILING}: OOD {100 * o:.1f}%", showarrow=False,
                            xanchor="left", yanchor="bottom", font=font)
    _widen(x_axis, x, opts.logit_axes)
    _widen(y_axis, y, opts.logit_axes)
    plot.rows.append({"method": f"ceiling ({CEILING})", "hyperparameter": "", "value": np.nan, "ID acc": i,
                      "OOD acc": o})


def chart_note(rows: dict, ceiling: dict) -> str:
    """What the rivals' marks on the chart are (empty when the bundle has none of them)."""
    parts = []
    if ev.ROW_LOGIT in rows:
        parts.append("the logit ensembles (dashed) mix the two models' logits with one alpha for every sample")
    if any(m in rows for m in POINTS):
        parts.append("DaWin (diamonds: a per-sample weight from the two models' entropies; 'transductive' uses the "
                     "test set's entropy statistics) and VRF's ablations (triangles: distance to the whole ID "
                     "training set, or in zero-shot features) are points at their tuned values")
    if ceiling:
        parts.append(f"the dashed grey lines are the per-sample ceiling, {CEILING}: what a perfect choice between "
                     "the two models per sample would reach, a reference rather than a method")
    return ("Rivals: " + "; ".join(parts) + ".") if parts else ""
