"""The sample grid and the inspector, shared by the Samples page and the Embedding map.

An item is (split, row). Clicking "Inspect" under a thumbnail puts the item in
`st.session_state["inspect"]`; the inspector beside the grid shows it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.export import show_table
from dashboard.sidebar import Context
from dashboard.theme import distance_unit
from vrf_core.analysis import top_k
from vrf_core.dawin import dawin_weights, transductive_weights
from vrf_core.evaluate import (
    ABLATION_ROWS,
    ROW_DAWIN,
    ROW_DAWIN_TRANSDUCTIVE,
    ROW_LOGIT,
    ROW_LOGIT_CAL,
    ROW_VRF_TRAIN,
    ROW_VRF_ZS,
    SplitData,
    has_distances,
    knn_array,
    temps,
)
from vrf_core.logit_ensemble import coefficients as logit_coefficients
from vrf_core.topm import softmax_rows
from vrf_core.weights import kth_distance, weight

COLUMNS = 3
PAGE_SIZE = 12
NEIGHBOURS_SHOWN = 8
SHORT = {"zero-shot": "ZS", "fine-tuned": "FT", "VRF": "VRF", ROW_LOGIT: "logit", ROW_LOGIT_CAL: "logit (T)",
         ROW_DAWIN: "DaWin", ROW_DAWIN_TRANSDUCTIVE: "DaWin (transd.)", ROW_VRF_TRAIN: "VRF train-kNN",
         ROW_VRF_ZS: "VRF ZS-feat"}
RIVALS = (ROW_LOGIT, ROW_LOGIT_CAL, ROW_DAWIN, ROW_DAWIN_TRANSDUCTIVE, ROW_VRF_TRAIN, ROW_VRF_ZS)  # inspector columns
RIVALS_SHOWN = (ROW_LOGIT_CAL, ROW_DAWIN)  # at first: the inspector has room for about two more columns
PROB_COLUMN_PX = 60  # the class and five probability columns fit the inspector of a 1440-px window


def marks(right: dict[str, bool]) -> str:
    """`✓ ZS ✗ FT ✓ VRF` in green and red."""
    return " ".join(f":{'green' if ok else 'red'}[{'✓' if ok else '✗'} {SHORT.get(m, m)}]" for m, ok in right.items())


def verdicts(view: data.SplitView, i: int) -> str:
    """The live three methods' marks on sample i."""
    return marks({m: bool(view.preds[m][i] == view.labels[i]) for m in data.METHODS_LIVE})


def _inspect(item: tuple[str, int]) -> None:
    st.session_state["inspect"] = item


