"""Samples: test images filtered by dataset, class, who is right, d and w; galleries of the smallest and
largest d; an inspector for one image."""

import numpy as np
import streamlit as st

from dashboard import data, gallery, rivals, sidebar
from dashboard.sidebar import Context
from dashboard.theme import distance_unit

ALL = "all test sets"
MAP = "map selection"
NO_OTHER = "no other method"
SORTS = ["d ascending", "d descending", "w ascending", "w descending", "dataset order"]
Items = list[tuple[str, int]]


def other_method_filter(ctx: Context) -> tuple[str, str]:
    """One more method of the results table (at its tuned values) and whether it must be right or wrong."""
    others = [m for m in rivals.ordered(data.results_rows(ctx.bundle, ctx.mode)) if m not in data.METHODS_LIVE]
    h1, h2, _ = st.columns([1.2, 1, 1.8], vertical_alignment="bottom")
    if st.session_state.get("sa-other") not in [NO_OTHER] + others:  # another bundle may lack it
        st.session_state["sa-other"] = NO_OTHER
    other = h1.selectbox("Another method", [NO_OTHER] + others, key="sa-other", persist_state="session",
                         help=f"Any method of the results table, at the hyperparameters tuned on {ctx.hp.tuned_on}: "
                              "e.g. the samples VRF gets right and DaWin wrong.")
    want = h2.segmented_control("that method is" if other == NO_OTHER else f"{other} is", ["any", "right", "wrong"],
                                default="any", required=True, key="sa-who-other", persist_state="session",
                                disabled=other == NO_OTHER)
    return other, want if other != NO_OTHER else "any"


def filtered_grid(ctx: Context, rows: dict[str, np.ndarray], dataset: str, label: str) -> Items:
    """The filters (who is right, d and w ranges, order) and the samples of `rows` that pass them."""
    views = ctx.view.splits
    with st.container(border=True):
        f1, f2, f3, f4 = st.columns(4)
        who = {method: col.segmented_control(method, ["any", "right", "wrong"], default="any", required=True,
                                             key=f"sa-who-{method}", persist_state="session")
               for col, method in zip((f1, f2, f3), data.METHODS_LIVE)}
        order = f4.selectbox("Sort by", SORTS, key="sa-sort", persist_state="session")
        other, other_want = other_method_filter(ctx)
        all_d = np.concatenate([views[s].d[r] for s, r in rows.items()]) if rows else np.zeros(1)
        d_lo, d_hi = (float(np.floor(all_d.min() * 100) / 100), float(np.ceil(all_d.max() * 100) / 100)) \
            if len(all_d) else (0.0, 1.0)
        d_hi = max(d_hi, d_lo + 0.01)
        g1, g2 = st.columns(2)
        d_range = g1.slider(f"distance {distance_unit(ctx.params.scale)}", d_lo, d_hi, (d_lo, d_hi), step=0.005,
                            format="%.3f", key=f"sa-d-{dataset}-{label}-{ctx.params.scale}-{ctx.params.k}")
        w_range = g2.slider("weight w on fine-tuned", 0.0, 1.0, (0.0, 1.0), step=0.01, key="sa-w")
    items, keys = [], []
    for s, r in rows.items():
        v = views[s]
        keep = (v.d[r] >= d_range[0]) & (v.d[r] <= d_range[1]) & (v.w[r] >= w_range[0]) & (v.w[r] <= w_range[1])
        for method, want in who.items():
            if want != "any":
                keep &= v.correct(method)[r] == (want == "right")
        if other_want != "any":
            right = data.method_predictions(ctx.bundle, ctx.mode, s)[other][r] == v.labels[r]
            keep &= right == (other_want == "right")
        r = r[keep]
        items += [(s, int(i)) for i in r]
        keys.append({"d": v.d[r], "w": v.w[r]}.get(order[0], np.zeros(len(r))))
    if order == "dataset order" or not items:
        return items
    sort_keys = np.concatenate(keys)
    return [items[j] for j in np.argsort(sort_keys if "ascending" in order else -sort_keys, kind="stable")]


def extreme_distances(ctx: Context, rows: dict[str, np.ndarray], largest: bool) -> Items:
    """One page of the samples of `rows` closest to (or farthest from) the ZSF set."""
    pool = [(s, int(i), ctx.view.splits[s].d[i]) for s, r in rows.items() for i in r]
    pool.sort(key=lambda t: t[2], reverse=largest)
    return [(s, i) for s, i, _ in pool[:gallery.PAGE_SIZE]]


ctx = sidebar.context()
st.title("Samples")
splits = data.test_splits(ctx.bundle) + ctx.bundle.split_names("id_val")
if not any(ctx.bundle.has(s, "thumbs_offsets") for s in splits):
    st.warning("This bundle stores no thumbnails; the grid shows the numbers only.")

c1, c2, c3 = st.columns([1.2, 1.2, 1.6], vertical_alignment="bottom")
dataset = c1.selectbox("Dataset", [ALL] + splits, index=1 if splits else 0, key="sa-dataset",
                       persist_state="session")
chosen = splits if dataset == ALL else [dataset]
names = ctx.bundle.split_classnames(chosen[0]) if dataset != ALL else []
label = c2.selectbox("Class", ["all classes"] + names, key=f"sa-class-{dataset}", disabled=dataset == ALL,
                     help="Pick one dataset to filter by class.")
show = c3.segmented_control("Show", ["filtered grid", "smallest d", "largest d"]
                            + ([MAP] if st.session_state.get("map_selection") else []),
                            default="filtered grid", required=True, key="sa-show", persist_state="session",
                            help="The galleries list the samples of the dataset (and class) closest to and farthest "
                                 "from the ZSF set, whatever the other filters; 'map selection' lists the points "
                                 "selected on the Embedding map.")

rows = {s: np.arange(len(ctx.view.splits[s].labels)) for s in chosen}
if label != "all classes":
    rows = {s: r[ctx.view.splits[s].labels[r] == names.index(label)] for s, r in rows.items()}
if show == MAP:
    keep = {s: set(r.tolist()) for s, r in rows.items()}
    items = [(s, i) for s, i in st.session_state["map_selection"] if i in keep.get(s, ())]
    st.caption(f"The samples of {dataset} selected on the Embedding map page.")
elif show == "filtered grid":
    items = filtered_grid(ctx, rows, dataset, label)
else:
    items = extreme_distances(ctx, rows, largest=show == "largest d")
    st.caption(f"The {len(items)} samples of {dataset} {'closest to' if show == 'smallest d' else 'farthest from'} "
               f"the zero-shot failure set ({distance_unit(ctx.params.scale)}, k = {ctx.params.k}).")
gallery.browser(ctx, items, "sa")
