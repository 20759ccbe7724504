"""Overview: the results table with bootstrap intervals, what was tuned where, bundle metadata."""

import numpy as np
import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from dashboard import data, rivals, sidebar
from dashboard.export import show_table
from dashboard.sidebar import Context
from dashboard.theme import CEILING_COLOR, method_color
from vrf_core.evaluate import OOD_AVG
from vrf_core.metrics import bootstrap_ci

VRF_FIELDS = ("a", "b", "k", "rule", "scale", "calibrate")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def fmt(x) -> str:
    return "—" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def results(ctx: Context) -> dict:
    """The stored results table ({method: {split: {acc, lo, hi}}}) with the VRF row at the sidebar's controls."""
    vrf = {}
    for split in data.test_splits(ctx.bundle):
        correct = ctx.view.splits[split].correct("VRF")
        lo, hi = bootstrap_ci(correct)
        vrf[split] = {"acc": float(correct.mean()), "lo": lo, "hi": hi}
    if ctx.bundle.split_names("ood"):
        vrf[OOD_AVG] = {"acc": ctx.view.ood_average("VRF")}
    return {**data.results_rows(ctx.bundle, ctx.mode), "VRF": vrf}


def headline(ctx: Context, table: dict, idt: str) -> None:
    """Four methods' ID test and OOD average accuracy, and what fine-tuning and VRF do to them."""
    ref = table["fine-tuned"]
    for col, method in zip(st.columns(4), ("zero-shot", "fine-tuned", "OSE (calibrated)", "VRF")):
        with col:
            st.markdown(f"<span style='color:{method_color(method)};font-weight:600'>● {method}</span>",
                        unsafe_allow_html=True)
            for split, label in ((idt, f"ID test ({idt})"), (OOD_AVG, OOD_AVG)):
                if split not in table[method]:
                    continue
                delta = None if method == "fine-tuned" else \
                    f"{100 * (table[method][split]['acc'] - ref[split]['acc']):+.1f} pp vs fine-tuned"
                st.metric(f"{method} · {label}", pct(table[method][split]["acc"]), delta)
    if OOD_AVG in table["VRF"]:
        zs, ft, vrf, p = table["zero-shot"], table["fine-tuned"], table["VRF"], ctx.params
        st.info(
            f"Fine-tuning moves ID test accuracy from {pct(zs[idt]['acc'])} to {pct(ft[idt]['acc'])} while the "
            f"average over {len(ctx.bundle.split_names('ood'))} shifted test sets goes from {pct(zs[OOD_AVG]['acc'])} "
            f"to {pct(ft[OOD_AVG]['acc'])}. With the current weights (a = {p.a:.3f}, b = {p.b:.3f}, k = {p.k}, "
            f"{p.rule}), VRF reaches {pct(vrf[idt]['acc'])} ID and {pct(vrf[OOD_AVG]['acc'])} OOD on average.",
            icon=":material/lightbulb:")


def highlight(shown: pd.DataFrame) -> pd.DataFrame:
    """CSS per cell: the column's best in bold, the VRF row in its colour."""
    best = np.where(shown.eq(shown.max()), "font-weight: 700; background-color: #E8F1FA", "")  # per column
    styles = pd.DataFrame(best, index=shown.index, columns=shown.columns)
    styles.loc["VRF"] = styles.loc["VRF"] + "; color: " + method_color("VRF")
    return styles


def results_table(ctx: Context, table: dict, with_ci: bool) -> tuple[Styler, pd.DataFrame]:
    """The results as shown (accuracy in %, optionally with its interval) and in long form for the CSV."""
    tests = data.test_splits(ctx.bundle)
    columns = tests + ([OOD_AVG] if OOD_AVG in table["VRF"] else [])
    names = {s: f"{s} ({'ID' if ctx.bundle.splits[s]['role'] == 'id_test' else 'OOD'})" for s in tests}
    shown = pd.DataFrame(
        {names.get(c, c): [100 * table[m][c]["acc"] if c in table[m] else np.nan for m in table] for c in columns},
        index=pd.Index(list(table), name="method"))
    long = pd.DataFrame([{"method": m, "split": c, **table[m][c]} for m in table for c in columns if c in table[m]])
    if not with_ci:
        return shown.style.format("{:.1f}").apply(highlight, axis=None), long
    intervals = {names.get(c, c): [f"{100 * table[m][c]['lo']:.1f}–{100 * table[m][c]['hi']:.1f}"
                                   if "lo" in table[m].get(c, {}) else "" for m in table] for c in columns}
    text = pd.DataFrame({c: [f"{v:.1f}  ({ci})" if ci else f"{v:.1f}" for v, ci in zip(shown[c], intervals[c])]
                         for c in shown.columns}, index=shown.index)
    return text.style.apply(lambda _: highlight(shown), axis=None), long


def ranking_line(ctx: Context, table: dict, idt: str) -> None:
    """Where VRF (current controls) ranks among every method of the table on ID test and on the OOD average, and
    the best method on each; the per-sample ceiling is a reference, not a method, so it is not ranked."""
    parts = []
    for split, label in ((idt, "ID test"), (OOD_AVG, OOD_AVG)):
        accs = {m: row[split]["acc"] for m, row in table.items() if split in row}
        if "VRF" in accs:
            best = max(accs, key=accs.get)
            rank = 1 + sum(a > accs["VRF"] for a in accs.values())
            parts.append(f"{label}: VRF ranks **{rank} of {len(accs)}**, best {best} ({pct(accs[best])})")
    if parts:
        st.markdown(" · ".join(parts) + ".", help="Among the rows of the results table below, the VRF row at the "
                                                  "sidebar's controls; ties share a rank.")