def grid(ctx: Context, items: list[tuple[str, int]], key: str) -> None:
    """Thumbnails of `items` (already filtered and sorted), a page at a time."""
    if not items:
        st.info("No sample matches these filters.", icon=":material/filter_alt_off:")
        return
    pages = -(-len(items) // PAGE_SIZE)
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    page = c1.number_input("Page", 1, pages, 1, key=f"{key}-page") if pages > 1 else 1
    start = (page - 1) * PAGE_SIZE
    c2.caption(f"Showing {start + 1}–{min(start + PAGE_SIZE, len(items))} of {len(items):,} samples"
               + (f" ({pages} pages)" if pages > 1 else ""))
    current, unit = st.session_state.get("inspect"), distance_unit(ctx.params.scale)
    cols = st.columns(COLUMNS)
    for n, (split, i) in enumerate(items[start:start + PAGE_SIZE]):
        view = ctx.view.splits[split]
        with cols[n % COLUMNS].container(border=True):
            thumb = data.thumbnail(ctx.bundle, split, i)
            if thumb is not None:
                st.image(thumb, width="stretch")
            name = ctx.bundle.split_classnames(split)[view.labels[i]]
            st.markdown(f"**{name}** <small style='color:grey'>{split} #{i}</small>", unsafe_allow_html=True)
            st.caption(f"{verdicts(view, i)}  \n{unit} = {view.d[i]:.3f} · w = {view.w[i]:.2f}")
            st.button("Inspect", key=f"{key}-inspect-{split}-{i}", on_click=_inspect, args=((split, i),),
                      type="primary" if current == (split, i) else "secondary", width="stretch")


def _probabilities(ctx: Context, split: str, i: int, rivals: list[str]) -> dict[str, np.ndarray]:
    """The probabilities that enter the mixture (temperature-scaled when calibration is on), then each of
    `rivals` at its tuned values (`_rival_probabilities`)."""
    sd = data.split_data(ctx.bundle, split)
    t_zs, t_ft = (ctx.hp.t_zs, ctx.hp.t_ft) if ctx.params.calibrate else (1.0, 1.0)
    p_zs, p_ft = softmax_rows(sd.logits_zs[[i]], t_zs)[0], softmax_rows(sd.logits_ft[[i]], t_ft)[0]
    return {"zero-shot": p_zs, "fine-tuned": p_ft, "VRF": _mixture(sd, i, ctx.view.splits[split].w[i], t_zs, t_ft),
            **_rival_probabilities(ctx, split, i, rivals)}


def _mixture(sd: SplitData, i: int, w: float, t_zs: float, t_ft: float) -> np.ndarray:
    """w p_ft + (1 - w) p_zs of sample i, in float32 as `TopMSplit.mixture_preds` forms it (same argmax)."""
    w = np.float32(w)
    p_ft, p_zs = softmax_rows(sd.logits_ft[[i]], t_ft)[0], softmax_rows(sd.logits_zs[[i]], t_zs)[0]
    return w * p_ft + (np.float32(1.0) - w) * p_zs


def available_rivals(ctx: Context) -> list[str]:
    """The rivals whose probabilities the inspector can show: those of the bundle's results table."""
    rows = data.results_rows(ctx.bundle, ctx.mode)
    return [m for m in RIVALS if m in rows]


def _rival_probabilities(ctx: Context, split: str, i: int, rivals: list[str]) -> dict[str, np.ndarray]:
    """The class probabilities of each of `rivals` for sample i at the hyperparameters tuned in the sidebar's
    mode: the logit ensembles' softmax of the mixed logits, DaWin's entropy-weighted mixture, each VRF
    ablation's mixture with its own tuned (a, b, k) and distances."""
    hp, sd, chosen = ctx.hp, data.split_data(ctx.bundle, split), set(rivals)
    out = {}
    for method, alpha, (t_zs, t_ft) in ((ROW_LOGIT, hp.logit_alpha, (1.0, 1.0)),
                                        (ROW_LOGIT_CAL, hp.logit_cal_alpha, (hp.t_zs, hp.t_ft))):
        if method in chosen and alpha is not None:
            c_zs, c_ft = logit_coefficients(alpha, t_zs, t_ft)
            mixed = c_zs * np.asarray(sd.logits_zs[[i]], np.float32) + c_ft * np.asarray(sd.logits_ft[[i]], np.float32)
            out[method] = softmax_rows(mixed, 1.0)[0]
    if chosen & {ROW_DAWIN, ROW_DAWIN_TRANSDUCTIVE}:
        h_zs, h_ft = data.topm_split(ctx.bundle, ctx.mode, split).entropies()
        lambdas = {ROW_DAWIN: lambda: dawin_weights(h_zs[[i]], h_ft[[i]])[0],
                   ROW_DAWIN_TRANSDUCTIVE: lambda: transductive_weights(h_zs, h_ft)[i]}  # the offset: whole split
        for method in chosen & set(lambdas):
            out[method] = _mixture(sd, i, lambdas[method](), hp.t_zs, hp.t_ft)
    for key, method in ABLATION_ROWS.items():
        params = hp.ablations.get(key)
        if method in chosen and params is not None and has_distances(sd, params):
            d = kth_distance(knn_array(sd, params)[[i]], params.k, params.scale)
            out[method] = _mixture(sd, i, weight(d, params.a, params.b, params.rule)[0], *temps(hp, params.calibrate))
    return {m: out[m] for m in RIVALS if m in out}


def rival_choice(ctx: Context) -> list[str]:
    """The rivals given a column (and a verdict) in the inspector, chosen above its table."""
    available = available_rivals(ctx)
    if not available:
        return []
    if "insp-rivals" in st.session_state:  # another bundle may lack some
        st.session_state["insp-rivals"] = [m for m in st.session_state["insp-rivals"] if m in available]
    return st.multiselect("Rivals in the table", available, default=[m for m in RIVALS_SHOWN if m in available],
                          key="insp-rivals", placeholder="only the two models and VRF",
                          help="Each column: that method's class probabilities on this sample at the values tuned "
                               f"on {ctx.hp.tuned_on}; the marks above say whether its prediction is right.")


def inspector(ctx: Context) -> None:
    item = st.session_state.get("inspect")
    if item is None or item[0] not in ctx.view.splits or not ctx.view.splits[item[0]].preds:
        st.info("Click **Inspect** under an image to see both models' predictions, its weight and its nearest "
                "zero-shot failure training images.", icon=":material/zoom_in:")
        return
    split, i = item
    view, names = ctx.view.splits[split], ctx.bundle.split_classnames(split)
    refs = data.array(ctx.bundle, split, "refs")
    with st.container(border=True, key="inspector"):
        st.markdown(f"#### {split} #{i}")
        c1, c2 = st.columns([1, 1])
        thumb = data.thumbnail(ctx.bundle, split, i)
        if thumb is not None:
            c1.image(thumb, width="stretch")
        c2.markdown(f"**{names[view.labels[i]]}**  \n{verdicts(view, i)}\n\n"
                    f"{distance_unit(ctx.params.scale)} = **{view.d[i]:.3f}** (k = {ctx.params.k})  \n"
                    f"w = **{view.w[i]:.3f}** on the fine-tuned model")
        c2.caption(f"`{refs[i]}`")

        probs = _probabilities(ctx, split, i, rival_choice(ctx))
        if len(probs) > len(data.METHODS_LIVE):
            stored = data.method_predictions(ctx.bundle, ctx.mode, split)
            c2.markdown(f"Rivals (tuned on {ctx.hp.tuned_on}):  \n"
                        + marks({m: bool(stored[m][i] == view.labels[i]) for m in RIVALS if m in probs}))
        classes = sorted({int(c) for p in probs.values() for c in top_k(p, 5)[0]}, key=lambda c: -probs["VRF"][c])
        table = pd.DataFrame({"class": [("✓ " if c == view.labels[i] else "") + names[c] for c in classes],
                              **{m: [float(p[c]) for c in classes] for m, p in probs.items()}})
        bar = {m: st.column_config.ProgressColumn(SHORT.get(m, m), min_value=0.0, max_value=1.0, format="%.2f",
                                                  width=PROB_COLUMN_PX, help=m) for m in probs}
        st.markdown("**Top-5 classes of each method** (✓ = true label)")
        show_table(table, "inspector-top5", f"{split}-{i}-top5", hide_index=True, width="stretch", column_config=bar)
        if ctx.params.calibrate:
            st.caption(f"Temperature-scaled: T_zs = {ctx.hp.t_zs:.2f}, T_ft = {ctx.hp.t_ft:.2f}; "
                       f"VRF = {view.w[i]:.2f} · fine-tuned + {1 - view.w[i]:.2f} · zero-shot.")
        neighbours(ctx, split, i)


def neighbours(ctx: Context, split: str, i: int) -> None:
    """The k nearest ZSF training images (the first few), with their labels and the zero-shot's wrong answer."""
    zsf = ctx.bundle.split_names("zsf")
    if not zsf or not ctx.bundle.has(split, "knn_index"):
        return
    zsf = zsf[0]
    idx = data.array(ctx.bundle, split, "knn_index")[i, :ctx.params.k]
    sq = data.array(ctx.bundle, split, "knn_sqdist")[i, :ctx.params.k]
    dist = sq if ctx.params.scale == "squared" else np.sqrt(np.maximum(sq, 0))
    labels = data.array(ctx.bundle, zsf, "labels")
    preds_zs = data.array(ctx.bundle, zsf, "preds_zs") if ctx.bundle.has(zsf, "preds_zs") else None
    names = ctx.bundle.split_classnames(zsf)
    shown = min(len(idx), NEIGHBOURS_SHOWN)
    st.markdown(f"**Nearest zero-shot failure training images** ({shown} of k = {ctx.params.k})")
    cols = st.columns(4)
    for n in range(shown):
        j = int(idx[n])
        with cols[n % 4]:
            thumb = data.thumbnail(ctx.bundle, zsf, j)
            if thumb is not None:
                st.image(thumb, width="stretch")
            said = f"  \nZS said {names[preds_zs[j]]}" if preds_zs is not None else ""
            st.caption(f"**{names[labels[j]]}**{said}  \n{distance_unit(ctx.params.scale)} {dist[n]:.3f}")


# The inspector stays in view (and scrolls by itself) while the grid beside it scrolls.
STICKY = """<style>
[data-testid="stLayoutWrapper"]:has(> .st-key-inspector) {position: sticky; top: 3.75rem; z-index: 1;}
.st-key-inspector {max-height: calc(100vh - 5rem); overflow-y: auto;}
</style>"""


def browser(ctx: Context, items: list[tuple[str, int]], key: str) -> None:
    """The grid with the inspector beside it."""
    st.html(STICKY)
    left, right = st.columns([5, 4], gap="medium")
    with left:
        grid(ctx, items, key)
    with right:
        inspector(ctx)
