"""Trade-off: ID vs OOD accuracy of every method; VRF as a curve over a (or b); sensitivity to a, b, k
and the weight rule. Clicking a VRF point adopts its hyperparameters."""

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, rivals, sidebar
from dashboard.alpha_baselines import baseline_controls, baselines_table
from dashboard.export import show_figure, show_table
from dashboard.sidebar import Context
from dashboard.theme import OOD_AVG_COLOR, accuracy_axis, distance_unit, logit_ticks, method_color, style, vline
from vrf_core.analysis import sweep
from vrf_core.evaluate import OOD_AVG, VRFParams
from vrf_core.weights import RULES

DEFAULTS = VRFParams()
HOVER = "ID %{customdata[3]:.1f}%<br>OOD %{customdata[4]:.1f}%"


@dataclass(frozen=True)
class ChartOptions:
    """The choices above the chart; `y_axis` is OOD_AVG (the mean over `shifts`) or one shift."""

    id_name: str
    shifts: tuple[str, ...]
    y_axis: str
    over: str  # the VRF curve sweeps "a" or "b"
    logit_axes: bool
    show_routing: bool
    focus: bool

    def ood(self, accs: dict[str, np.ndarray]) -> np.ndarray:
        return np.mean([accs[s] for s in self.shifts], axis=0) if self.y_axis == OOD_AVG else accs[self.y_axis]

    def tx(self, acc) -> np.ndarray:
        return accuracy_axis(acc, self.logit_axes)


def chart_options(ctx: Context, id_name: str, shifts: list[str]) -> ChartOptions:
    c1, c2, _ = st.columns([2, 1.2, 2], vertical_alignment="bottom")
    y_axis = c1.selectbox("OOD accuracy on the vertical axis", [OOD_AVG] + shifts, key="to-y", persist_state="session",
                          format_func=lambda s: f"average over {len(shifts)} shifts" if s == OOD_AVG else s)
    over = c2.segmented_control("VRF curve over", ["a", "b"], default="a", required=True, key="to-over",
                                persist_state="session", help="The other hyperparameters stay at the sidebar values.")
    c3, c4, c5 = st.columns(3)
    logit = c3.toggle("Logit-scaled axes", key="to-logit", persist_state="session",
                      help="The WiSE-FT convention: accuracies on a logit scale, so the frontier is closer to a line.")
    routing = c4.toggle("Routing baselines", value=True, key="to-routing", persist_state="session",
                        help="Baselines that send each sample wholly to one model by an OOD score.")
    rows = data.results_rows(ctx.bundle, ctx.mode)
    far_apart = rows["fine-tuned"][id_name]["acc"] - rows["zero-shot"][id_name]["acc"] > 0.15
    focus = c5.toggle("Zoom on the ensembles", value=far_apart, key="to-focus", persist_state="session",
                      help="Frame the fine-tuned end, where the ensembles differ; double-click the plot to see it all.")
    return ChartOptions(id_name, tuple(shifts), y_axis, over, logit, routing, focus)


# ---- VRF sweeps -------------------------------------------------------------------------------------
def sweep_grid(ctx: Context, name: str, scale: str) -> tuple:
    """Up to 20 values of k, or 25 of a (evenly) or b (geometrically) across the slider's range."""
    if name == "k":
        k_max = ctx.bundle.k_max
        return tuple(np.unique(np.linspace(1, k_max, min(k_max, 20)).round().astype(int)).tolist())
    lo, hi = sidebar.control_ranges(ctx.bundle, scale, ctx.hp.vrf)[name]
    return tuple((np.geomspace(max(lo, 0.002), hi, 25) if name == "b" else np.linspace(lo, hi, 25)).tolist())


def vrf_sweep(ctx: Context, p: VRFParams, name: str) -> tuple[list, dict[str, np.ndarray]]:
    """VRF accuracy per test split as `name` moves over its grid, the rest held at `p`. The cache key
    leaves out that hyperparameter (and b under the binary rule), so moving the control itself costs
    nothing; the current value's point comes from the live view."""
    neutral = replace(p, **{name: getattr(DEFAULTS, name)})
    if p.rule == "binary":
        neutral = replace(neutral, b=DEFAULTS.b)
    grid = sweep_grid(ctx, name, p.scale)

    def make() -> dict[str, np.ndarray]:
        return {split: np.array([data.topm_split(ctx.bundle, ctx.mode, split).vrf_accuracy(q)
                                 for q in sweep(neutral, name, grid)]) for split in data.test_splits(ctx.bundle)}
    accs = data.memoize(ctx.bundle, ("vrf_sweep", ctx.mode, neutral, name, grid), make, keep=64)
    # The current value's point: from the live view for the sidebar's parameters, else (another rule on the
    # sensitivity chart) the test splits' VRF accuracy alone.
    now = {s: ctx.view.splits[s].accuracy("VRF") if p == ctx.params else data.vrf_accuracy(ctx.bundle, ctx.mode, s, p)
           for s in accs}
    current = getattr(p, name)
    j = int(np.searchsorted(grid, current))
    same = j < len(grid) and grid[j] == current
    values = list(grid[:j]) + [current] + list(grid[j + same:])
    return values, {s: np.insert(np.delete(a, j) if same else a, j, now[s]) for s, a in accs.items()}