def ceiling_line(ctx: Context) -> None:
    """The per-sample ceiling under the table: a reference, not a method (never ranked or highlighted)."""
    ceiling = data.ceiling(ctx.bundle, ctx.mode)
    cells = " · ".join(f"{s} **{pct(ceiling[s])}**" for s in data.test_splits(ctx.bundle) + [OOD_AVG] if s in ceiling)
    if cells:
        st.markdown(f"<span style='color:{CEILING_COLOR}'>┄ Per-sample ceiling, {rivals.CEILING}: {cells}</span>",
                    unsafe_allow_html=True,
                    help="The fraction of samples at least one of the two models gets right: what a perfect "
                         "per-sample choice between them would reach. A reference, not a method: not ranked.")


def tuned_table(ctx: Context) -> pd.DataFrame:
    """Every tuned hyperparameter per tuning mode, beside the sidebar's current VRF values."""
    hps = {mode: data.hyperparameters(ctx.bundle, mode) for mode in sidebar.MODES
           if mode in ctx.bundle.manifest["hyperparameters"]}
    rows = {"tuned on split": {m: h.tuned_on for m, h in hps.items()},
            "T zero-shot": {m: fmt(h.t_zs) for m, h in hps.items()},
            "T fine-tuned": {m: fmt(h.t_ft) for m, h in hps.items()},
            "WSE alpha": {m: fmt(h.wse_alpha) for m, h in hps.items()},
            "OSE alpha": {m: fmt(h.ose_alpha) for m, h in hps.items()},
            "OSE (calibrated) alpha": {m: fmt(h.ose_cal_alpha) for m, h in hps.items()}}
    for name in VRF_FIELDS:
        rows[f"VRF {name}"] = {m: fmt(getattr(h.vrf, name)) for m, h in hps.items()}
    for name in sorted({n for h in hps.values() for n in h.routing_thresholds}):
        rows[f"threshold {name}"] = {m: fmt(h.routing_thresholds.get(name)) for m, h in hps.items()}
    rows.update(rivals.tuned_rows(hps, fmt))
    tuned = pd.DataFrame(rows).T
    tuned.columns = [sidebar.MODES[m] for m in tuned.columns]
    tuned["current controls"] = ""
    for name in VRF_FIELDS:
        tuned.loc[f"VRF {name}", "current controls"] = fmt(getattr(ctx.params, name))
    return tuned.rename_axis("hyperparameter").reset_index()


def bundle_section(ctx: Context) -> None:
    """Class and ZSF counts, the splits, and the manifest's settings."""
    m = ctx.bundle.manifest
    zsf = m.get("zsf", {})
    c1, c2, c3 = st.columns(3)
    c1.metric("classes", m.get("num_classes", len(ctx.bundle.classnames)))
    c2.metric("ZSF set |V|", f"{zsf.get('size', '?'):,}" if isinstance(zsf.get("size"), int) else "?",
              help="Training samples the fine-tuned model gets right and the zero-shot model wrong.")
    c3.metric("ID training samples", f"{zsf.get('train_size', 0):,}")
    splits = pd.DataFrame([{"split": n, "role": s["role"], "samples": s["n"],
                            "classes": len(ctx.bundle.split_classnames(n)),
                            "projection": "subset/grouped" if s.get("projection") else "",
                            "source": ", ".join(f"{k}={v}" for k, v in (s.get("source") or {}).items())}
                           for n, s in ctx.bundle.splits.items()])
    show_table(splits, "splits", f"{ctx.bundle.name}-splits", hide_index=True, width="stretch")
    with st.expander("Models, preprocessing, ensemble settings and versions"):
        st.json({k: m.get(k) for k in ("models", "preprocessing", "zsf", "ensemble", "embedding", "versions")},
                expanded=2)
    with st.expander("Full run configuration"):
        st.json(m.get("config", {}), expanded=False)


@sidebar.live_fragment
def live_sections() -> None:
    """Everything that follows the VRF controls: the headline, the results and the tuned values."""
    ctx = sidebar.context()
    table = rivals.ordered(results(ctx))
    if ctx.bundle.split_names("id_test"):
        headline(ctx, table, ctx.bundle.split_names("id_test")[0])
        ranking_line(ctx, table, ctx.bundle.split_names("id_test")[0])

    st.subheader("Results")
    st.caption("Top-1 accuracy (%) with 95% bootstrap intervals (1,000 resamples). Every method uses the "
               f"hyperparameters tuned on {ctx.hp.tuned_on}; the VRF row follows the sidebar controls. "
               f"{OOD_AVG} is the unweighted mean over the shifted test sets.")
    with_ci = st.toggle("Show the 95% intervals", value=True, key="ov-ci", persist_state="session")
    styler, long = results_table(ctx, table, with_ci)
    show_table(styler, "results", f"{ctx.bundle.name}-results", csv=long, width="stretch",
               column_config={"_index": st.column_config.Column(width="medium")})
    ceiling_line(ctx)
    st.caption("Bold: best in the column. `route: …` rows route each sample wholly to one model with an OOD "
               "score at the threshold that keeps 95% of the validation split.")

    st.subheader("What was tuned on which split")
    show_table(tuned_table(ctx), "tuned", f"{ctx.bundle.name}-hyperparameters", hide_index=True, width="stretch")


ctx = sidebar.context()
st.title(f"{ctx.bundle.name}")
st.caption(f"Bundle `{ctx.bundle.path}` · created {ctx.bundle.manifest.get('created', '?')} · "
           f"hyperparameters tuned on **{ctx.hp.tuned_on}** ({sidebar.MODES[ctx.mode]})")
live_sections()

st.subheader("Bundle")
bundle_section(ctx)
