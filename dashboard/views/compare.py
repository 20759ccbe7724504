"""Compare runs: two or more bundles' results tables side by side with their differences, their trade-off
curves overlaid, and the samples one run gets right and another wrong (dashboard/compare_samples.py).

Runs are compared on the evaluation splits they share (same name, role, classes, samples and labels;
vrf_core.run_comparison), with the hyperparameters each run tuned in the sidebar's tuning mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import compare_samples, data, sidebar
from dashboard.compare_samples import Run
from dashboard.export import ROW_PX, show_figure, show_table
from dashboard.theme import scale_label, style
from vrf_core.bundle import BundleError, find_bundles
from vrf_core.evaluate import OOD_AVG, ROLES_EVAL
from vrf_core.run_comparison import ResultsComparison, RunSplit, SplitMatch, compare_results, match_splits, ood_average

RUN_COLORS = ("#1F77B4", "#D62728", "#2CA02C", "#9467BD", "#FF7F0E", "#8C564B", "#17BECF", "#7F7F7F")
CURVE_DASH = {"OSE": "dot", "OSE (calibrated)": "dash", "WSE": "solid"}
POINT_SYMBOLS = {"zero-shot": "circle", "fine-tuned": "square", "WSE": "diamond", "OSE": "triangle-up",
                 "OSE (calibrated)": "triangle-down", "VRF": "star"}
OTHER_SYMBOLS = ("pentagon", "hexagon", "cross", "hourglass", "bowtie", "star-triangle-up")
ROLE_WORDS = {"id_val": "ID val", "id_test": "ID", "ood": "OOD"}
FINETUNE_WORDS = {"e2e": "E2E-FT", "lpft": "LP-FT", "flyp": "FLYP", "none": "given fine-tuned checkpoint"}


def run_label(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path != root and path.is_relative_to(root) else path.name


def describe(bundle) -> str:
    """Model and fine-tuning in a few words, from the manifest (what it records)."""
    models = bundle.manifest.get("models") or {}
    zs, ft = models.get("zs") or {}, models.get("ft") or {}
    name = str(ft.get("name") or zs.get("name") or "model not recorded")
    if name.startswith("local-dir:"):
        name = f"local model {Path(name.removeprefix('local-dir:')).name}"
    pretrained = zs.get("pretrained")
    settings = (ft.get("finetune") or {}).get("settings") or {}
    mode = settings.get("mode")
    if mode is None:
        how = "fine-tuning not recorded"
    else:
        how = FINETUNE_WORDS.get(mode, str(mode))
        if mode != "none":
            epochs, lr = settings.get("epochs"), settings.get("lr")
            how += "".join(part for part in (f", {epochs} epochs" if epochs else "", f", lr {lr:g}" if lr else ""))
    tag = f" ({Path(str(pretrained)).name})" if pretrained else ""
    return f"{name}{tag} · {how}"


def pick_runs(ctx: sidebar.Context) -> list[Run]:
    """Two or more bundles of the folder, the sidebar's first; stops the page with instructions otherwise."""
    found = find_bundles(ctx.root)
    labels = [run_label(p, ctx.root) for p in found]
    if len(found) < 2:
        st.info(f"Comparing needs two or more bundles under `{ctx.root}`; it holds {len(found)}. Build another run "
                "into the same folder, for example the same data with another fine-tuning mode or backbone (copy a "
                "config from `recipes/`, set `[run] out` to a new folder beside this one):", icon=":material/info:")
        st.code(f"python -m precompute run --config my_other_run.toml    # [run] out = \"{ctx.root}/other-run\"\n"
                "vrf-lab run --config my_other_run.toml                  # the same, installed", language="bash")
        st.caption("Then reload this page. Runs are compared on the evaluation splits they share (same samples).")
        st.stop()
    mine = labels[found.index(ctx.bundle.path)] if ctx.bundle.path in found else labels[0]
    if "cmp-runs" not in st.session_state:
        st.session_state["cmp-runs"] = [mine, next(lb for lb in labels if lb != mine)]
    st.session_state["cmp-runs"] = [lb for lb in st.session_state["cmp-runs"] if lb in labels]
    chosen = st.multiselect("Runs to compare (the first is the reference, A)", labels, key="cmp-runs",
                            help=f"Bundles found under {ctx.root}. Differences are each run minus the first.")
    runs = []
    for label in chosen:
        try:
            bundle = data.load_bundle(found[labels.index(label)])
        except BundleError as exc:
            st.warning(f"**{label}** left out: {exc}", icon=":material/error:")
            continue
        if ctx.mode not in bundle.manifest["hyperparameters"] or ctx.mode not in bundle.manifest["results"]:
            st.warning(f"**{label}** left out: it has no results tuned in mode '{ctx.mode}' "
                       f"({sidebar.MODES[ctx.mode]}); pick another mode in the sidebar.", icon=":material/error:")
            continue
        runs.append(Run(label, bundle, data.hyperparameters(bundle, ctx.mode), RUN_COLORS[len(runs) % 8]))
    if len(runs) < 2:
        st.info("Pick two or more runs above.", icon=":material/compare_arrows:")
        st.stop()
    return runs


