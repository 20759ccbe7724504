"""Selections that precompute found on the edge of their search range (manifest `tuning_edges`, written by
`vrf_core.tuning_edges`), as warnings in the sidebar and marks on the Sensitivity page. Older bundles have no such
key: nothing shows."""

from __future__ import annotations

import streamlit as st

from vrf_core.bundle import Bundle
from vrf_core.evaluate import ROW_VRF
from vrf_core.tuning_edges import edge_sentence


def tuning_edges(bundle: Bundle, mode: str) -> list[dict]:
    """The edge entries of one tuning mode: [{"name", "value", "low", "high", "at": "low" | "high"}]."""
    edges = (bundle.manifest.get("tuning_edges") or {}).get(mode) or []
    return [e for e in edges if isinstance(e, dict) and {"name", "value", "low", "high", "at"} <= set(e)]


def vrf_edges(bundle: Bundle, mode: str) -> dict[str, dict]:
    """VRF's own a, b, k at an edge, by hyperparameter ("a", "b", "k")."""
    return {e["name"].removeprefix(f"{ROW_VRF} "): e for e in tuning_edges(bundle, mode)
            if e["name"] in (f"{ROW_VRF} a", f"{ROW_VRF} b", f"{ROW_VRF} k")}


def show(bundle: Bundle, mode: str) -> None:
    """One sidebar warning listing every selection at an edge of its range (none: nothing drawn)."""
    found = tuning_edges(bundle, mode)
    if found:
        st.sidebar.warning("**At the edge of its search range**\n\n" +
                           "\n".join(f"- {edge_sentence(e)}" for e in found), icon=":material/border_outer:")
