"""Sensitivity: VRF accuracy over the (a, b) grid as a heatmap, and against k, exact from the top-m tables
(vrf_core.sensitivity; the paper's Table 10 and Fig. 5c, live). Clicking a cell adopts its (a, b)."""

import time
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, edges, sidebar
from dashboard.export import show_figure
from dashboard.sidebar import Context
from dashboard.theme import OOD_AVG_COLOR, distance_unit, scale_label, style, vline
from vrf_core.analysis import convert_scale
from vrf_core.evaluate import OOD_AVG, VRFParams
from vrf_core.sensitivity import Sensitivity

N_A, N_B = 20, 10
NEUTRAL = VRFParams()  # the a, b (and, for the k curve, k) a memo key leaves out
HOVER = "a = %{customdata[1]:.3f}, b = %{customdata[2]:.3g}<br>VRF accuracy %{customdata[3]:.2f}%"


def grid_values(ctx: Context, scale: str) -> tuple[tuple, tuple]:
    """a: N_A values evenly over the a slider's range; b: N_B geometrically over the b slider's."""
    ranges = sidebar.control_ranges(ctx.bundle, scale, ctx.hp.vrf)
    (a_lo, a_hi), (b_lo, b_hi) = ranges["a"], ranges["b"]
    return tuple(np.linspace(a_lo, a_hi, N_A).tolist()), tuple(np.geomspace(max(b_lo, 1e-3), b_hi, N_B).tolist())


def k_values(ctx: Context) -> tuple:
    return tuple(range(1, ctx.bundle.k_max + 1))


def sensitivity(ctx: Context, split: str) -> Sensitivity:
    """A split's win intervals, found once per tuning mode (its temperatures) and kept."""
    return data.memoize(ctx.bundle, ("sensitivity", ctx.mode, split),
                        lambda: Sensitivity(data.topm_split(ctx.bundle, ctx.mode, split)))


def timed(make):
    """`make` returning (its value, the seconds it took): a memo keeps both."""
    def run():
        start = time.perf_counter()
        return make(), time.perf_counter() - start
    return run


def accuracy_grid(ctx: Context, p: VRFParams) -> tuple[dict[str, np.ndarray], float]:
    """Per evaluation split, VRF accuracy (N_B, N_A) over the grid under p's k, rule, scale and calibration,
    and the seconds it took. a and b are left out of the memo key: moving them costs nothing."""
    held, grid = replace(p, a=NEUTRAL.a, b=NEUTRAL.b), grid_values(ctx, p.scale)
    make = timed(lambda: {s: sensitivity(ctx, s).grid_accuracy(held, *grid) for s in data.eval_splits(ctx.bundle)})
    return data.memoize(ctx.bundle, ("sensitivity_grid", ctx.mode, held, grid), make, keep=16)


def accuracy_by_k(ctx: Context, p: VRFParams) -> tuple[dict[str, np.ndarray], float]:
    """Per evaluation split, VRF accuracy at every k (the rest held at p), and the seconds it took."""
    held = replace(p, k=NEUTRAL.k, b=NEUTRAL.b if p.rule == "binary" else p.b)
    ks = k_values(ctx)
    make = timed(lambda: {s: sensitivity(ctx, s).k_accuracy(held, ks) for s in data.eval_splits(ctx.bundle)})
    return data.memoize(ctx.bundle, ("sensitivity_k", ctx.mode, held, ks), make, keep=16)


def shown(accs: dict[str, np.ndarray], choice: str, shifts: list[str]) -> np.ndarray:
    return np.mean([accs[s] for s in shifts], axis=0) if choice == OOD_AVG else accs[choice]


def choice_label(ctx: Context, choice: str, n_shifts: int) -> str:
    if choice == OOD_AVG:
        return f"OOD average ({n_shifts} shifts)"
    role = ctx.bundle.splits[choice]["role"]
    return {"id_val": f"ID validation ({choice})", "id_test": f"ID test ({choice})"}.get(role, choice)


def tuned_point(ctx: Context, scale: str) -> tuple[float, float]:
    """The tuned (a, b) on the current distance scale."""
    t = ctx.hp.vrf
    return convert_scale(t.a, t.b, t.scale, scale)


