"""Embedding map: the 2-D UMAP of fine-tuned features (ZSF set and evaluation splits), coloured by
dataset, distance, weight or correctness. Box or lasso selection fills the sample grid below."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, gallery, sidebar
from dashboard.export import show_figure
from dashboard.sidebar import Context
from dashboard.theme import CORRECTNESS_COLORS, ZSF, distance_unit, method_color, style

SVG_LIMIT = 10000  # beyond this many points draw with WebGL
CATEGORY_COLORS = {"both right": CORRECTNESS_COLORS["both right"],
                   "VRF fixes fine-tuned": method_color("VRF"), "VRF breaks fine-tuned": method_color("fine-tuned"),
                   "both wrong": CORRECTNESS_COLORS["both wrong"], "ZSF member": CORRECTNESS_COLORS["ZSF member"]}


def map_caption(ctx: Context) -> str:
    """How the map was computed, from the manifest's `embedding` settings."""
    emb = ctx.bundle.manifest.get("embedding") or {}
    how = [f"{emb['metric']} metric" if emb.get("metric") else "",
           f"{emb['n_neighbors']} neighbours" if emb.get("n_neighbors") else "",
           f"at most {emb['max_points']:,} points" if isinstance(emb.get("max_points"), int) else ""]
    how = ", ".join(h for h in how if h)
    return (f"A 2-D {str(emb.get('method') or 'map').upper()} of the fine-tuned image features"
            f"{f' ({how})' if how else ''}, computed once in precompute. Drag with **Box Select** or **Lasso "
            "Select** (plot toolbar) to fill the grid below; click one point to inspect it.")


def category(view: data.SplitView, rows: np.ndarray) -> np.ndarray:
    """Correctness of VRF relative to the fine-tuned model, per row."""
    if not view.preds:
        return np.full(len(rows), "ZSF member")
    vrf, ft = view.correct("VRF")[rows], view.correct("fine-tuned")[rows]
    return np.select([vrf & ft, vrf & ~ft, ~vrf & ft], ["both right", "VRF fixes fine-tuned",
                                                        "VRF breaks fine-tuned"], "both wrong")


def map_figure(ctx: Context, shown: list[str], colour: str, size: int) -> tuple[go.Figure, list[str]]:
    """The map of the `shown` splits, and the split of each trace (to map selected points back to samples)."""
    zsf, unit = ctx.bundle.split_names("zsf"), distance_unit(ctx.params.scale)
    n_points = sum(int((~np.isnan(data.array(ctx.bundle, s, "umap")[:, 0])).sum()) for s in shown)
    trace = go.Scattergl if n_points > SVG_LIMIT else go.Scatter
    fig, trace_splits = go.Figure(), []
    for split in shown:
        xy = data.array(ctx.bundle, split, "umap")
        rows = np.flatnonzero(~np.isnan(xy[:, 0]))
        v = ctx.view.splits[split]
        name, symbol = (ZSF, "diamond") if split in zsf else (split, "circle")
        # customdata as lists: plotly encodes numpy arrays as typed arrays, which selection events do not decode
        custom = np.stack([rows, v.d[rows].round(3), v.w[rows].round(3)], axis=1)
        label_names = np.asarray(ctx.bundle.split_classnames(split))[v.labels[rows]]
        hover = (f"<b>{name}</b> #%{{customdata[0]}}<br>%{{text}}<br>{unit} = %{{customdata[1]}}, "
                 "w = %{customdata[2]}<extra></extra>")
        if colour in ("distance", "weight"):
            trace_splits.append(split)
            fig.add_trace(trace(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=name, customdata=custom.tolist(),
                                text=label_names, hovertemplate=hover, showlegend=False,
                                marker=dict(size=size, color=v.d[rows] if colour == "distance" else v.w[rows],
                                            coloraxis="coloraxis", opacity=0.8, symbol=symbol)))
            continue
        groups = {name: rows} if colour == "dataset" else {c: rows[category(v, rows) == c] for c in CATEGORY_COLORS}
        for label, r in groups.items():
            if not len(r):
                continue
            pick = np.searchsorted(rows, r)
            trace_splits.append(split)
            fig.add_trace(trace(x=xy[r, 0], y=xy[r, 1], mode="markers", name=label, legendgroup=label,
                                showlegend=colour == "dataset" or label not in {t.name for t in fig.data},
                                customdata=custom[pick].tolist(), text=label_names[pick], hovertemplate=hover,
                                marker=dict(size=size, opacity=0.75, symbol=symbol,
                                            color=ctx.colors[name] if colour == "dataset" else CATEGORY_COLORS[label])))
    if colour == "distance":
        fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title=f"{unit} to ZSF")))
    elif colour == "weight":
        fig.update_layout(coloraxis=dict(colorscale=[[0, method_color("zero-shot")], [0.5, "#EEEEEE"],
                                                     [1, method_color("fine-tuned")]], cmin=0, cmax=1,
                                         colorbar=dict(title="w (0 = zero-shot,<br>1 = fine-tuned)")))
    style(fig, height=640, dragmode="lasso", legend_itemsizing="constant",
          xaxis=dict(title="UMAP 1", showticklabels=False, zeroline=False),
          yaxis=dict(title="UMAP 2", showticklabels=False, zeroline=False, scaleanchor="x"))
    return fig, trace_splits


