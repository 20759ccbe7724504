"""VRF lab dashboard: `streamlit run dashboard/app.py -- --bundles DIR` (or $VRF_BUNDLES).

The entry script draws the shared sidebar, then runs the chosen page. Pages read
the shared state through `dashboard.sidebar.context()`.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from dashboard import sidebar  # noqa: E402
from vrf_core.bundle import BundleError  # noqa: E402

PAGES = [
    ("views/overview.py", "Overview", ":material/dashboard:"),
    ("views/tradeoff.py", "Trade-off", ":material/show_chart:"),
    ("views/sensitivity.py", "Sensitivity", ":material/grid_on:"),
    ("views/distances.py", "Distances", ":material/straighten:"),
    ("views/samples.py", "Samples", ":material/photo_library:"),
    ("views/embedding.py", "Embedding map", ":material/scatter_plot:"),
    ("views/per_class.py", "Per class", ":material/category:"),
    ("views/compare.py", "Compare runs", ":material/compare_arrows:"),
]
# Pages whose live part is a fragment that draws the sidebar's VRF controls (`sidebar.live_fragment`);
# every other page gets them drawn before it runs (so a page's st.stop() never leaves them out).
LIVE_PAGES = ("views/overview.py", "views/tradeoff.py")


def show_bundle_error(exc: BundleError) -> None:
    st.error(f"**This bundle cannot be read.**\n\n{exc}", icon=":material/error:")
    st.info("Pick another bundle in the sidebar, or rebuild this one with precompute.")


st.set_page_config(page_title="VRF lab", page_icon=":material/tune:", layout="wide")
st.set_option("client.toolbarMode", "viewer")  # no "Deploy" button in a local research tool
latency = sidebar.LatencyLine()
root = sidebar.bundles_root()
try:
    ctx = sidebar.render(root)
    error = None
except BundleError as exc:
    ctx, error = None, exc
st.session_state["_ctx"] = ctx

if ctx is None and error is None:
    page = st.navigation([st.Page("views/get_started.py", title="Get started", icon=":material/rocket_launch:")])
else:
    pages = {path: st.Page(path, title=title, icon=icon, default=i == 0) for i, (path, title, icon) in enumerate(PAGES)}
    page = st.navigation(list(pages.values()))
    if ctx is not None and not any(page is pages[path] for path in LIVE_PAGES):
        sidebar.draw_controls()
if error is not None:
    show_bundle_error(error)
else:
    try:
        page.run()
    except BundleError as exc:  # a file that fails only when a page reads it
        show_bundle_error(exc)
latency.show(ctx)