def heatmap(ctx: Context, z: np.ndarray, grid: tuple[tuple, tuple], label: str) -> go.Figure:
    """Accuracy (%) over (a, log10 b); an invisible marker per cell centre carries its (a, b) for a click."""
    p, (a_grid, b_grid) = ctx.params, grid
    ya = np.log10(b_grid)
    fig = go.Figure(go.Heatmap(x=a_grid, y=ya, z=100 * z, colorscale="Viridis", hoverinfo="skip",
                               colorbar=dict(title=dict(text=f"{label} (%)", side="right"))))
    aa, bb = np.meshgrid(a_grid, b_grid)
    cells = [["cell", a, b, 100 * acc] for a, b, acc in zip(aa.ravel(), bb.ravel(), z.ravel())]
    fig.add_trace(go.Scatter(x=aa.ravel(), y=np.log10(bb.ravel()), mode="markers", customdata=cells,
                             name="cells", showlegend=False, hovertemplate=HOVER + "<br>click to adopt<extra></extra>",
                             marker=dict(size=18, symbol="square", color="rgba(0,0,0,0)"),
                             selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1))))
    fig.add_trace(go.Scatter(x=[p.a], y=[np.log10(p.b)], mode="markers", name="current (sidebar)",
                             customdata=[["current", p.a, p.b, np.nan]],
                             hovertemplate="<b>current controls</b><br>a = %{customdata[1]:.3f}, "
                                           "b = %{customdata[2]:.3g}<extra></extra>",
                             marker=dict(size=20, symbol="star", color="#E45756", line=dict(width=1.5, color="black"))))
    edge = {k: e for k, e in edges.vrf_edges(ctx.bundle, ctx.mode).items() if k in ("a", "b")}
    ta, tb = tuned_point(ctx, p.scale)
    note = "; ".join(f"{k} at the {e['at']} end of its search" for k, e in edge.items())
    ring = "#D62728" if edge else "black"  # a dark ring under a white one: visible on every colour of the scale
    fig.add_trace(go.Scatter(x=[ta], y=[np.log10(tb)], mode="markers", name=f"tuned on {ctx.hp.tuned_on}",
                             hoverinfo="skip", marker=dict(size=30, symbol="diamond-open", color=ring,
                                                           line=dict(width=5))))
    fig.add_trace(go.Scatter(
        x=[ta], y=[np.log10(tb)], mode="markers", name="tuned", showlegend=False,
        customdata=[["tuned", ta, tb, np.nan]],
        hovertemplate=f"<b>tuned on {ctx.hp.tuned_on}</b>" + (f" ({note})" if edge else "")
                      + "<br>a = %{customdata[1]:.3f}, b = %{customdata[2]:.3g} (click to restore)<extra></extra>",
        marker=dict(size=28, symbol="diamond-open", color="white", line=dict(width=2))))
    if edge:
        fig.add_annotation(x=ta, y=np.log10(tb), text=f"tuned: {note}", name="edge", showarrow=True, arrowcolor=ring,
                           ay=-36, bgcolor="white", bordercolor=ring, font=dict(color=ring, size=13))
    unit = distance_unit(p.scale)
    ticks = [b for i, b in enumerate(b_grid) if i % 2 == 0 or i == len(b_grid) - 1]
    style(fig, height=520, xaxis=dict(title=f"a: centre ({unit})", showgrid=False, zeroline=False),
          yaxis=dict(title=f"b: width ({unit}, log scale)", tickvals=np.log10(ticks),
                     ticktext=[f"{b:.3g}" for b in ticks], showgrid=False, zeroline=False),
          clickmode="event+select", dragmode="zoom", hoverdistance=60)
    return fig


def adopt_cell(ctx: Context) -> None:
    """A click on a cell adopts its (a, b); on the tuned marker, every tuned value."""
    points = st.session_state["se-heat"]["selection"]["points"]
    if not points:
        return
    kind, a, b = points[0]["customdata"][:3]
    if kind == "cell":
        sidebar.set_controls(ctx, a=float(a), b=float(b))
        st.session_state["se-msg"] = f"Adopted a = {float(a):.3f}, b = {float(b):.3g}."
    elif kind == "tuned":
        sidebar.set_controls(ctx, **sidebar.tuned_values(ctx.hp))
        st.session_state["se-msg"] = f"Restored the values tuned on {ctx.hp.tuned_on}."


def adopt_k(ctx: Context) -> None:
    """A click on the k chart adopts that k."""
    points = st.session_state["se-k"]["selection"]["points"]
    if points:
        sidebar.set_controls(ctx, k=int(points[0]["x"]))
        st.session_state["se-msg"] = f"Adopted k = {int(points[0]['x'])}."


