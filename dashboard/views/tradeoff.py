"""Trade-off: ID vs OOD accuracy of every method; VRF as a curve over a (or b); sensitivity to a, b, k
and the weight rule. Clicking a VRF point adopts its hyperparameters."""

from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, sidebar
from dashboard.export import show_figure, show_table
from dashboard.theme import OOD_AVG_COLOR, method_color, style, vline
from vrf_core.analysis import sweep
from vrf_core.evaluate import VRFParams
from vrf_core.live import baseline_curves as live_baseline_curves
from vrf_core.weights import RULES

ctx = sidebar.context()
bundle, live, params, sel = ctx.bundle, ctx.live, ctx.params, ctx.sel
OOD_AVG = "OOD avg"
DEFAULTS = VRFParams()
st.title("ID–OOD trade-off")
if not bundle.split_names("id_test") or not bundle.split_names("ood"):
    st.warning("This bundle has no ID test split or no shifted test set, so there is no trade-off to draw.")
    st.stop()
id_name, shifts = bundle.split_names("id_test")[0], bundle.split_names("ood")


# ---- curves -------------------------------------------------------------------------------------
def baseline_curves() -> dict[str, dict[str, np.ndarray]]:
    """method -> split -> accuracy at each alpha of the bundle (OSE, calibrated OSE, WSE): stored by
    precompute (manifest `curves`), else computed from the live tables."""
    def make() -> dict[str, dict[str, np.ndarray]]:
        stored = (bundle.manifest.get("curves") or {}).get(ctx.mode)
        if stored is not None:
            return {m: {s: np.asarray(c) for s, c in by_split.items()} for m, by_split in stored.items()}
        names = data.test_splits(bundle)
        return live_baseline_curves({s: data.live_split(bundle, ctx.mode, s) for s in names}, bundle.ose_alphas,
                                    {s: data.wse_preds(bundle, s) if bundle.wse_alphas else None for s in names})
    return data.memoize(bundle, ("baseline_curves", ctx.mode), make)


def sweep_grid(field: str, scale: str) -> tuple:
    if field == "k":
        return tuple(np.unique(np.linspace(1, bundle.k_max, min(bundle.k_max, 20)).round().astype(int)).tolist())
    lo, hi = sidebar.control_ranges(bundle, scale, sel.vrf)[field]
    return tuple((np.geomspace(max(lo, 0.002), hi, 25) if field == "b" else np.linspace(lo, hi, 25)).tolist())


def vrf_sweep(p: VRFParams, field: str) -> tuple[list, dict[str, np.ndarray]]:
    """VRF accuracy per test split as `field` moves over its grid, the rest held at `p`. The cache key
    leaves out that field (and b under the binary rule), so moving the control itself costs nothing;
    the current value's point comes from the live view."""
    neutral = replace(p, **{field: getattr(DEFAULTS, field)})
    if p.rule == "binary":
        neutral = replace(neutral, b=DEFAULTS.b)
    grid = sweep_grid(field, p.scale)
    def make() -> dict[str, np.ndarray]:
        out = {}
        for split in data.test_splits(bundle):
            ls = data.live_split(bundle, ctx.mode, split)
            out[split] = np.array([ls.vrf_accuracy(q) for q in sweep(neutral, field, grid)])
        return out
    accs = data.memoize(bundle, ("vrf_sweep", ctx.mode, neutral, field, grid), make, keep=64)
    now = data.live(bundle, ctx.mode, p)
    current = getattr(p, field)
    j = int(np.searchsorted(grid, current))
    same = j < len(grid) and grid[j] == current
    values = list(grid[:j]) + [current] + list(grid[j + same:])
    return values, {s: np.insert(np.delete(a, j) if same else a, j, now.views[s].accuracy("VRF"))
                    for s, a in accs.items()}


def y_of(curves: dict[str, np.ndarray], y_axis: str) -> np.ndarray:
    return np.mean([curves[s] for s in shifts], axis=0) if y_axis == OOD_AVG else curves[y_axis]


# ---- controls ------------------------------------------------------------------------------------
c1, c2, _ = st.columns([2, 1.2, 2], vertical_alignment="bottom")
y_axis = c1.selectbox("OOD accuracy on the vertical axis", [OOD_AVG] + shifts, key="to-y", persist_state="session",
                      format_func=lambda s: f"average over {len(shifts)} shifts" if s == OOD_AVG else s)
