"""Live updates: when a VRF control moves, only the page's part that follows the controls reruns.

A widget in the sidebar reruns the whole app: every element (the sidebar, a page's static sections)
would be rebuilt, re-sent and redrawn. Instead a page's live part is a fragment (`fragment`) that
draws the sidebar's controls itself, into a place the full run kept for them in the sidebar
(`reserve`; Streamlit 1.67 lets a fragment write into a container created outside it). A widget a
fragment drew reruns that fragment alone, so a control change reruns the controls, the page's live
part and the status line, and nothing else. Pages without a live fragment get the controls drawn
after the page, and a full rerun, as before.

(Rerunning fragments by key from the controls' `on_change`, `st.rerun([keys])`, loses updates when
changes come faster than the reruns in Streamlit 1.67: the app stays at an older value.)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

RUN_START = "_live_run_start"  # perf_counter() when the current update began (the status line's clock)
_SLOTS, _DRAWN, _FULL_RERUN = "_live_slots", "_live_drawn", "_live_full_rerun"


def begin_full_run() -> None:
    """Called first on every full run."""
    ss = st.session_state
    ss[RUN_START] = time.perf_counter()
    ss[_SLOTS], ss[_DRAWN] = {}, set()
    ss.pop(_FULL_RERUN, None)


def reserve(name: str, container) -> None:
    """Keep `container` (created on this full run) as the place where `name` is drawn, by a fragment or not."""
    st.session_state[_SLOTS][name] = container


def slot(name: str):
    return st.session_state.get(_SLOTS, {}).get(name)


def first_draw(name: str) -> bool:
    """True the first time `name` is drawn in this run (a full run or a fragment rerun)."""
    drawn = st.session_state.setdefault(_DRAWN, set())
    if name in drawn:
        return False
    drawn.add(name)
    return True


def fragment_rerun() -> bool:
    """True while a fragment reruns alone (not as part of a full run)."""
    ctx = get_script_run_ctx()
    return ctx is not None and bool(ctx.fragment_ids_this_run)


def fragment(func: Callable, controls: Callable[[], None], status: Callable[[], None]) -> Callable:
    """`st.fragment(func)` that also draws `controls()` and then `status()` (the status line). Both have their
    place in the sidebar, so they come after the page's part: the page's result reaches the browser first."""
    @functools.wraps(func)
    def body(*args, **kwargs):
        if fragment_rerun():
            if st.session_state.pop(_FULL_RERUN, False):
                st.rerun()  # a callback changed what only a full run redraws (the tuning mode, the URL's page)
            st.session_state[RUN_START] = time.perf_counter()
            st.session_state[_DRAWN] = set()
        func(*args, **kwargs)
        controls()
        status()
    return st.fragment(body)


def request_full_rerun() -> None:
    """From a widget callback inside a live fragment: rerun the whole app instead of the fragment."""
    st.session_state[_FULL_RERUN] = True
