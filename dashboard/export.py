"""Figures and tables with their downloads: CSV for every table, HTML for every figure
(PNG through the plotly modebar's camera button)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st


def plot_config(filename: str) -> dict:
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}


def show_figure(fig: go.Figure, key: str, filename: str, **select) -> object:
    """Draws `fig` with an HTML download under it; `select` is passed to st.plotly_chart
    (on_select, selection_mode) and its event returned."""
    event = st.plotly_chart(fig, key=key, config=plot_config(filename), **select)
    st.download_button("Figure (HTML)", data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
                       file_name=f"{filename}.html", mime="text/html", key=f"{key}-html", on_click="ignore",
                       icon=":material/download:", type="tertiary",
                       help="Interactive figure for offline viewing; the camera icon above the plot saves a PNG.")
    return event


def show_table(df: pd.DataFrame, key: str, filename: str, csv: pd.DataFrame | None = None, **kw) -> object:
    """Draws `df` with a CSV download under it (of `csv` when the shown table is formatted)."""
    event = st.dataframe(df, key=key, **kw)
    source = df if csv is None else csv
    st.download_button("Table (CSV)", data=lambda: source.to_csv(index=False).encode(), file_name=f"{filename}.csv",
                       mime="text/csv", key=f"{key}-csv", on_click="ignore", icon=":material/download:",
                       type="tertiary")
    return event
