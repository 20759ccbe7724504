"""Samples: test images filtered by dataset, class, who is right, d and w; galleries of the smallest and
largest d; an inspector for one image."""

import numpy as np
import streamlit as st

from dashboard import data, gallery, sidebar

ctx = sidebar.context()
bundle, live = ctx.bundle, ctx.live
ALL = "all test sets"
unit = gallery.unit(ctx)

st.title("Samples")
splits = data.test_splits(bundle) + bundle.split_names("id_val")
if not any(bundle.has(s, "thumbs_offsets") for s in splits):
    st.warning("This bundle stores no thumbnails; the grid shows the numbers only.")

c1, c2, c3 = st.columns([1.2, 1.2, 1.6], vertical_alignment="bottom")
dataset = c1.selectbox("Dataset", [ALL] + splits, index=1 if splits else 0, key="sa-dataset",
                       persist_state="session")
chosen = splits if dataset == ALL else [dataset]
names = bundle.split_classnames(chosen[0]) if dataset != ALL else []
label = c2.selectbox("Class", ["all classes"] + names, key=f"sa-class-{dataset}", disabled=dataset == ALL,
                     help="Pick one dataset to filter by class.")
MAP = "map selection"
views = ["filtered grid", "smallest d", "largest d"] + ([MAP] if st.session_state.get("map_selection") else [])
show = c3.segmented_control("Show", views, default="filtered grid",
                            required=True, key="sa-show", persist_state="session",
                            help="The galleries list the samples of the dataset (and class) closest to and farthest "
                                 "from the ZSF set, whatever the other filters; 'map selection' lists the points "
                                 "selected on the Embedding map.")

rows = {s: np.arange(len(live.views[s].labels)) for s in chosen}
if label != "all classes":
    rows = {s: r[live.views[s].labels[r] == names.index(label)] for s, r in rows.items()}

if show == MAP:
    keep = {s: set(r.tolist()) for s, r in rows.items()}
    items = [(s, i) for s, i in st.session_state["map_selection"] if i in keep.get(s, ())]
    st.caption(f"The samples of {dataset} selected on the Embedding map page.")
elif show == "filtered grid":
    with st.container(border=True):
        f1, f2, f3, f4 = st.columns(4)
        who = {}
        for col, method in zip((f1, f2, f3), data.METHODS_LIVE):
            who[method] = col.segmented_control(method, ["any", "right", "wrong"], default="any", required=True,
                                                key=f"sa-who-{method}", persist_state="session")
        order = f4.selectbox("Sort by", ["d ascending", "d descending", "w ascending", "w descending",
                                         "dataset order"], key="sa-sort", persist_state="session")
        all_d = np.concatenate([live.views[s].d[r] for s, r in rows.items()]) if rows else np.zeros(1)
        d_lo, d_hi = (float(np.floor(all_d.min() * 100) / 100), float(np.ceil(all_d.max() * 100) / 100)) \
            if len(all_d) else (0.0, 1.0)
        g1, g2 = st.columns(2)
        d_range = g1.slider(f"distance {unit}", d_lo, max(d_hi, d_lo + 0.01), (d_lo, max(d_hi, d_lo + 0.01)),
                            step=0.005, format="%.3f", key=f"sa-d-{dataset}-{label}-{ctx.params.scale}-{ctx.params.k}")
        w_range = g2.slider("weight w on fine-tuned", 0.0, 1.0, (0.0, 1.0), step=0.01, key="sa-w")
    items, keys = [], []
    for s, r in rows.items():
        v = live.views[s]
        keep = (v.d[r] >= d_range[0]) & (v.d[r] <= d_range[1]) & (v.w[r] >= w_range[0]) & (v.w[r] <= w_range[1])
        for method, want in who.items():
            if want != "any":
                keep &= v.correct(method)[r] == (want == "right")
        r = r[keep]
        items += [(s, int(i)) for i in r]
        keys.append({"d": v.d[r], "w": v.w[r]}.get(order[0], np.zeros(len(r))))
    if order != "dataset order" and items:
        sort_keys = np.concatenate(keys)
        items = [items[j] for j in np.argsort(sort_keys if "ascending" in order else -sort_keys, kind="stable")]
else:
    pool = [(s, int(i), live.views[s].d[i]) for s, r in rows.items() for i in r]
    pool.sort(key=lambda t: t[2], reverse=show == "largest d")
    items = [(s, i) for s, i, _ in pool[:gallery.PAGE_SIZE]]
    st.caption(f"The {len(items)} samples of {dataset if dataset != ALL else 'all test sets'} "
               f"{'closest to' if show == 'smallest d' else 'farthest from'} the zero-shot failure set "
               f"({unit}, k = {ctx.params.k}).")

gallery.browser(ctx, items, "sa")
