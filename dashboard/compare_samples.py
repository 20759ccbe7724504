"""The Compare runs page's samples: per shared split, those one run gets right and the other wrong for a
chosen method, filtered, as a thumbnail grid, and an inspector with both runs' top-5 probabilities.

Each run's predictions are every method of its results table at the hyperparameters it tuned
(`dashboard.data.method_predictions`, the same memo the other pages read).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.export import show_table
from vrf_core.analysis import top_k
from vrf_core.bundle import Bundle
from vrf_core.evaluate import Hyperparameters
from vrf_core.run_comparison import Disagreements, SplitMatch, disagreements
from vrf_core.topm import softmax_rows
from vrf_core.weights import kth_distance, weight

COLUMNS = 3
PAGE_SIZE = 12
ALL_CLASSES = "every class"
# The inspector stays in view beside the grid while the grid scrolls.
STICKY = """<style>
[data-testid="stLayoutWrapper"]:has(> .st-key-cmp-inspector) {position: sticky; top: 3.75rem; z-index: 1;}
.st-key-cmp-inspector {max-height: calc(100vh - 5rem); overflow-y: auto;}
</style>"""


@dataclass
class Run:
    """One compared bundle, with the hyperparameters it tuned in the page's mode and its colour."""

    label: str
    bundle: Bundle
    hp: Hyperparameters
    color: str


def split_disagreements(runs: list[Run], a: int, b: int, match: SplitMatch, method: str,
                        mode: str) -> Disagreements:
    ra, rb = runs[a], runs[b]
    return disagreements(match, a, b, data.array(ra.bundle, match.name, "labels"),
                         data.method_predictions(ra.bundle, mode, match.name)[method],
                         data.method_predictions(rb.bundle, mode, match.name)[method])


def probabilities(run: Run, split: str, i: int) -> tuple[dict[str, np.ndarray], float]:
    """Sample i's probabilities in `run` at its tuned hyperparameters: zero-shot, fine-tuned and VRF's mixture;
    and VRF's weight w on the fine-tuned model."""
    sd, p = data.split_data(run.bundle, split), run.hp.vrf
    t_zs, t_ft = (run.hp.t_zs, run.hp.t_ft) if p.calibrate else (1.0, 1.0)
    p_zs, p_ft = softmax_rows(sd.logits_zs[[i]], t_zs)[0], softmax_rows(sd.logits_ft[[i]], t_ft)[0]
    w = float(weight(kth_distance(sd.knn_sqdist[[i]], p.k, p.scale), p.a, p.b, p.rule)[0])
    return {"ZS": p_zs, "FT": p_ft, "VRF": w * p_ft + (1 - w) * p_zs}, w


def prob_style(p: float) -> str:
    """A bar-like shade: the larger the probability, the darker the cell."""
    return f"background-color: rgba(31,119,180,{0.6 * p:.2f})"


def mark(ok: bool) -> str:
    return ":green[✓]" if ok else ":red[✗]"


def _inspect(item: tuple[str, str, int]) -> None:
    st.session_state["cmp-inspect"] = item