def split_matches(runs: list[Run]) -> list[SplitMatch]:
    """Which evaluation splits the runs share (memoised on the reference run per set of runs)."""
    def make() -> list[SplitMatch]:
        parts = [{s: RunSplit(s, r.bundle.splits[s]["role"], data.array(r.bundle, s, "refs"),
                              data.array(r.bundle, s, "labels"), tuple(r.bundle.split_classnames(s)))
                  for s in r.bundle.split_names(*ROLES_EVAL)} for r in runs]
        return match_splits(parts, [r.label for r in runs])
    key = ("run_matches", tuple((str(r.bundle.path), r.bundle.stamp) for r in runs))
    return data.memoize(runs[0].bundle, key, make, keep=8)


def show_runs_and_splits(runs: list[Run], matches: list[SplitMatch]) -> None:
    for run, col in zip(runs, st.columns(len(runs))):
        col.markdown(f"<span style='color:{run.color};font-weight:700'>■ {run.label}</span>"
                     f"{' (A, reference)' if run is runs[0] else ''}", unsafe_allow_html=True)
        v, created = run.hp.vrf, run.bundle.manifest.get("created", "?")
        col.caption(f"{describe(run.bundle)}  \nrun `{run.bundle.name}` · created {created}"
                    f"  \ntuned on {run.hp.tuned_on}: VRF a = {v.a:.3g}, b = {v.b:.3g}, k = {v.k}, {v.rule}, "
                    f"{scale_label(v.scale)}")
    shared = [m for m in matches if m.shared]
    if shared:
        aligned = [m.name for m in shared if m.reordered]
        st.success(f"Compared on {len(shared)} shared split(s): {', '.join(m.name for m in shared)}."
                   + (f" Samples of {', '.join(aligned)} are stored in another order and were aligned by their refs."
                      if aligned else ""), icon=":material/check_circle:")
    for m in matches:
        if not m.shared:
            st.warning(f"Not compared: **{m.name}** ({m.reason}).", icon=":material/block:")


# ---- results side by side ------------------------------------------------------------------------

def column_name(split: str, role: str | None) -> str:
    return split if role is None else f"{split} ({ROLE_WORDS[role]})"