# ---- the trade-off chart ----------------------------------------------------------------------------
@dataclass
class TradeoffPlot:
    """The figure being built, the values behind its curves, and the ID accuracies a zoomed frame keeps."""

    opts: ChartOptions
    fig: go.Figure = field(default_factory=go.Figure)
    rows: list[dict] = field(default_factory=list)
    anchors: list[float] = field(default_factory=list)

    def points(self, name: str, ids, oods, custom: list, hover: str, **kw) -> None:
        """customdata per point: [kind ("info", "a", "b" or "tuned"), value, label, ID %, OOD %]."""
        self.fig.add_trace(go.Scatter(x=self.opts.tx(ids), y=self.opts.tx(oods), name=name, customdata=custom,
                                      hovertemplate=hover + "<extra></extra>", **kw))

    def curve(self, method: str, param: str, values, accs: dict, tuned: float | None = None, tuned_on: str = "",
              kind: str = "info", **line) -> None:
        """`method` as `param` moves over `values`, with a ring on the tuned value."""
        ids, oods = accs[self.opts.id_name], self.opts.ood(accs)
        custom = [[kind, float(v), f"{method} {param} = {v:.3g}", 100 * i, 100 * o]
                  for v, i, o in zip(values, ids, oods)]
        self.points(method, ids, oods, custom, f"<b>{method}</b> {param} = %{{customdata[1]:.3g}}<br>" + HOVER,
                    mode="lines+markers", line=dict(color=method_color(method), **line), marker=dict(size=6))
        self.rows += [{"method": method, "hyperparameter": param, "value": v, "ID acc": i, "OOD acc": o}
                      for v, i, o in zip(values, ids, oods)]
        if tuned is not None and tuned in list(values):
            j = list(values).index(tuned)
            self.anchors.append(ids[j])
            self.points(f"{method} (tuned)", [ids[j]], [oods[j]], [custom[j]],
                        f"<b>{method}</b> tuned on {tuned_on}: {param} = {tuned:.3g}<br>" + HOVER, mode="markers",
                        showlegend=False, marker=dict(size=15, color="rgba(0,0,0,0)",
                                                      line=dict(width=2.5, color=method_color(method))))

    def model(self, method: str, i: float, o: float) -> None:
        """One point of the results table: the two models labelled, routing baselines as crosses."""
        base = method in ("zero-shot", "fine-tuned")
        if method != "zero-shot":
            self.anchors.append(i)
        self.points(method, [i], [o], [["info", 0.0, method, 100 * i, 100 * o]], f"<b>{method}</b><br>" + HOVER,
                    mode="markers+text" if base else "markers", text=[method] if base else None,
                    textposition="bottom center", marker=dict(size=14 if base else 10, color=method_color(method),
                                                              symbol="circle" if base else "x",
                                                              line=dict(width=1, color="white")))
        self.rows.append({"method": method, "hyperparameter": "", "value": np.nan, "ID acc": i, "OOD acc": o})

    def vrf_at(self, view: data.LiveView) -> tuple[float, float]:
        ood = view.ood_average("VRF") if self.opts.y_axis == OOD_AVG else view.splits[self.opts.y_axis].accuracy("VRF")
        return view.splits[self.opts.id_name].accuracy("VRF"), ood

    def axes(self) -> tuple[dict, dict]:
        """x and y axis settings: framed on the anchors when zoomed, logit ticks labelled in percent."""
        xs = np.concatenate([np.asarray(t.x, dtype=float) for t in self.fig.data])
        ys = np.concatenate([np.asarray(t.y, dtype=float) for t in self.fig.data])
        x_axis, y_axis = dict(showgrid=True, zeroline=False), dict(showgrid=True, zeroline=False)
        if self.opts.focus:
            ax = self.opts.tx(self.anchors)
            pad = 0.05 if self.opts.logit_axes else 1.0
            lo = ax.min() - 0.25 * (ax.max() - ax.min()) - pad
            inside = ys[xs >= lo]
            x_axis["range"] = [lo, ax.max() + pad]
            y_axis["range"] = [inside.min() - pad, inside.max() + pad]
        if self.opts.logit_axes:
            for axis, values in ((x_axis, xs), (y_axis, ys)):
                axis.update(logit_ticks(axis.get("range", [values.min(), values.max()])))
        return x_axis, y_axis