def k_figure(ctx: Context, accs: dict[str, np.ndarray], choice: str, shifts: list[str]) -> go.Figure:
    """Accuracy against k: ID test and the chosen OOD view (and ID validation when that is the heatmap's)."""
    ks, fig, p = k_values(ctx), go.Figure(), ctx.params
    lines = [(s, accs[s], ctx.colors[s]) for s in ctx.bundle.split_names("id_test")]
    if choice != OOD_AVG and ctx.bundle.splits[choice]["role"] == "id_val":
        lines.append((choice, accs[choice], ctx.colors[choice]))
    if shifts:
        ood = choice if choice in shifts else OOD_AVG
        lines.append((choice_label(ctx, ood, len(shifts)), shown(accs, ood, shifts),
                      ctx.colors.get(ood, OOD_AVG_COLOR)))
    for name, acc, color in lines:
        fig.add_trace(go.Scatter(x=ks, y=100 * acc, name=name, mode="lines+markers", marker=dict(size=4),
                                 line=dict(color=color, width=2.5), selected=dict(marker=dict(opacity=1)),
                                 unselected=dict(marker=dict(opacity=1)),
                                 hovertemplate=f"{name}, k = %{{x}}: %{{y:.2f}}%<extra></extra>"))
    edge = edges.vrf_edges(ctx.bundle, ctx.mode).get("k")
    vline(fig, ctx.hp.vrf.k, f"tuned k = {ctx.hp.vrf.k}" + (f" ({edge['at']} end of its search)" if edge else ""))
    if p.k != ctx.hp.vrf.k:
        vline(fig, p.k, f"current k = {p.k}", dash="dash")
    style(fig, height=400, xaxis=dict(title="k: the neighbour whose distance sets w"),
          yaxis=dict(title="VRF accuracy (%)"), clickmode="event+select")
    fig.update_layout(legend=dict(y=1.1), margin=dict(t=80))  # above the k lines' labels
    return fig


ctx = sidebar.context()
page_start = time.perf_counter()
st.title("Sensitivity to a, b and k")
tests, shifts = ctx.bundle.split_names("id_val", "id_test"), ctx.bundle.split_names("ood")
choices = tests + ([OOD_AVG] if shifts else []) + shifts
if st.session_state.get("se-show") not in choices:  # a split of the bundle shown before
    st.session_state.pop("se-show", None)
choice = st.selectbox("The heatmap shows VRF accuracy on", choices, key="se-show", persist_state="session",
                      index=choices.index(OOD_AVG) if shifts else 0,
                      format_func=lambda c: choice_label(ctx, c, len(shifts)))
p, grid = ctx.params, grid_values(ctx, ctx.params.scale)
grid_accs, grid_s = accuracy_grid(ctx, p)
z, label = shown(grid_accs, choice, shifts), choice_label(ctx, choice, len(shifts))
best = np.unravel_index(np.argmax(z), z.shape)
st.caption(f"{N_A} values of a (evenly, {grid[0][0]:.3g}–{grid[0][-1]:.3g}) by {N_B} of b (geometrically, "
           f"{grid[1][0]:.3g}–{grid[1][-1]:.3g}): the sidebar's ranges. Held at the sidebar's values: k = {p.k}, the "
           f"{p.rule} rule{' (b plays no part)' if p.rule == 'binary' else ''}, {scale_label(p.scale)}, calibration "
           f"{'on' if p.calibrate else 'off'}. The diamond is the point tuned on **{ctx.hp.tuned_on}**, the star the "
           f"sidebar's. Best cell here: a = {grid[0][best[1]]:.3f}, b = {grid[1][best[0]]:.3g}, "
           f"{100 * z[best]:.2f}%. **Click a cell to adopt its a and b.**")
show_figure(heatmap(ctx, z, grid, label), "se-heat", f"{ctx.bundle.name}-sensitivity-ab",
            on_select=lambda: adopt_cell(ctx), selection_mode="points")
if msg := st.session_state.pop("se-msg", None):
    st.toast(msg, icon=":material/touch_app:")

st.subheader("Accuracy against k")
k_accs, k_s = accuracy_by_k(ctx, p)
st.caption(f"VRF accuracy at every k from 1 to {ctx.bundle.k_max} (the stored neighbours), a = {p.a:.3f}, "
           f"b = {p.b:.3g}, the {p.rule} rule, {scale_label(p.scale)} and calibration held at the sidebar's values. "
           "**Click a point to adopt its k.**")
show_figure(k_figure(ctx, k_accs, choice, shifts), "se-k", f"{ctx.bundle.name}-sensitivity-k",
            on_select=lambda: adopt_k(ctx), selection_mode="points")
n = sum(len(data.topm_split(ctx.bundle, ctx.mode, s)) for s in data.eval_splits(ctx.bundle))
st.caption(f":material/timer: exact from the top-m tables over {n:,} evaluation samples: the grid "
           f"({N_A * N_B} cells) took {1000 * grid_s:.0f} ms, the k curve ({len(k_values(ctx))} values) "
           f"{1000 * k_s:.0f} ms when first computed (both kept); this page "
           f"{1000 * (time.perf_counter() - page_start):.0f} ms.")
