"""The shared sidebar: bundle picker, VRF controls, URL sync and the latency line.

Every control lives in `st.session_state` under a fixed key and is mirrored in the
URL query string, so a view can be shared by its link. Controls start at the
hyperparameters precompute chose on the validation split (or the URL's values).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import data, edges, live
from dashboard.theme import dataset_colors, distance_unit, scale_label
from vrf_core.analysis import convert_scale
from vrf_core.bundle import Bundle, BundleError, find_bundles
from vrf_core.evaluate import Hyperparameters, VRFParams
from vrf_core.weights import RULES, SCALES, kth_distance

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = {"validation": "validation split", "oracle": "ID test (oracle)"}
CONTROLS = ("a", "b", "k", "rule", "scale", "cal")


@dataclass
class Context:
    """What every page needs: the open bundle, the hyperparameters tuned in `mode`, the controls' current
    VRF parameters and every split's view under them."""

    root: Path
    bundle: Bundle
    mode: str
    hp: Hyperparameters
    params: VRFParams
    view: data.LiveView
    colors: dict[str, str]


def context() -> Context:
    """The state the entry script prepared for this run (pages call this first); in a fragment rerun
    after a control moved, with the controls' new parameters and their live view."""
    ctx = st.session_state["_ctx"]
    if ctx is not None and (params := current_params()) != ctx.params:
        ctx = replace(ctx, params=params, view=data.live_view(ctx.bundle, ctx.mode, params))
        st.session_state["_ctx"] = ctx
    return ctx


def current_params() -> VRFParams:
    """The VRF parameters the sidebar's controls hold now."""
    ss = st.session_state
    return VRFParams(float(ss["a"]), float(ss["b"]), int(ss["k"]), ss["rule"], ss["scale"], bool(ss["cal"]))