def tradeoff_figure(ctx: Context, opts: ChartOptions) -> tuple[go.Figure, pd.DataFrame]:
    """OSE and WSE over alpha, VRF over a (or b), the models and routing baselines, VRF at the tuned and
    the current controls; and the values behind the curves (accuracies in %)."""
    hp, p, plot = ctx.hp, ctx.params, TradeoffPlot(opts)
    tuned_alphas = {"OSE": hp.ose_alpha, "OSE (calibrated)": hp.ose_cal_alpha, "WSE": hp.wse_alpha,
                    **rivals.tuned_alphas(hp)}
    for method, accs in data.stored_curves(ctx.bundle, ctx.mode).items():
        alphas = ctx.bundle.wse_alphas if method == "WSE" else ctx.bundle.ose_alphas
        plot.curve(method, "α", alphas, accs, tuned_alphas.get(method), hp.tuned_on,
                   dash=rivals.CURVE_DASH.get(method))
    plot.curve("VRF", opts.over, *vrf_sweep(ctx, p, opts.over), kind=opts.over, width=3)
    rows = data.results_rows(ctx.bundle, ctx.mode)
    for method in ["zero-shot", "fine-tuned"] + ([m for m in rows if m.startswith("route:")] if opts.show_routing
                                                 else []):
        plot.model(method, rows[method][opts.id_name]["acc"], rows[method][opts.y_axis]["acc"])
    rivals.points(plot, rows, hp.tuned_on)
    if p != hp.vrf:
        ti, to = plot.vrf_at(data.live_view(ctx.bundle, ctx.mode, hp.vrf))
        plot.points("VRF tuned", [ti], [to], [["tuned", 0.0, "VRF tuned", 100 * ti, 100 * to]],
                    f"<b>VRF tuned on {hp.tuned_on}</b> (click to restore)<br>" + HOVER, mode="markers",
                    marker=dict(size=14, symbol="diamond-open", color=method_color("VRF"), line=dict(width=2.5)))
    ci, co = plot.vrf_at(ctx.view)
    plot.points("VRF (current)", [ci], [co], [["info", 0.0, "VRF current", 100 * ci, 100 * co]],
                f"<b>VRF, current controls</b><br>a = {p.a:.3f}, b = {p.b:.3f}, k = {p.k}, {p.rule}<br>" + HOVER,
                mode="markers", marker=dict(size=22, symbol="star", color=method_color("VRF"),
                                            line=dict(width=1.5, color="black")))
    plot.anchors.append(ci)
    x_axis, y_axis = plot.axes()
    rivals.ceiling_lines(plot, data.ceiling(ctx.bundle, ctx.mode), x_axis, y_axis)
    ood_words = f"average of {len(opts.shifts)} shifts" if opts.y_axis == OOD_AVG else opts.y_axis
    style(plot.fig, height=560, xaxis=dict(title=f"ID accuracy, {opts.id_name} (%)", **x_axis),
          yaxis=dict(title=f"OOD accuracy, {ood_words} (%)", **y_axis), clickmode="event+select", dragmode="zoom")
    curves = pd.DataFrame(plot.rows)
    curves[["ID acc", "OOD acc"]] *= 100
    return plot.fig, curves.round(3)


def adopt(ctx: Context) -> None:
    """A click on a VRF point adopts its a (or b); on the tuned marker, every tuned value."""
    points = st.session_state["to-chart"]["selection"]["points"]
    if not points:
        return
    kind, value, label, id_pct, ood_pct = points[0]["customdata"][:5]
    if kind in ("a", "b"):
        sidebar.set_controls(ctx, **{kind: float(value)})
        st.session_state["to-msg"] = f"Adopted {label}."
    elif kind == "tuned":
        sidebar.set_controls(ctx, **sidebar.tuned_values(ctx.hp))
        st.session_state["to-msg"] = f"Restored the values tuned on {ctx.hp.tuned_on}."
    else:
        st.session_state["to-msg"] = (f"{label}: ID {id_pct:.1f}%, OOD {ood_pct:.1f}%. Only VRF points change "
                                      "the controls.")


