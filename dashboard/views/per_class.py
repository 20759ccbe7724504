"""Per class: per-class accuracy of each method, and the classes where VRF helps or hurts most against the
method compared (either model, or any other method of the results table at its tuned values)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, rivals, sidebar
from dashboard.export import show_figure, show_table
from dashboard.sidebar import Context
from dashboard.theme import method_color, style
from vrf_core.metrics import per_class_accuracy

METHODS = data.METHODS_LIVE
DIFFERENCES = ("VRF − fine-tuned", "VRF − zero-shot")


def compared_methods(ctx: Context) -> list[str]:
    """Every method with per-sample predictions but VRF: the two models first, then the results table's rows."""
    rows = rivals.ordered(data.results_rows(ctx.bundle, ctx.mode))
    return ["fine-tuned", "zero-shot"] + [m for m in rows if m not in METHODS]


def methods_shown(ref: str) -> tuple[str, ...]:
    return METHODS if ref in METHODS else (*METHODS, ref)


def class_accuracies(ctx: Context, split: str, min_n: int, ref: str) -> pd.DataFrame:
    """Per class of `split` with at least `min_n` samples: its size, each method's accuracy (the live three and
    `ref`) and VRF's differences to the two models and to `ref` (fractions)."""
    v, names = ctx.view.splits[split], ctx.bundle.split_classnames(split)
    preds = v.preds if ref in METHODS else {**v.preds, ref: data.method_predictions(ctx.bundle, ctx.mode, split)[ref]}
    df = pd.DataFrame({"class": names, "samples": np.bincount(v.labels, minlength=len(names)),
                       **{m: per_class_accuracy(preds[m], v.labels, len(names)) for m in methods_shown(ref)}})
    for other in ("fine-tuned", "zero-shot", ref):
        df[f"VRF − {other}"] = df["VRF"] - df[other]
    return df[df["samples"] >= min_n]


def extremes(df: pd.DataFrame, delta: str, top: int) -> pd.DataFrame:
    """Up to `top` classes where `delta` is largest and up to `top` where it is most negative, ascending."""
    ranked = df.sort_values(delta, ascending=False)
    return pd.concat([ranked[ranked[delta] > 0].head(top), ranked[ranked[delta] < 0].tail(top)]).sort_values(delta)


def extremes_figure(picked: pd.DataFrame, delta: str, split: str, methods: tuple[str, ...]) -> go.Figure:
    """Grouped bars of each method's accuracy per picked class, the difference in pp on the right."""
    fig = go.Figure()
    for m in methods:
        fig.add_trace(go.Bar(y=picked["class"], x=100 * picked[m], name=m, orientation="h",
                             marker_color=method_color(m), customdata=picked["samples"],
                             hovertemplate=f"<b>%{{y}}</b>: {m} %{{x:.1f}}% (n = %{{customdata}})<extra></extra>"))
    for c, d in zip(picked["class"], picked[delta]):
        fig.add_annotation(x=101, y=c, text=f"{100 * d:+.0f} pp", showarrow=False, xanchor="left",
                           font=dict(color="#2E7D32" if d > 0 else "#C62828" if d < 0 else "grey", size=12))
    return style(fig, height=140 + 60 * len(picked), barmode="group", bargap=0.25, legend_traceorder="reversed",
                 xaxis=dict(title=f"per-class accuracy on {split} (%)", range=[0, 112]),
                 yaxis=dict(title="", automargin=True))


ctx = sidebar.context()
st.title("Per-class accuracy")
splits = data.test_splits(ctx.bundle)
c1, c2, c3, c4 = st.columns([1.2, 1.2, 1, 1], vertical_alignment="bottom")
split = c1.selectbox("Dataset", splits, index=min(1, len(splits) - 1), key="pc-dataset", persist_state="session",
                     help="Shifted sets show where VRF recovers the zero-shot model's robustness.")
ref = c2.selectbox("Compare VRF with", compared_methods(ctx), key="pc-ref", persist_state="session",
                   help="Either model, or any method of the results table at the hyperparameters tuned on "
                        f"{ctx.hp.tuned_on}.")
top = c3.slider("Classes each way", 3, 30, 10, key="pc-top", persist_state="session")
min_n = c4.number_input("Fewest samples per class", 1, 1000, 5, key="pc-min", persist_state="session",
                        help="Classes with fewer test samples are left out: their accuracy is too noisy to rank.")
df, delta = class_accuracies(ctx, split, min_n, ref), f"VRF − {ref}"
if df.empty:
    st.info("No class has that many samples; lower the minimum.")
    st.stop()

m1, m2, m3 = st.columns(3)
m1.metric(f"classes where VRF beats {ref}", int((df[delta] > 0).sum()))
m2.metric("classes unchanged", int((df[delta] == 0).sum()))
m3.metric(f"classes where {ref} beats VRF", int((df[delta] < 0).sum()))

st.subheader(f"Where VRF helps and hurts most against {ref}")
st.caption(f"Up to {top} classes where VRF gains most over {ref} on {split} (top) and up to {top} where it loses "
           "most (bottom), with the sidebar's a, b, k and rule; the labels on the right give the difference in "
           "percentage points.")
picked = extremes(df, delta, top)
if picked.empty:
    st.info(f"VRF and {ref} agree on every class here.")
else:
    show_figure(extremes_figure(picked, delta, split, methods_shown(ref)), "pc-bars",
                f"{ctx.bundle.name}-{split}-per-class")

st.subheader("All classes")
table = df.sort_values(delta, ascending=False).reset_index(drop=True)
differences = list(dict.fromkeys(DIFFERENCES + (delta,)))
table[list(methods_shown(ref)) + differences] *= 100
show_table(table, "pc-table", f"{ctx.bundle.name}-{split}-per-class", hide_index=True, width="stretch", height=420,
           column_config={**{m: st.column_config.ProgressColumn(f"{m} (%)", min_value=0.0, max_value=100.0,
                                                                format="%.1f") for m in methods_shown(ref)},
                          **{c: st.column_config.NumberColumn(f"{c} (pp)", format="%+.1f") for c in differences}})
