"""Distances: where each dataset sits relative to the zero-shot failure set, the weight function over
it, the accuracy ratio fine-tuned / zero-shot per distance bin, and the average weight per dataset."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, sidebar
from dashboard.export import show_figure, show_table
from dashboard.sidebar import Context
from dashboard.theme import OTHER_TRAIN, ZSF, distance_unit, distance_words, style, vline
from vrf_core.analysis import accuracy_ratio_by_bin, density, distance_bin_edges
from vrf_core.weights import weight

RATIO_TICKS = (0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 10)


def distance_groups(ctx: Context) -> dict[str, np.ndarray]:
    """d per dataset: the training split as its ZSF members and the rest, evaluation splits as they are."""
    groups: dict[str, np.ndarray] = {}
    for split in ctx.bundle.split_names("id_train"):
        is_zsf = data.array(ctx.bundle, split, "is_zsf").astype(bool)
        groups[ZSF], groups[OTHER_TRAIN] = ctx.view.splits[split].d[is_zsf], ctx.view.splits[split].d[~is_zsf]
    for split in data.eval_splits(ctx.bundle):
        groups[split] = ctx.view.splits[split].d
    return groups


def role_of(ctx: Context, group: str) -> str:
    return {ZSF: "ZSF members (train)", OTHER_TRAIN: "ID train, not in ZSF"}.get(
        group, ctx.bundle.splits.get(group, {}).get("role", ""))


def density_figure(ctx: Context, groups: dict[str, np.ndarray], shown: list[str]) -> go.Figure:
    """A kernel density of d per dataset, with the weight w(d) on a second axis."""
    p, unit = ctx.params, distance_unit(ctx.params.scale)
    lo, hi = np.quantile(np.concatenate([groups[g] for g in shown]), [0.001, 0.999])
    pad = 0.05 * (hi - lo)
    grid = np.linspace(lo - pad, hi + pad, 240)
    fig = go.Figure()
    for g in shown:
        fig.add_trace(go.Scatter(
            x=grid, y=density(groups[g], grid), name=g, mode="lines",
            line=dict(color=ctx.colors[g], width=2.5, dash="dot" if g == OTHER_TRAIN else "solid"),
            fill="tozeroy" if g == ZSF else None, fillcolor="rgba(38,38,38,0.08)",
            hovertemplate=f"<b>{g}</b> ({role_of(ctx, g)})<br>{unit} = %{{x:.3f}}<br>density %{{y:.2f}}<extra></extra>",
            legendrank=1 if g in (ZSF, OTHER_TRAIN) else 2))
    fig.add_trace(go.Scatter(x=grid, y=weight(grid, p.a, p.b, p.rule), name=f"weight w({unit}), {p.rule}",
                             yaxis="y2", mode="lines", line=dict(color="black", width=2, dash="dash"),
                             hovertemplate=f"{unit} = %{{x:.3f}}: w = %{{y:.2f}}<extra></extra>"))
    vline(fig, p.a, f"a = {p.a:.3f}")
    return style(fig, height=460,
                 xaxis=dict(title=f"distance to the k-th nearest ZSF member, {unit} ({distance_words(p.scale)})"),
                 yaxis=dict(title="density (kernel estimate)", rangemode="tozero"),
                 yaxis2=dict(title="weight w on the fine-tuned model", overlaying="y", side="right", range=[0, 1.05],
                             tickvals=[0, 0.25, 0.5, 0.75, 1], showgrid=False))


def ratio_figure(ctx: Context, groups: dict, evals: list[str], n_bins: int,
                 min_count: int) -> tuple[go.Figure, pd.DataFrame]:
    """Accuracy fine-tuned / zero-shot per distance bin of each evaluation split, and the binned values."""
    unit, fig, rows = distance_unit(ctx.params.scale), go.Figure(), []
    edges = distance_bin_edges([groups[g] for g in evals], n_bins)
    centres = (edges[:-1] + edges[1:]) / 2
    for g in evals:
        v = ctx.view.splits[g]
        r = accuracy_ratio_by_bin(v.d, v.correct("fine-tuned"), v.correct("zero-shot"), edges, min_count)
        fig.add_trace(go.Scatter(
            x=centres, y=r["ratio"], name=g, mode="lines+markers",
            customdata=np.stack([r["count"], 100 * r["acc_ft"], 100 * r["acc_zs"]], axis=1),
            line=dict(color=ctx.colors[g], width=2.5), marker=dict(size=8),
            hovertemplate=f"<b>{g}</b><br>{unit} ≈ %{{x:.3f}}<br>acc fine-tuned %{{customdata[1]:.1f}}% / "
                          "zero-shot %{customdata[2]:.1f}%<br>ratio %{y:.2f} "
                          "(n = %{customdata[0]:.0f})<extra></extra>"))
        rows += [{"dataset": g, "bin_lo": a, "bin_hi": b, "n": n, "acc_ft": af, "acc_zs": az, "ratio": rr}
                 for a, b, n, af, az, rr in zip(edges[:-1], edges[1:], r["count"], r["acc_ft"], r["acc_zs"],
                                                r["ratio"])]
    fig.add_shape(type="line", x0=0, x1=1, xref="paper", y0=1, y1=1, line=dict(color="grey", width=1))
    fig.add_annotation(x=0, xref="paper", y=0, text="equal accuracy", showarrow=False, xanchor="left",
                       yanchor="top", font=dict(color="grey", size=12))
    vline(fig, ctx.params.a, f"a = {ctx.params.a:.3f}")
    finite = np.array([rr for row in rows if np.isfinite(rr := row["ratio"])] + [1.0])
    ticks = [t for t in RATIO_TICKS if finite.min() / 1.3 <= t <= finite.max() * 1.3]
    style(fig, height=440, xaxis=dict(title=f"distance bin centre, {unit}"),
          yaxis=dict(title="accuracy ratio fine-tuned / zero-shot (log scale)", type="log", tickvals=ticks,
                     ticktext=[f"{t:g}" for t in ticks]))
    return fig, pd.DataFrame(rows)


def weight_stats(ctx: Context, groups: dict[str, np.ndarray], shown: list[str]) -> pd.DataFrame:
    """Per dataset: its size, mean and median d, mean w and the share of samples leaning fine-tuned."""
    p, unit = ctx.params, distance_unit(ctx.params.scale)
    weights = {g: weight(groups[g], p.a, p.b, p.rule) for g in shown}
    return pd.DataFrame([{"dataset": g, "samples": len(groups[g]),
                          f"mean {unit}": float(np.mean(groups[g])), f"median {unit}": float(np.median(groups[g])),
                          "mean w": float(weights[g].mean()), "share w > 0.5": float((weights[g] > 0.5).mean())}
                         for g in shown])


def weight_bars(ctx: Context, stats: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=stats["mean w"], y=stats["dataset"], orientation="h",
                           marker_color=[ctx.colors[g] for g in stats["dataset"]],
                           text=[f"{w:.2f}" for w in stats["mean w"]], textposition="outside",
                           hovertemplate="<b>%{y}</b>: mean w = %{x:.3f}<extra></extra>"))
    return style(fig, height=80 + 42 * len(stats), showlegend=False,
                 xaxis=dict(title="mean weight w on the fine-tuned model", range=[0, 1.1]),
                 yaxis=dict(autorange="reversed", title=""))


ctx = sidebar.context()
p, name = ctx.params, ctx.bundle.name
st.title("Distances to the zero-shot failure set")
st.caption(f"d = {distance_words(p.scale)} from a sample's fine-tuned feature to its **k = {p.k}**-th nearest member "
           "of the ZSF set (training images the fine-tuned model gets right and the zero-shot model wrong). "
           f"VRF trusts the fine-tuned model with weight w(d); here a = {p.a:.3f}, b = {p.b:.3f}, rule = {p.rule}.")
groups = distance_groups(ctx)
hidden = ctx.bundle.split_names("id_val")
shown = st.multiselect("Datasets", list(groups), default=[g for g in groups if g not in hidden], key="di-groups",
                       help="The validation split is hidden by default: it is where a, b and k were tuned.")
if not shown:
    st.info("Pick at least one dataset.")
    st.stop()

st.subheader("Distribution of d per dataset")
st.caption("ID test sits close to the ZSF set, shifted sets farther away; the dashed line is the weight VRF puts on "
           "the fine-tuned model at each distance (right axis).")
show_figure(density_figure(ctx, groups, shown), "di-density", f"{name}-distance-density")

st.subheader("Fine-tuned vs zero-shot accuracy by distance")
evals = [g for g in shown if g in ctx.view.splits and ctx.view.splits[g].preds]
c1, c2 = st.columns([1, 3])
n_bins = c1.slider("Distance bins", 4, 30, 12, key="di-bins", persist_state="session")
min_count = c1.slider("Fewest samples per point", 5, 200, 20, step=5, key="di-min", persist_state="session")
with c2:
    st.caption("The plot that justifies VRF: far from the ZSF set the fine-tuned model loses its edge, so the "
               f"ratio falls as d grows. Bins hold at least {min_count} samples; hover for both accuracies.")
    if evals:
        ratio, binned = ratio_figure(ctx, groups, evals, n_bins, min_count)
        show_figure(ratio, "di-ratio", f"{name}-accuracy-ratio")
    else:
        st.info("Pick an evaluation split (ID test or a shift) above.")
if evals:
    with st.expander("Binned accuracies"):
        show_table(binned.round(4), "di-ratio-table", f"{name}-accuracy-ratio", hide_index=True, width="stretch")

st.subheader("Average weight on the fine-tuned model")
stats = weight_stats(ctx, groups, shown)
c1, c2 = st.columns([1, 1])
with c1:
    show_figure(weight_bars(ctx, stats), "di-weights", f"{name}-mean-weight")
with c2:
    show_table(stats, "di-stats", f"{name}-distance-stats", hide_index=True, width="stretch",
               column_config={c: st.column_config.NumberColumn(format="%.3f") for c in stats.columns
                              if c not in ("dataset", "samples")})