# ---- sensitivity ------------------------------------------------------------------------------------------
def sensitivity_figure(ctx: Context, opts: ChartOptions, name: str) -> go.Figure:
    """VRF's ID and OOD accuracy as `name` (a, b or k) moves, under each weight rule (the current one thick)."""
    p, fig = ctx.params, go.Figure()
    ood_color = OOD_AVG_COLOR if opts.y_axis == OOD_AVG else ctx.colors[opts.y_axis]
    for rule, dash in zip(RULES, ("solid", "dash", "dot")):
        values, accs = vrf_sweep(ctx, replace(p, rule=rule), name)
        for axis, ys, color in (("ID", accs[opts.id_name], ctx.colors[opts.id_name]),
                                ("OOD", opts.ood(accs), ood_color)):
            fig.add_trace(go.Scatter(x=list(values), y=100 * ys, name=f"{axis}, {rule}", mode="lines",
                                     line=dict(color=color, dash=dash, width=3 if rule == p.rule else 1.5),
                                     hovertemplate=f"{axis} ({rule}) {name} = %{{x:.3g}}: %{{y:.1f}}%<extra></extra>"))
    vline(fig, getattr(p, name), f"current {name}", dash="dash")
    unit = "neighbours" if name == "k" else distance_unit(p.scale)
    style(fig, height=420, xaxis=dict(title=f"{name} ({unit})", type="log" if name == "b" else "linear"),
          yaxis=dict(title=f"VRF accuracy (%); ID = {opts.id_name}, "
                           f"OOD = {'average' if opts.y_axis == OOD_AVG else opts.y_axis}"))
    return fig


@sidebar.live_fragment
def live_sections() -> None:
    """The whole page below its title follows the VRF controls."""
    ctx = sidebar.context()
    opts = chart_options(ctx, ctx.bundle.split_names("id_test")[0], ctx.bundle.split_names("ood"))
    figure, curve_values = tradeoff_figure(ctx, opts)
    st.caption("Each curve sweeps one hyperparameter; rings mark the values tuned on "
               f"**{ctx.hp.tuned_on}**, the star is VRF with the sidebar controls. **Click a VRF point to adopt its "
               f"{opts.over}.** Up and to the right is better; drag to zoom, double-click to zoom out.")
    show_figure(figure, "to-chart", f"{ctx.bundle.name}-tradeoff", on_select=lambda: adopt(ctx),
                selection_mode="points")
    if note := rivals.chart_note(data.results_rows(ctx.bundle, ctx.mode), data.ceiling(ctx.bundle, ctx.mode)):
        st.caption(note)
    if msg := st.session_state.pop("to-msg", None):
        st.toast(msg, icon=":material/touch_app:")
    with st.expander("Curve values"):
        show_table(curve_values, "to-table", f"{ctx.bundle.name}-tradeoff-curves", hide_index=True, width="stretch")

    st.subheader("Baselines at a chosen alpha")
    table = baselines_table(ctx, opts.shifts, *baseline_controls(ctx))
    show_table(table, "to-alpha", f"{ctx.bundle.name}-baselines-at-alpha", hide_index=True, width="stretch",
               column_config={c: st.column_config.NumberColumn(format="%.1f") for c in table.columns if c != "method"})
    st.caption("Top-1 accuracy (%) on the test splits. OSE mixes the two models' probabilities with one weight for "
               "every sample; VRF's weight follows each sample's distance to the ZSF set.")

    st.subheader("Sensitivity to a, b, k and the weight rule")
    swept = st.segmented_control("Sweep", ["a", "b", "k"], default="a", required=True, key="to-sens",
                                 persist_state="session")
    st.caption("VRF accuracy as one hyperparameter moves and the others stay at the sidebar values; the thick lines "
               "are the current rule. A flat curve means the choice matters little.")
    show_figure(sensitivity_figure(ctx, opts, swept), "to-sens-chart", f"{ctx.bundle.name}-sensitivity-{swept}")


ctx = sidebar.context()
st.title("ID–OOD trade-off")
if not ctx.bundle.split_names("id_test") or not ctx.bundle.split_names("ood"):
    st.warning("This bundle has no ID test split or no shifted test set, so there is no trade-off to draw.")
    sidebar.draw_controls()  # no live fragment runs on this page now
    sidebar.show_latency()
    st.stop()
live_sections()
