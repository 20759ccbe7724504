"""`python -m dashboard [streamlit options] -- --bundles DIR` (what `make dashboard` runs):
`streamlit run dashboard/app.py` with the dashboard's modules (pandas, plotly, vrf_core) imported
before the server starts, so the first visitor does not wait for them (about 0.6 s on 2 cores).
The app is found next to this file, so the same works from an installed vrf-lab (`vrf-lab dashboard`)."""

import sys
from pathlib import Path

import plotly.graph_objects  # noqa: F401  (imported now: the server runs the app in this process)
from streamlit.web import cli

import dashboard.data  # noqa: F401
import dashboard.export  # noqa: F401
import dashboard.gallery  # noqa: F401
import dashboard.sidebar  # noqa: F401

APP = Path(__file__).with_name("app.py")
# A local research tool: no usage statistics sent, no "Deploy" button; no full garbage collection after every
# run, a 40-100 ms pause of the server on each control change (any of these can be overridden).
DEFAULTS = {"--runner.postScriptGC": "false", "--browser.gatherUsageStats": "false", "--client.toolbarMode": "viewer"}


def streamlit_argv(args: list[str]) -> list[str]:
    """`streamlit run app.py` with the user's options, the defaults above where the user gave none,
    and the app's own arguments (from `--` on) last."""
    cut = args.index("--") if "--" in args else len(args)
    ours, app_args = args[:cut], args[cut:]
    given = {a.split("=", 1)[0] for a in ours if a.startswith("--")}
    extra = [x for k, v in DEFAULTS.items() if k not in given for x in (k, v)]
    return ["streamlit", "run", str(APP), *ours, *extra, *app_args]


def main(args: list[str] | None = None) -> None:
    """Runs the server (until Ctrl-C); `args` are this command's arguments (default: sys.argv[1:])."""
    sys.argv = streamlit_argv(sys.argv[1:] if args is None else args)
    cli.main()


if __name__ == "__main__":
    main()