def results_frames(runs: list[Run], cmp: ResultsComparison, roles: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table as shown (accuracy %, difference in points; columns: split (the ID splits and OOD avg first,
    then each shift), then each run and each difference) and in long form for the CSV."""
    cols, long = {}, []
    order = sorted(range(len(cmp.columns)), key=lambda j: roles.get(cmp.columns[j]) == "ood")
    for j in order:
        c = cmp.columns[j]
        name = column_name(c, roles.get(c))
        for r, run in enumerate(runs):
            cols[(name, run.label)] = 100 * cmp.acc[r, :, j]
        for r, run in enumerate(runs[1:], 1):
            cols[(name, f"Δ {run.label} − {runs[0].label}")] = 100 * cmp.difference(r)[:, j]
    for r, run in enumerate(runs):
        long += [{"run": run.label, "method": m, "split": c, "acc": cmp.acc[r, i, j],
                  "minus reference": cmp.difference(r)[i, j]}
                 for i, m in enumerate(cmp.methods) for j, c in enumerate(cmp.columns)]
    shown = pd.DataFrame(cols, index=pd.Index(cmp.methods, name="method"))
    shown.columns = pd.MultiIndex.from_tuples(shown.columns)
    return shown, pd.DataFrame(long)


def diff_style(value: float) -> str:
    """Green for gains, red for losses, stronger with size (full at 5 points)."""
    if not np.isfinite(value) or abs(value) < 0.05:
        return ""
    alpha = min(abs(value) / 5, 1) * 0.55 + 0.1
    return f"background-color: rgba({'44,160,44' if value > 0 else '214,39,40'},{alpha:.2f})"


def results_section(runs: list[Run], cmp: ResultsComparison, roles: dict, shifts: list[str], mode: str) -> None:
    shown, long = results_frames(runs, cmp, roles)
    diffs = [c for c in shown.columns if c[1].startswith("Δ ")]
    styler = shown.style.format("{:.1f}", na_rep="—").format("{:+.1f}", subset=diffs, na_rep="—") \
        .map(diff_style, subset=diffs)
    show_table(styler, "cmp-results", "compare-results", csv=long, width="stretch",
               height=ROW_PX * (len(shown) + 2) + 3)  # two header rows
    avg = f"{OOD_AVG} is the mean over the {len(shifts)} shared shift(s)" if shifts else "No shared shift"
    st.caption(f"Top-1 accuracy (%) from each bundle's stored results, every method at the hyperparameters its run "
               f"tuned on its own {sidebar.MODES[mode]}; Δ: points, run minus {runs[0].label}. {avg}.")
    if cmp.only_in:
        st.caption("Methods not in every run (left out): " + "; ".join(
            f"{m} (only {', '.join(runs[r].label for r in rs)})" for m, rs in cmp.only_in.items()))


# ---- trade-off curves overlaid ----------------------------------------------------------------------

def point_symbols(runs: list[Run], mode: str) -> dict[str, str]:
    """One marker per method, the same in every run (methods without their own take the next spare one)."""
    methods = dict.fromkeys(m for r in runs for m in data.results_rows(r.bundle, mode))
    spare = iter(OTHER_SYMBOLS * (1 + len(methods) // len(OTHER_SYMBOLS)))
    return {m: "x" if m.startswith("route:") else POINT_SYMBOLS.get(m) or next(spare) for m in methods}


def zoomed(fig: go.Figure, anchors: list[float]) -> tuple[dict, dict]:
    """Axis ranges framing the anchors (ID accuracies of every point but zero-shot) and what lies above them."""
    xs = np.concatenate([np.asarray(t.x, dtype=float) for t in fig.data])
    ys = np.concatenate([np.asarray(t.y, dtype=float) for t in fig.data])
    lo, hi = min(anchors), max(anchors)
    left = lo - 0.25 * (hi - lo) - 1.0
    inside = ys[xs >= left]
    return dict(range=[left, hi + 1.0]), dict(range=[inside.min() - 1.0, inside.max() + 1.0])


def tradeoff_figure(runs: list[Run], mode: str, id_split: str, shifts: list[str], y_axis: str,
                    routing: bool, zoom: bool) -> go.Figure:
    """Each run's stored OSE/WSE curves and its methods' points, one colour per run."""
    fig, symbols, anchors = go.Figure(), point_symbols(runs, mode), []

    def ood(accs: dict):
        return ood_average(accs, shifts) if y_axis == OOD_AVG else accs[y_axis]

    hover = "<b>%{customdata}</b><br>ID %{x:.1f}%<br>OOD %{y:.1f}%<extra></extra>"
    for run in runs:
        for method, accs in data.stored_curves(run.bundle, mode).items():
            if id_split not in accs or any(s not in accs for s in shifts):
                continue
            name = f"{run.label} · {method}"
            alphas = run.bundle.wse_alphas if method == "WSE" else run.bundle.ose_alphas
            fig.add_trace(go.Scatter(x=100 * np.asarray(accs[id_split]), y=100 * np.asarray(ood(accs)),
                                     mode="lines+markers", name=name, legendgroup=run.label,
                                     customdata=[f"{name} (α {a:g})" for a in alphas], hovertemplate=hover,
                                     line=dict(color=run.color, dash=CURVE_DASH.get(method, "dashdot"), width=1.5),
                                     marker=dict(size=4)))
        for method, row in data.results_rows(run.bundle, mode).items():
            if (method.startswith("route:") and not routing) or id_split not in row \
                    or any(s not in row for s in shifts):
                continue
            accs = {s: cell["acc"] for s, cell in row.items()}
            name = f"{run.label} · {method}"
            if method != "zero-shot":
                anchors.append(100 * accs[id_split])
            fig.add_trace(go.Scatter(x=[100 * accs[id_split]], y=[100 * float(ood(accs))], mode="markers", name=name,
                                     legendgroup=run.label, customdata=[name], hovertemplate=hover,
                                     marker=dict(size=16 if method == "VRF" else 11, symbol=symbols[method],
                                                 color=run.color, line=dict(width=1, color="white"))))
    x_axis, y_axis_range = zoomed(fig, anchors) if zoom and anchors else ({}, {})
    words = f"mean of {len(shifts)} shared shifts" if y_axis == OOD_AVG else y_axis
    style(fig, height=560, xaxis=dict(title=f"ID accuracy, {id_split} (%)", showgrid=True, zeroline=False, **x_axis),
          yaxis=dict(title=f"OOD accuracy, {words} (%)", showgrid=True, zeroline=False, **y_axis_range))
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1, yanchor="top"), margin=dict(r=20))
    return fig


def tradeoff_section(runs: list[Run], mode: str, id_split: str, shifts: list[str]) -> None:
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    y_axis = c1.selectbox("OOD accuracy on the vertical axis", [OOD_AVG] + shifts, key="cmp-y",
                          format_func=lambda s: f"mean of the {len(shifts)} shared shifts" if s == OOD_AVG else s)
    routing = c2.toggle("Routing baselines", key="cmp-routing", help="Methods that send each sample to one model.")
    rows = data.results_rows(runs[0].bundle, mode)
    far = rows["fine-tuned"][id_split]["acc"] - rows["zero-shot"][id_split]["acc"] > 0.15
    zoom = c3.toggle("Zoom on the ensembles", value=far, key="cmp-zoom",
                     help="Frame the fine-tuned end, where the ensembles differ; double-click the plot to see it all.")
    fig = tradeoff_figure(runs, mode, id_split, shifts, y_axis, routing, zoom)
    st.caption("Lines: OSE (dotted), calibrated OSE (dashed) and WSE (solid) over their alphas; markers: each "
               "method at its tuned hyperparameters (★ VRF, ● zero-shot, ■ fine-tuned). One colour per run.")
    show_figure(fig, "cmp-chart", "compare-tradeoff")


ctx = sidebar.context()
st.title("Compare runs")
runs = pick_runs(ctx)
matches = split_matches(runs)
show_runs_and_splits(runs, matches)
shared = [m for m in matches if m.shared]
if not shared:
    st.error("These runs share no evaluation split (see above), so there is nothing to compare sample by sample.",
             icon=":material/block:")
    st.stop()
reference = runs[0].bundle
roles = {m.name: reference.splits[m.name]["role"] for m in shared}
shifts = [s for s, role in roles.items() if role == "ood"]
tables = [data.results_rows(r.bundle, ctx.mode) for r in runs]
comparison = compare_results(tables, list(roles), shifts)

st.subheader("Results side by side")
results_section(runs, comparison, roles, shifts, ctx.mode)

st.subheader("Trade-off curves overlaid")
id_tests = [s for s, role in roles.items() if role == "id_test"]
if id_tests and shifts:
    tradeoff_section(runs, ctx.mode, id_tests[0], shifts)
else:
    st.info("The runs share no ID test split or no shift, so there is no common trade-off to draw.")

st.subheader("Samples one run gets right and the other wrong")
compare_samples.section(runs, shared, comparison.methods, ctx.mode)