over = c2.segmented_control("VRF curve over", ["a", "b"], default="a", required=True, key="to-over",
                            persist_state="session", help="The other hyperparameters stay at the sidebar values.")
c3, c4, c5 = st.columns(3)
logit_axes = c3.toggle("Logit-scaled axes", key="to-logit", persist_state="session",
                       help="The WiSE-FT convention: accuracies on a logit scale, so the frontier is closer to a line.")
show_selective = c4.toggle("Selective routing", value=True, key="to-sel", persist_state="session",
                           help="Baselines that send each sample wholly to one model by an OOD score.")
table = data.static_table(bundle, ctx.mode)
far_apart = table["fine-tuned"][id_name]["acc"] - table["zero-shot"][id_name]["acc"] > 0.15
focus = c5.toggle("Zoom on the ensembles", value=far_apart, key="to-focus", persist_state="session",
                  help="Frame the fine-tuned end, where the ensembles differ; double-click the plot to see it all.")
y_label = f"OOD accuracy, {'average of ' + str(len(shifts)) + ' shifts' if y_axis == OOD_AVG else y_axis} (%)"


def tx(acc):
    acc = np.clip(np.asarray(acc, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(acc / (1 - acc)) if logit_axes else 100 * acc


def point_trace(name, ids, oods, custom, hover, **kw) -> go.Scatter:
    return go.Scatter(x=tx(ids), y=tx(oods), name=name, customdata=custom, hovertemplate=hover + "<extra></extra>",
                      **kw)


HOVER = "ID %{customdata[3]:.1f}%<br>OOD %{customdata[4]:.1f}%"
fig = go.Figure()
rows = []
anchors: list[float] = []  # ID accuracies the zoomed frame keeps in view


def add_curve(method, param, values, accs, tuned_value, kind="info", **line):
    ids, oods = accs[id_name], y_of(accs, y_axis)
    custom = [[kind, float(v), f"{method} {param} = {v:.3g}", 100 * i, 100 * o] for v, i, o in zip(values, ids, oods)]
    fig.add_trace(point_trace(method, ids, oods, custom, f"<b>{method}</b> {param} = %{{customdata[1]:.3g}}<br>"
                              + HOVER, mode="lines+markers", line=dict(color=method_color(method), **line),
                              marker=dict(size=6)))
    rows.extend({"method": method, "hyperparameter": param, "value": v, "ID acc": i, "OOD acc": o}
                for v, i, o in zip(values, ids, oods))
    if tuned_value is not None and tuned_value in list(values):
        j = list(values).index(tuned_value)
        anchors.append(ids[j])
        fig.add_trace(point_trace(f"{method} (tuned)", [ids[j]], [oods[j]], [custom[j]],
                                  f"<b>{method}</b> tuned on {sel.tuned_on}: {param} = {tuned_value:.3g}<br>" + HOVER,
                                  mode="markers", showlegend=False,
                                  marker=dict(size=15, color="rgba(0,0,0,0)",
                                              line=dict(width=2.5, color=method_color(method)))))


for method, accs in baseline_curves().items():
    alphas = bundle.wse_alphas if method == "WSE" else bundle.ose_alphas
    tuned_alpha = {"OSE": sel.ose_alpha, "OSE (calibrated)": sel.ose_cal_alpha, "WSE": sel.wse_alpha}[method]
    add_curve(method, "α", alphas, accs, tuned_alpha, dash="dot" if method == "OSE" else None)

values, vrf_accs = vrf_sweep(params, over)
add_curve("VRF", over, values, vrf_accs, None, kind=over, width=3)

for method in ("zero-shot", "fine-tuned") + (tuple(m for m in table if m.startswith("select:")) if show_selective
                                              else ()):
    i = table[method][id_name]["acc"]
    o = table[method][OOD_AVG]["acc"] if y_axis == OOD_AVG else table[method][y_axis]["acc"]
    base = method in ("zero-shot", "fine-tuned")
    if method != "zero-shot":
        anchors.append(i)
    fig.add_trace(point_trace(method, [i], [o], [["info", 0.0, method, 100 * i, 100 * o]],
                              f"<b>{method}</b><br>" + HOVER, mode="markers+text" if base else "markers",
                              text=[method] if base else None, textposition="bottom center",
                              marker=dict(size=14 if base else 10, color=method_color(method),
                                          symbol="circle" if base else "x", line=dict(width=1, color="white"))))
    rows.append({"method": method, "hyperparameter": "", "value": np.nan, "ID acc": i, "OOD acc": o})

cur_id = live.views[id_name].accuracy("VRF")
cur_ood = live.ood_average("VRF") if y_axis == OOD_AVG else live.views[y_axis].accuracy("VRF")
if params != sel.vrf:
    t_id = data.live(bundle, ctx.mode, sel.vrf)
    ti = t_id.views[id_name].accuracy("VRF")
    to = t_id.ood_average("VRF") if y_axis == OOD_AVG else t_id.views[y_axis].accuracy("VRF")
    fig.add_trace(point_trace("VRF tuned", [ti], [to], [["tuned", 0.0, "VRF tuned", 100 * ti, 100 * to]],
                              f"<b>VRF tuned on {sel.tuned_on}</b> (click to restore)<br>" + HOVER, mode="markers",
                              marker=dict(size=14, symbol="diamond-open", color=method_color("VRF"),
                                          line=dict(width=2.5))))
fig.add_trace(point_trace("VRF (current)", [cur_id], [cur_ood], [["info", 0.0, "VRF current", 100 * cur_id,
                                                                   100 * cur_ood]],
                          f"<b>VRF, current controls</b><br>a = {params.a:.3f}, b = {params.b:.3f}, k = {params.k}, "
                          f"{params.rule}<br>" + HOVER, mode="markers",
                          marker=dict(size=22, symbol="star", color=method_color("VRF"),
                                      line=dict(width=1.5, color="black"))))
anchors.append(cur_id)
xs = np.concatenate([np.asarray(t.x, dtype=float) for t in fig.data])
ys = np.concatenate([np.asarray(t.y, dtype=float) for t in fig.data])
x_axis, y_axis_ = dict(showgrid=True, zeroline=False), dict(showgrid=True, zeroline=False)
if focus:
    ax = tx(anchors)
    pad = 0.05 if logit_axes else 1.0
    lo = ax.min() - 0.25 * (ax.max() - ax.min()) - pad
    inside = ys[xs >= lo]
    x_axis["range"] = [lo, ax.max() + pad]
    y_axis_["range"] = [inside.min() - pad, inside.max() + pad]
if logit_axes:
    for axis, values in ((x_axis, xs), (y_axis_, ys)):
        shown = axis.get("range", [values.min(), values.max()])
        ticks = [t for t in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96,
                             0.97, 0.98, 0.99, 0.995) if shown[0] - 0.3 <= np.log(t / (1 - t)) <= shown[1] + 0.3]
        axis.update(tickvals=[np.log(t / (1 - t)) for t in ticks], ticktext=[f"{100 * t:g}" for t in ticks])
style(fig, height=560, xaxis=dict(title=f"ID accuracy, {id_name} (%)", **x_axis),
      yaxis=dict(title=y_label, **y_axis_), clickmode="event+select", dragmode="zoom")


def adopt() -> None:
    """A click on a VRF point adopts its a (or b); on the tuned marker, every tuned value."""
    points = st.session_state["to-chart"]["selection"]["points"]
    if not points:
        return
    kind, value, label = points[0]["customdata"][:3]
    if kind in ("a", "b"):
        sidebar.set_controls(ctx, **{kind: float(value)})
        st.session_state["to-msg"] = f"Adopted {label}."
    elif kind == "tuned":
        sidebar.set_controls(ctx, **sidebar.tuned_values(sel))
        st.session_state["to-msg"] = f"Restored the values tuned on {sel.tuned_on}."
    else:
        st.session_state["to-msg"] = (f"{label}: ID {points[0]['customdata'][3]:.1f}%, OOD "
                                      f"{points[0]['customdata'][4]:.1f}%. Only VRF points change the controls.")


st.caption("Each curve sweeps one hyperparameter; rings mark the values tuned on "
           f"**{sel.tuned_on}**, the star is VRF with the sidebar controls. **Click a VRF point to adopt its "
           f"{over}.** Up and to the right is better; drag to zoom, double-click to zoom out.")
show_figure(fig, "to-chart", f"{bundle.name}-tradeoff", on_select=adopt, selection_mode="points")
if msg := st.session_state.pop("to-msg", None):
    st.toast(msg, icon=":material/touch_app:")
with st.expander("Curve values"):
    df = pd.DataFrame(rows)
    df[["ID acc", "OOD acc"]] *= 100
    show_table(df.round(3), "to-table", f"{bundle.name}-tradeoff-curves", hide_index=True, width="stretch")

# ---- baselines at any alpha ------------------------------------------------------------------------
st.subheader("Baselines at a chosen alpha")
tests = data.test_splits(bundle)
wse_ok = bool(bundle.wse_alphas) and all(data.wse_preds(bundle, s) is not None for s in tests)
c1, c2, c3 = st.columns([2, 1, 2], vertical_alignment="bottom")
ose_alpha = c1.slider("OSE alpha (weight on the fine-tuned model)", 0.0, 1.0, float(sel.ose_alpha), 0.01,
                      key="to-ose-alpha", help="Any value, computed exactly from the live tables.")
ose_cal = c2.toggle("calibrated OSE", key="to-ose-cal", help=f"Temperatures fitted on {sel.tuned_on}.")
if wse_ok:
    wse_alpha = c3.select_slider("WSE alpha", options=bundle.wse_alphas, key="to-wse-alpha",
                                 value=sel.wse_alpha if sel.wse_alpha in bundle.wse_alphas else bundle.wse_alphas[-1],
                                 help="The alphas whose interpolated weights precompute evaluated.")
compare: dict[str, dict[str, float]] = {
    f"OSE{' (calibrated)' if ose_cal else ''}, alpha = {ose_alpha:.2f}":
        {s: data.live_split(bundle, ctx.mode, s).ose_accuracy(ose_alpha, ose_cal) for s in tests}}
if wse_ok:
    i = bundle.wse_alphas.index(wse_alpha)
    compare[f"WSE, alpha = {wse_alpha:g}"] = {s: float((data.wse_preds(bundle, s)[i] == live.views[s].labels).mean())
                                             for s in tests}
for method in ("VRF", "fine-tuned", "zero-shot"):
    compare[f"{method}{' (sidebar controls)' if method == 'VRF' else ''}"] = \
        {s: live.views[s].accuracy(method) for s in tests}
for row in compare.values():
    row[OOD_AVG] = float(np.mean([row[s] for s in shifts]))
cmp = pd.DataFrame(compare).T.rename_axis("method") * 100
show_table(cmp.round(1).reset_index(), "to-alpha", f"{bundle.name}-baselines-at-alpha", hide_index=True,
           width="stretch", column_config={c: st.column_config.NumberColumn(format="%.1f") for c in cmp.columns})
st.caption("Top-1 accuracy (%) on the test splits. OSE mixes the two models' probabilities with one weight for "
           "every sample; VRF's weight follows each sample's distance to the ZSF set.")

# ---- sensitivity ---------------------------------------------------------------------------------
st.subheader("Sensitivity to a, b, k and the weight rule")
field = st.segmented_control("Sweep", ["a", "b", "k"], default="a", required=True, key="to-sens",
                             persist_state="session")
sens = go.Figure()
for rule, dash in zip(RULES, ("solid", "dash", "dot")):
    values, accs = vrf_sweep(replace(params, rule=rule), field)
    for name, ys, color in (("ID", accs[id_name], ctx.colors[id_name]),
                            ("OOD", y_of(accs, y_axis), OOD_AVG_COLOR if y_axis == OOD_AVG else ctx.colors[y_axis])):
        sens.add_trace(go.Scatter(x=list(values), y=100 * ys, name=f"{name}, {rule}", mode="lines",
                                  line=dict(color=color, dash=dash, width=3 if rule == params.rule else 1.5),
                                  hovertemplate=f"{name} ({rule}) {field} = %{{x:.3g}}: %{{y:.1f}}%<extra></extra>"))
vline(sens, getattr(params, field), f"current {field}", dash="dash")
unit = {"a": " (" + ("d²" if params.scale == "squared" else "d") + ")", "b": " (" +
        ("d²" if params.scale == "squared" else "d") + ")", "k": " (neighbours)"}[field]
style(sens, height=420, xaxis=dict(title=f"{field}{unit}", type="log" if field == "b" else "linear"),
      yaxis=dict(title=f"VRF accuracy (%); ID = {id_name}, OOD = {'average' if y_axis == OOD_AVG else y_axis}"))
st.caption("VRF accuracy as one hyperparameter moves and the others stay at the sidebar values; the thick lines "
           "are the current rule. A flat curve means the choice matters little.")
show_figure(sens, "to-sens-chart", f"{bundle.name}-sensitivity-{field}")
