"""Overview: the results table with bootstrap intervals, what was tuned where, bundle metadata."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data, sidebar
from dashboard.export import show_table
from dashboard.theme import method_color
from vrf_core.metrics import bootstrap_ci

ctx = sidebar.context()
bundle, live = ctx.bundle, ctx.live
tests = data.test_splits(bundle)
id_test = bundle.split_names("id_test")
OOD = "OOD avg"


def live_vrf_row() -> dict:
    row = {}
    for split in tests:
        correct = live.views[split].correct("VRF")
        lo, hi = bootstrap_ci(correct)
        row[split] = {"acc": float(correct.mean()), "lo": lo, "hi": hi}
    if bundle.split_names("ood"):
        row[OOD] = {"acc": live.ood_average("VRF")}
    return row


table = {**data.static_table(bundle, ctx.mode), "VRF": live_vrf_row()}
columns = tests + ([OOD] if OOD in table["VRF"] else [])


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---- headline ------------------------------------------------------------------------------
st.title(f"{bundle.name}")
st.caption(f"Bundle `{bundle.path}` · created {bundle.manifest.get('created', '?')} · "
           f"hyperparameters tuned on **{ctx.sel.tuned_on}** ({sidebar.MODES[ctx.mode]})")

if id_test:
    idt = id_test[0]
    cols = st.columns(4)
    for col, method in zip(cols, ("zero-shot", "fine-tuned", "OSE (calibrated)", "VRF")):
        ref = table["fine-tuned"]
        with col:
            st.markdown(f"<span style='color:{method_color(method)};font-weight:600'>● {method}</span>",
                        unsafe_allow_html=True)
            delta = None if method == "fine-tuned" else \
                f"{100 * (table[method][idt]['acc'] - ref[idt]['acc']):+.1f} pp vs fine-tuned"
            st.metric(f"{method} · ID test ({idt})", pct(table[method][idt]["acc"]), delta)
            if OOD in table[method]:
                delta = None if method == "fine-tuned" else \
                    f"{100 * (table[method][OOD]['acc'] - ref[OOD]['acc']):+.1f} pp vs fine-tuned"
                st.metric(f"{method} · {OOD}", pct(table[method][OOD]["acc"]), delta)
    if OOD in table["VRF"]:
        zs, ft, vrf = (table[m] for m in ("zero-shot", "fine-tuned", "VRF"))
        st.info(
            f"Fine-tuning moves ID test accuracy from {pct(zs[idt]['acc'])} to {pct(ft[idt]['acc'])} while the "
            f"average over {len(bundle.split_names('ood'))} shifted test sets goes from {pct(zs[OOD]['acc'])} to "
            f"{pct(ft[OOD]['acc'])}. With the current weights (a = {ctx.params.a:.3f}, b = {ctx.params.b:.3f}, "
            f"k = {ctx.params.k}, {ctx.params.rule}), VRF reaches {pct(vrf[idt]['acc'])} ID and "
            f"{pct(vrf[OOD]['acc'])} OOD on average.", icon=":material/lightbulb:")

# ---- results table ---------------------------------------------------------------------------
st.subheader("Results")
st.caption("Top-1 accuracy (%) with 95% bootstrap intervals (1,000 resamples). Every method uses the "
           f"hyperparameters tuned on {ctx.sel.tuned_on}; the VRF row follows the sidebar controls. "
           "OOD avg is the unweighted mean over the shifted test sets.")

names = {s: f"{s} ({'ID' if bundle.splits[s]['role'] == 'id_test' else 'OOD'})" for s in tests}
shown = pd.DataFrame(
    {names.get(c, c): [100 * table[m][c]["acc"] if c in table[m] else np.nan for m in table] for c in columns},
    index=pd.Index(list(table), name="method"))
intervals = {names.get(c, c): [f"{100 * table[m][c]['lo']:.1f}–{100 * table[m][c]['hi']:.1f}"
                               if "lo" in table[m].get(c, {}) else "" for m in table] for c in columns}
long = pd.DataFrame([{"method": m, "split": c, **table[m][c]} for m in table for c in columns if c in table[m]])


def highlight(df: pd.DataFrame) -> pd.DataFrame:
    styles = pd.DataFrame("", index=df.index, columns=df.columns)
    for c in df.columns:
        styles.loc[df[c] == df[c].max(), c] = "font-weight: 700; background-color: #E8F1FA"
    styles.loc["VRF"] = styles.loc["VRF"] + "; color: " + method_color("VRF")
    return styles


with_ci = st.toggle("Show the 95% intervals", value=True, key="ov-ci", persist_state="session")
view = shown.copy()
if with_ci:
    view = pd.DataFrame({c: [f"{v:.1f}  ({ci})" if ci else f"{v:.1f}" for v, ci in zip(shown[c], intervals[c])]
                         for c in shown.columns}, index=shown.index)
    styler = view.style.apply(lambda _: highlight(shown), axis=None)
else:
    styler = view.style.format("{:.1f}").apply(highlight, axis=None)
show_table(styler, "results", f"{bundle.name}-results", csv=long, width="stretch",
           column_config={"_index": st.column_config.Column(width="medium")})
st.caption("Bold: best in the column. `select: …` rows route each sample wholly to one model with an OOD score "
           "at the threshold that keeps 95% of the validation split.")

# ---- what was tuned where -------------------------------------------------------------------
st.subheader("What was tuned on which split")
sels = {mode: data.selection(bundle, mode) for mode in sidebar.MODES if mode in bundle.manifest["selection"]}


def fmt(x) -> str:
    return "—" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


rows = {"tuned on split": {m: s.tuned_on for m, s in sels.items()},
        "T zero-shot": {m: fmt(s.t_zs) for m, s in sels.items()},
        "T fine-tuned": {m: fmt(s.t_ft) for m, s in sels.items()},
        "WSE alpha": {m: fmt(s.wse_alpha) for m, s in sels.items()},
        "OSE alpha": {m: fmt(s.ose_alpha) for m, s in sels.items()},
        "OSE (calibrated) alpha": {m: fmt(s.ose_cal_alpha) for m, s in sels.items()}}
for field in ("a", "b", "k", "rule", "scale", "calibrate"):
    rows[f"VRF {field}"] = {m: fmt(getattr(s.vrf, field)) for m, s in sels.items()}
for name in sorted({n for s in sels.values() for n in s.selective_thresholds}):
    rows[f"threshold {name}"] = {m: fmt(s.selective_thresholds.get(name)) for m, s in sels.items()}
tuned = pd.DataFrame(rows).T
tuned.columns = [sidebar.MODES[m] for m in tuned.columns]
tuned["current controls"] = ""
for field in ("a", "b", "k", "rule", "scale", "calibrate"):
    tuned.loc[f"VRF {field}", "current controls"] = fmt(getattr(ctx.params, field))
tuned = tuned.rename_axis("hyperparameter").reset_index()
show_table(tuned, "tuned", f"{bundle.name}-selection", hide_index=True, width="stretch")

# ---- bundle metadata ---------------------------------------------------------------------------
st.subheader("Bundle")
m = bundle.manifest
zsf = m.get("zsf", {})
c1, c2, c3 = st.columns(3)
c1.metric("classes", m.get("num_classes", len(bundle.classnames)))
c2.metric("ZSF set |V|", f"{zsf.get('size', '?'):,}" if isinstance(zsf.get("size"), int) else "?",
          help="Training samples the fine-tuned model gets right and the zero-shot model wrong.")
c3.metric("ID training samples", f"{zsf.get('train_size', 0):,}")
splits = pd.DataFrame([{"split": n, "role": s["role"], "samples": s["n"],
                        "classes": len(bundle.split_classnames(n)),
                        "projection": "subset/grouped" if s.get("projection") else "",
                        "source": ", ".join(f"{k}={v}" for k, v in (s.get("source") or {}).items())}
                       for n, s in bundle.splits.items()])
show_table(splits, "splits", f"{bundle.name}-splits", hide_index=True, width="stretch")
with st.expander("Models, preprocessing, ensemble settings and versions"):
    st.json({k: m.get(k) for k in ("models", "preprocessing", "zsf", "ensemble", "embedding", "versions")},
            expanded=2)
with st.expander("Full run configuration"):
    st.json(m.get("config", {}), expanded=False)