def grid(runs: list[Run], a: int, b: int, match: SplitMatch, dis: Disagreements, keep: np.ndarray) -> None:
    """Thumbnails of the kept disagreements (from run A), a page at a time, with both runs' predictions."""
    if not len(keep):
        st.info("No sample matches these filters.", icon=":material/filter_alt_off:")
        return
    pages = -(-len(keep) // PAGE_SIZE)
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    page = c1.number_input("Page", 1, pages, 1, key="cmp-page") if pages > 1 else 1
    start = (page - 1) * PAGE_SIZE
    c2.caption(f"Showing {start + 1}–{min(start + PAGE_SIZE, len(keep))} of {len(keep):,} samples")
    names = runs[a].bundle.split_classnames(match.name)
    cols = st.columns(COLUMNS)
    for n, k in enumerate(keep[start:start + PAGE_SIZE]):
        j, y = int(dis.order[k]), int(dis.labels[k])
        with cols[n % COLUMNS].container(border=True):
            thumb = data.thumbnail(runs[a].bundle, match.name, int(dis.rows_a[k]))
            if thumb is not None:
                st.image(thumb, width="stretch")
            st.markdown(f"**{names[y]}** <small style='color:grey'>{match.name} #{int(dis.rows_a[k])}</small>",
                        unsafe_allow_html=True)
            st.caption(f"{mark(dis.pred_a[k] == y)} {runs[a].label}: {names[dis.pred_a[k]]}  \n"
                       f"{mark(dis.pred_b[k] == y)} {runs[b].label}: {names[dis.pred_b[k]]}")
            item = (runs[0].label, match.name, j)
            st.button("Inspect", key=f"cmp-inspect-{match.name}-{j}", on_click=_inspect, args=(item,),
                      type="primary" if st.session_state.get("cmp-inspect") == item else "secondary",
                      width="stretch")


def inspector(runs: list[Run], pair: tuple[int, int], matches: dict[str, SplitMatch], method: str,
              mode: str) -> None:
    """The inspected sample in both runs: the image, each run's prediction and top-5 probabilities."""
    item = st.session_state.get("cmp-inspect")  # (reference run, split, row in the reference run's order)
    if item is None or item[0] != runs[0].label or item[1] not in matches:
        st.info("Click **Inspect** under an image to see both runs' top-5 probabilities for it.",
                icon=":material/zoom_in:")
        return
    _, split, j = item
    match, a = matches[split], pair[0]
    rows = {r: int(match.rows[r][j]) for r in pair}
    names = runs[a].bundle.split_classnames(split)
    y = int(data.array(runs[a].bundle, split, "labels")[rows[a]])
    with st.container(border=True, key="cmp-inspector"):
        st.markdown(f"#### {split} · {names[y]}")
        c1, c2 = st.columns([1, 2])
        thumb = data.thumbnail(runs[a].bundle, split, rows[a])
        if thumb is not None:
            c1.image(thumb, width="stretch")
        c2.caption(f"`{data.array(runs[a].bundle, split, 'refs')[rows[a]]}`  \n"
                   + "  \n".join(f"row {rows[r]} in {runs[r].label}" for r in pair))
        for r, col in zip(pair, st.columns(2)):
            run = runs[r]
            pred = int(data.method_predictions(run.bundle, mode, split)[method][rows[r]])
            col.markdown(f"<span style='color:{run.color};font-weight:700'>■ {run.label}</span>",
                         unsafe_allow_html=True)
            probs, w = probabilities(run, split, rows[r])
            col.markdown(f"{method}: {mark(pred == y)} **{names[pred]}**  \nVRF weight w = {w:.2f}")
            classes = sorted({int(c) for p in probs.values() for c in top_k(p, 5)[0]}, key=lambda c: -probs["VRF"][c])
            table = pd.DataFrame({"class": [("✓ " if c == y else "") + names[c] for c in classes],
                                  **{m: [float(p[c]) for c in classes] for m, p in probs.items()}})
            with col:
                show_table(table.style.format("{:.2f}", subset=list(probs)).map(prob_style, subset=list(probs)),
                           f"cmp-top5-{r}", f"{run.label}-{split}-{rows[r]}-top5".replace("/", "_"), csv=table,
                           hide_index=True, width="stretch")
        st.caption("Top-5 classes of each model (✓ = true label): ZS zero-shot, FT fine-tuned, VRF their mixture "
                   "with w on FT; each run at its own tuned temperatures and weight.")


def counts_table(labels: list[str], a: int, b: int, dis: dict[str, Disagreements], shared: list[SplitMatch]
                 ) -> pd.DataFrame:
    """Per shared split: how many samples only A gets right, only B, and the net difference in points."""
    rows = []
    for m in shared:
        n_a, n_b = dis[m.name].counts()
        rows.append({"split": m.name, "samples": len(m.rows[0]), f"{labels[a]} right, {labels[b]} wrong": n_a,
                     f"{labels[b]} right, {labels[a]} wrong": n_b,
                     f"net {labels[b]} − {labels[a]} (points)": round(100 * (n_b - n_a) / len(m.rows[0]), 2)})
    return pd.DataFrame(rows)


def section(runs: list[Run], shared: list[SplitMatch], methods: list[str], mode: str) -> None:
    """Method and runs, the counts per split, the filters, the grid and the inspector."""
    labels = [r.label for r in runs]
    c1, c2, c3 = st.columns([2, 2, 2])
    with st.spinner("Each run's per-sample predictions (once per bundle; a minute at ImageNet size)…",
                    show_time=True):
        for r in runs:
            for m in shared:
                data.method_predictions(r.bundle, mode, m.name)
    available = [m for m in methods if all(m in data.method_predictions(r.bundle, mode, shared[0].name) for r in runs)]
    method = c1.selectbox("Method", available, index=available.index("VRF") if "VRF" in available else 0,
                          key="cmp-method", help="Each run's predictions at the hyperparameters it tuned.")
    a = c2.selectbox("Run A", range(len(runs)), format_func=labels.__getitem__, key="cmp-a") if len(runs) > 2 else 0
    b = c3.selectbox("Run B", [r for r in range(len(runs)) if r != a], format_func=labels.__getitem__,
                     key="cmp-b") if len(runs) > 2 else 1
    dis = {m.name: split_disagreements(runs, a, b, m, method, mode) for m in shared}
    show_table(counts_table(labels, a, b, dis, shared), "cmp-counts", "compare-disagreements", hide_index=True,
               width="stretch")

    c1, c2, c3 = st.columns([1.3, 3, 1.3])
    matches = {m.name: m for m in shared}
    default = next((i for i, m in enumerate(shared) if runs[0].bundle.splits[m.name]["role"] == "id_test"), 0)
    split = c1.selectbox("Split", list(matches), index=default, key="cmp-split")
    directions = {True: f"✓ {labels[a]}  ✗ {labels[b]}", False: f"✓ {labels[b]}  ✗ {labels[a]}"}
    a_right = c2.segmented_control("Which run is right", list(directions), format_func=directions.get, default=True,
                                   required=True, key="cmp-direction")
    d, classnames = dis[split], runs[a].bundle.split_classnames(split)
    cls = c3.selectbox("True class", [ALL_CLASSES] + sorted({int(y) for y in d.labels}), key="cmp-class",
                       format_func=lambda c: c if c == ALL_CLASSES else classnames[c])
    wanted = d.a_right == a_right
    keep = np.flatnonzero(wanted if cls == ALL_CLASSES else wanted & (d.labels == cls))
    st.html(STICKY)
    left, right = st.columns([5, 6], gap="medium")
    with left:
        grid(runs, a, b, matches[split], d, keep)
    with right:
        inspector(runs, (a, b), matches, method, mode)