def bundles_root() -> Path:
    """`-- --bundles DIR` on the streamlit command line, else $VRF_BUNDLES, else ./bundles (the folder the
    command was started in: in a checkout, where `make demo` writes; installed, the user's own)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bundles")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.bundles or os.environ.get("VRF_BUNDLES") or Path.cwd() / "bundles")


def _label(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path != root and path.is_relative_to(root) else path.name


# ---- control ranges ---------------------------------------------------------------------

def _a_range(bundle: Bundle, scale: str) -> tuple[float, float]:
    """Slider range for a: from the 0.5% quantile at k = 1 to the 99.5% quantile at k = k_max."""
    def make() -> tuple[float, float]:
        lo, hi = math.inf, -math.inf
        for split in data.eval_splits(bundle):
            sq = data.array(bundle, split, "knn_sqdist")
            lo = min(lo, float(np.quantile(kth_distance(sq, 1, scale), 0.005)))
            hi = max(hi, float(np.quantile(kth_distance(sq, sq.shape[1], scale), 0.995)))
        return max(0.0, math.floor(lo * 20) / 20), math.ceil(hi * 20) / 20
    return data.memoize(bundle, ("a_range", scale), make)


def control_ranges(bundle: Bundle, scale: str, tuned: VRFParams) -> dict[str, tuple[float, float]]:
    """Slider ranges of a, b and k on a distance scale, wide enough for the tuned values."""
    lo, hi = _a_range(bundle, scale)
    a_t, b_t = convert_scale(tuned.a, tuned.b, tuned.scale, scale)
    return {"a": (min(lo, math.floor(a_t * 20) / 20), max(hi, math.ceil(a_t * 20) / 20)),
            "b": (0.001, max(1.0, math.ceil(2 * b_t * 10) / 10)),
            "k": (1, bundle.k_max)}


def _clip(values: dict, ranges: dict) -> dict:
    out = dict(values)
    for name, (lo, hi) in ranges.items():
        out[name] = type(lo)(min(max(values[name], lo), hi))
    return out


# ---- state <-> tuned values and URL ------------------------------------------------------

def tuned_values(hp: Hyperparameters) -> dict:
    p = hp.vrf
    return {"a": p.a, "b": p.b, "k": p.k, "rule": p.rule, "scale": p.scale, "cal": p.calibrate}


def _url_values() -> dict:
    """Valid control values found in the query string (invalid ones are ignored)."""
    q, out = st.query_params, {}
    for name, cast in (("a", float), ("b", float), ("k", int)):
        try:
            out[name] = cast(q[name])
        except (KeyError, ValueError):
            pass
    if q.get("rule") in RULES:
        out["rule"] = q["rule"]
    if q.get("scale") in SCALES:
        out["scale"] = q["scale"]
    if q.get("cal") in ("0", "1"):
        out["cal"] = q["cal"] == "1"
    if "b" in out and out["b"] <= 0:
        del out["b"]
    return out


def _apply(values: dict, bundle: Bundle, hp: Hyperparameters) -> None:
    values = _clip(values, control_ranges(bundle, values["scale"], hp.vrf))
    for name in CONTROLS:
        st.session_state[name] = values[name]
    st.session_state["_scale_prev"] = values["scale"]


def set_controls(ctx: Context, **changes) -> None:
    """For widget callbacks (e.g. a click on a curve): change some controls, clipped to their ranges."""
    live.request_full_rerun()  # the sliders must show the new values, even from a live fragment's widget
    _apply({**{n: st.session_state[n] for n in CONTROLS}, **changes}, ctx.bundle, ctx.hp)


def _reset_to_validation(bundle: Bundle) -> None:
    live.request_full_rerun()  # the mode's radio is drawn by the full run only
    st.session_state["mode"] = "validation"
    hp = data.hyperparameters(bundle, "validation")
    _apply(tuned_values(hp), bundle, hp)


def _on_scale_change(bundle: Bundle, hp: Hyperparameters) -> None:
    """Keep the weight curve in place when the distance scale flips (a and b change units)."""
    ss = st.session_state
    a, b = convert_scale(ss["a"], ss["b"], ss["_scale_prev"], ss["scale"])
    _apply({**{n: ss[n] for n in CONTROLS}, "a": a, "b": b}, bundle, hp)


def _write_url(bundle_label: str, mode: str, p: VRFParams) -> None:
    want = {"bundle": bundle_label, "tune": mode, "a": f"{p.a:.4g}", "b": f"{p.b:.4g}", "k": str(p.k),
            "rule": p.rule, "scale": p.scale, "cal": "1" if p.calibrate else "0"}
    if any(st.query_params.get(k) != v for k, v in want.items()):
        st.query_params.update(want)


# ---- the sidebar --------------------------------------------------------------------------

def pick_bundle(root: Path) -> Path | None:
    found = find_bundles(root)
    if not found:
        return None
    labels = [_label(p, root) for p in found]
    if "bundle" not in st.session_state:
        wanted = st.query_params.get("bundle")
        # `make demo` writes bundles/demo: open it first when the folder holds others too.
        st.session_state["bundle"] = wanted if wanted in labels else "demo" if "demo" in labels else labels[0]
    if st.session_state["bundle"] not in labels:
        st.session_state["bundle"] = labels[0]
    label = st.sidebar.selectbox("Bundle", labels, key="bundle", help=f"Bundles found under {root}")
    return found[labels.index(label)]


def controls(bundle: Bundle, bundle_label: str) -> tuple[str, VRFParams]:
    """The tuning mode (its radio) and the controls' state: the tuned values (or the URL's) when the
    bundle or the mode changed. The controls' widgets are drawn later, by `draw_controls`."""
    ss, side = st.session_state, st.sidebar
    modes = [m for m in MODES if m in (bundle.manifest.get("hyperparameters") or {})]
    if not modes:
        raise BundleError(f"{bundle.path / 'manifest.json'}: no tuned 'hyperparameters' for "
                          f"{' or '.join(MODES)}; rebuild the bundle with precompute")
    first = "_controls_for" not in ss
    if any(name not in ss for name in CONTROLS):  # dropped while no bundle was shown
        ss.pop("_controls_for", None)
    if ss.get("mode") not in modes:
        ss["mode"] = st.query_params.get("tune") if first and st.query_params.get("tune") in modes else modes[0]
    mode = side.radio("Hyperparameters tuned on", modes, key="mode", format_func=MODES.get, horizontal=True,
                      help="Temperatures, OSE/WSE alpha and the starting a, b, k come from this split. "
                           "The oracle (tuned on ID test) is only for comparison with the paper.")
    hp = data.hyperparameters(bundle, mode)
    if ss.get("_controls_for") != (bundle_label, mode):
        url = _url_values() if first else {}
        _apply({**tuned_values(hp), **url}, bundle, hp)
        ss["_controls_for"] = (bundle_label, mode)
    return mode, current_params()


