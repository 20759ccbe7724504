"""Figures and tables with their downloads: CSV for every table, HTML for every figure
(PNG through the plotly modebar's camera button)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from pandas.io.formats.style import Styler


def plot_config(filename: str) -> dict:
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}


def show_figure(fig: go.Figure, key: str, filename: str, **select) -> object:
    """Draws `fig` with an HTML download under it; `select` is passed to st.plotly_chart
    (on_select, selection_mode) and its event returned."""
    event = st.plotly_chart(fig, key=key, config=plot_config(filename), **select)
    st.download_button("Figure (HTML)", data=lambda: go.Figure(fig).update_layout(template="plotly_white").to_html(
                           include_plotlyjs=True, full_html=True),
                       file_name=f"{filename}.html", mime="text/html", key=f"{key}-html", on_click="ignore",
                       icon=":material/download:", type="tertiary",
                       help="Interactive figure for offline viewing; the camera icon above the plot saves a PNG.")
    return event


ROW_PX, ALL_ROWS_UP_TO = 35, 25


def show_table(df: pd.DataFrame | Styler, key: str, filename: str, csv: pd.DataFrame | None = None,
               **kw) -> object:
    """Draws `df` (every row when there are few) with a CSV download under it (of `csv` when the shown
    table is formatted)."""
    rows = len(df.data if isinstance(df, Styler) else df)
    if "height" not in kw and rows <= ALL_ROWS_UP_TO:
        kw["height"] = ROW_PX * (rows + 1) + 3
    event = st.dataframe(df, key=key, **kw)
    source = csv if csv is not None else df.data if isinstance(df, Styler) else df
    st.download_button("Table (CSV)", data=lambda: source.to_csv(index=False).encode(), file_name=f"{filename}.csv",
                       mime="text/csv", key=f"{key}-csv", on_click="ignore", icon=":material/download:",
                       type="tertiary")
    return event