def remember_selection(event, trace_splits: list[str]) -> None:
    """Keeps the selected (split, row) items for the grid (and the Samples page); one clicked point opens
    in the inspector."""
    points = event["selection"]["points"] if event else []
    if not points:
        return
    picked = [(trace_splits[p["curve_number"]], int(p["customdata"][0])) for p in points
              if p.get("customdata") and p.get("curve_number", len(trace_splits)) < len(trace_splits)]
    st.session_state["map_selection"] = picked
    if len(picked) == 1 and not event["selection"]["box"] and not event["selection"]["lasso"]:
        st.session_state["inspect"] = picked[0]


def selected_samples(ctx: Context) -> None:
    selection = st.session_state.get("map_selection") or []
    if not selection:
        st.info("Nothing selected yet: choose Box Select or Lasso Select in the plot's toolbar and drag over a "
                "region.", icon=":material/select:")
        return
    testable = [(s, i) for s, i in selection if s in ctx.view.splits and ctx.view.splits[s].preds]
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    n_zsf = len(selection) - len(testable)
    c1.caption(f"{len(selection):,} points selected: {len(testable):,} evaluation samples"
               + (f" and {n_zsf:,} ZSF training members (not in the grid)" if n_zsf else "") + ".")
    if c2.button("Clear selection", key="em-clear", icon=":material/close:"):
        st.session_state["map_selection"] = []
        st.rerun()
    gallery.browser(ctx, testable, "em")


ctx = sidebar.context()
st.title("Embedding map")
zsf = ctx.bundle.split_names("zsf")
splits = [s for s in zsf + data.eval_splits(ctx.bundle) if ctx.bundle.has(s, "umap")]
if not splits:
    st.warning("This bundle has no embedding map (`umap` arrays); rebuild it with the map enabled in precompute.")
    st.stop()
st.caption(map_caption(ctx))
c1, c2, c3 = st.columns([1.8, 2.4, 0.8], vertical_alignment="bottom")
colour = c1.segmented_control("Colour by", ["dataset", "distance", "weight", "correctness"], default="dataset",
                              required=True, key="em-colour", persist_state="session")
shown = c2.multiselect("Datasets", splits, default=[s for s in splits if ctx.bundle.splits[s]["role"] != "id_val"],
                       key="em-datasets", persist_state="session", format_func=lambda s: ZSF if s in zsf else s)
size = c3.slider("Point size", 2, 10, 5, key="em-size", persist_state="session")
fig, trace_splits = map_figure(ctx, shown, colour, size)
if colour == "correctness":
    st.caption("Correctness compares VRF with the fine-tuned model: *fixes* = VRF right where fine-tuned is wrong, "
               "*breaks* = the reverse. ZSF members are training images and have no test prediction.")
event = show_figure(fig, "em-map", f"{ctx.bundle.name}-embedding-{colour}", on_select="rerun",
                    selection_mode=("points", "box", "lasso"))
remember_selection(event, trace_splits)
st.subheader("Selected samples")
selected_samples(ctx)