def draw_controls() -> None:
    """The VRF controls, the tuned values beside them and the reset button, in their place in the sidebar;
    the controls written into the URL. Drawn once per run: by a page's live fragment (so a control
    change reruns that fragment alone), else after the page."""
    ctx, ss = st.session_state["_ctx"], st.session_state
    slot = live.slot("controls")
    if ctx is None or slot is None or not live.first_draw("controls"):
        return
    bundle, hp = ctx.bundle, ctx.hp
    if not live.fragment_rerun():  # a page switch would reset these page widgets: keep the values it used
        for name in CONTROLS:
            ss[name] = ss[name]
    ranges = control_ranges(bundle, ss["scale"], hp.vrf)
    unit = distance_unit(ss["scale"])
    # Drawn by a page's fragment, the controls are that page's widgets: "session" keeps them across pages.
    with slot:
        st.markdown("**VRF weight** w(x) on the fine-tuned model")
        st.slider(f"a: centre ({unit})", *ranges["a"], step=0.001, format="%.3f", key="a", persist_state="session",
                  help="Distance to the ZSF set at which w = 0.5; closer samples lean on the fine-tuned model.")
        st.slider(f"b: width ({unit})", *ranges["b"], step=0.001, format="%.3f", key="b", persist_state="session",
                  disabled=ss["rule"] == "binary", help="How gradually w falls from 1 to 0 around a (unused by "
                                                        "the binary rule).")
        st.slider("k: neighbour", *ranges["k"], key="k", persist_state="session",
                  help=f"d is the distance to the k-th nearest ZSF member (the reference rule gives k = "
                       f"{bundle.manifest.get('zsf', {}).get('k_rule_value', '?')}).")
        st.radio("Weight rule", RULES, key="rule", horizontal=True, persist_state="session",
                 help="sigmoid: 1/(1+exp((d-a)/b)); linear: clamped ramp of width 2b; binary: 1[d < a].")
        st.radio("Distance scale", SCALES, key="scale", format_func=scale_label, horizontal=True,
                 persist_state="session", on_change=_on_scale_change, args=(bundle, hp),
                 help="The paper's defaults (a = 1.5, b = 0.6) are on the squared scale. Switching converts a "
                      "and b so the weight curve stays in place.")
        st.toggle("Temperature-calibrate both models", key="cal", persist_state="session",
                  help=f"Softmax temperatures fitted on {hp.tuned_on}: T_zs = {hp.t_zs:.2f}, T_ft = {hp.t_ft:.2f}.")
        ss["_scale_prev"] = ss["scale"]
        t, params = hp.vrf, current_params()
        st.caption(f"Tuned on **{hp.tuned_on}**: a = {t.a:.3f}, b = {t.b:.3f}, k = {t.k}, {t.rule}, "
                   f"{scale_label(t.scale)}" + ("" if params == t else " · *controls changed*"))
        st.button("Reset to validation-tuned", key="reset", on_click=_reset_to_validation, args=(bundle,),
                  icon=":material/restart_alt:", width="stretch")
    _write_url(ss["bundle"], ctx.mode, params)


def render(root: Path) -> Context | None:
    """Draws the sidebar (the controls' place kept for `draw_controls`); returns None when no bundle is
    picked (the caller shows how to build one). Raises BundleError when the picked bundle cannot be opened."""
    path = pick_bundle(root)
    if path is None:
        return None
    bundle = data.load_bundle(path)
    label = st.session_state["bundle"]
    mode, params = controls(bundle, label)
    live.reserve("controls", st.sidebar.container())
    edges.show(bundle, mode)  # static per bundle and mode: drawn by the full run, under the controls
    live.reserve("latency", st.sidebar.container())
    with st.spinner(f"Re-weighting {bundle.name} (the first time builds its caches)…", show_time=True):
        view = data.live_view(bundle, mode, params)
    return Context(root, bundle, mode, data.hyperparameters(bundle, mode), params, view,
                   dataset_colors(bundle.splits))


def live_fragment(func):
    """A page's part that follows the VRF controls (`live.fragment`): the sidebar's controls are drawn by it,
    so moving one reruns it alone, with the status line after it."""
    return live.fragment(func, controls=draw_controls, status=show_latency)


class LatencyLine:
    """The status line: the VRF recompute time and the whole page's update time, in ms (from the start
    of the run, or of the fragment rerun after a control moved)."""

    def __init__(self):
        live.begin_full_run()

    def show(self, ctx: Context | None) -> None:
        """Called last (after the page), so the line counts the whole update."""
        if ctx is not None:
            draw_controls()  # when no live fragment drew them
            show_latency()


def show_latency() -> None:
    slot = live.slot("latency")
    if slot is None or not live.first_draw("latency"):
        return
    ctx = context()
    total = 1000 * (time.perf_counter() - st.session_state[live.RUN_START])
    n = sum(len(v.labels) for v in ctx.view.splits.values() if v.preds)
    slot.caption(f":material/timer: VRF recompute **{ctx.view.ms:.0f} ms** ({n:,} evaluation samples) · "
                 f"page update **{total:.0f} ms**")
