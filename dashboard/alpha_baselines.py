"""The Trade-off page's "Baselines at a chosen alpha": OSE (calibrated or not) at any alpha, exactly from the
top-m tables, and WSE at any of the bundle's alphas, beside VRF at the sidebar's controls and the two models."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.sidebar import Context
from vrf_core.evaluate import OOD_AVG


def baseline_controls(ctx: Context) -> tuple[float, bool, float | None]:
    """OSE alpha, calibrated or not, and a WSE alpha (None when the bundle has no WSE predictions)."""
    hp, alphas = ctx.hp, ctx.bundle.wse_alphas
    c1, c2, c3 = st.columns([2, 1, 2], vertical_alignment="bottom")
    ose_alpha = c1.slider("OSE alpha (weight on the fine-tuned model)", 0.0, 1.0, float(hp.ose_alpha), 0.01,
                          key="to-ose-alpha", help="Any value, computed exactly from the top-m tables.")
    ose_cal = c2.toggle("calibrated OSE", key="to-ose-cal", help=f"Temperatures fitted on {hp.tuned_on}.")
    if not alphas or any(data.wse_preds(ctx.bundle, s) is None for s in data.test_splits(ctx.bundle)):
        return ose_alpha, ose_cal, None
    wse_alpha = c3.select_slider("WSE alpha", options=alphas, key="to-wse-alpha",
                                 value=hp.wse_alpha if hp.wse_alpha in alphas else alphas[-1],
                                 help="The alphas whose interpolated weights precompute evaluated.")
    return ose_alpha, ose_cal, wse_alpha


def baselines_table(ctx: Context, shifts: tuple[str, ...], ose_alpha: float, ose_cal: bool,
                    wse_alpha: float | None) -> pd.DataFrame:
    """Accuracy (%) per test split and OOD avg: OSE and WSE at the chosen alphas, VRF at the sidebar's controls
    and the two models."""
    tests, views = data.test_splits(ctx.bundle), ctx.view.splits
    compare = {f"OSE{' (calibrated)' if ose_cal else ''}, alpha = {ose_alpha:.2f}":
               {s: data.ose_accuracy(ctx.bundle, ctx.mode, s, ose_alpha, ose_cal) for s in tests}}
    if wse_alpha is not None:
        i = ctx.bundle.wse_alphas.index(wse_alpha)
        compare[f"WSE, alpha = {wse_alpha:g}"] = {
            s: float((data.wse_preds(ctx.bundle, s)[i] == views[s].labels).mean()) for s in tests}
    for method in ("VRF", "fine-tuned", "zero-shot"):
        label = "VRF (sidebar controls)" if method == "VRF" else method
        compare[label] = {s: views[s].accuracy(method) for s in tests}
    for row in compare.values():
        row[OOD_AVG] = float(np.mean([row[s] for s in shifts]))
    return (pd.DataFrame(compare).T.rename_axis("method") * 100).round(1).reset_index()
