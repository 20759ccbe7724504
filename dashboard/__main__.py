"""`python -m dashboard [streamlit options] -- --bundles DIR` (what `make dashboard` runs):
`streamlit run dashboard/app.py` with the dashboard's modules (pandas, plotly, vrf_core) imported
before the server starts, so the first visitor does not wait for them (about 0.6 s on 2 cores)."""

import sys
from pathlib import Path

import plotly.graph_objects  # noqa: F401  (imported now: the server runs the app in this process)
from streamlit.web import cli

import dashboard.data  # noqa: F401
import dashboard.export  # noqa: F401
import dashboard.gallery  # noqa: F401
import dashboard.sidebar  # noqa: F401

APP = Path(__file__).with_name("app.py")


def main() -> None:
    sys.argv = ["streamlit", "run", str(APP), *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
