"""Shown when the bundle folder holds no bundle: how to build one, and a button that builds the demo."""

import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from dashboard import sidebar

root = sidebar.bundles_root()
target = root / "demo"
EXPECTED_S = 240  # roughly how long the demo build takes here, for the progress curve

st.title("VRF lab")
st.markdown(
    "Variance Reduction Fine-tuning (Zhu, Cui & Zhang, NeurIPS 2024) mixes a zero-shot and a fine-tuned CLIP per "
    "sample: the closer a test image lies to the training images that only the fine-tuned model gets right, the more "
    "it trusts the fine-tuned model. This dashboard reads **run bundles** written by `precompute`.")
st.warning(f"No bundle found under `{root}`.", icon=":material/folder_off:")
st.markdown("Build the demo bundle (a small, self-contained run) from the repository root:")
st.code(f"python -m precompute demo --out {target}", language="bash")
st.markdown("or a full run from a TOML configuration file (copy one from `recipes/` and set its dataset paths), "
            "then reload this page:")
st.code("python -m precompute run --config my_run.toml", language="bash")
st.caption("Start the dashboard on another folder with `python -m dashboard -- --bundles DIR` or the "
           "`VRF_BUNDLES` environment variable.")


@dataclass
class DemoBuild:
    """`python -m precompute demo` running as a child process, with its output lines."""

    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> "DemoBuild":
        cmd = [sys.executable, "-m", "precompute", "demo", "--out", str(target)]
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        proc = subprocess.Popen(cmd, cwd=sidebar.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        build = cls(proc)
        threading.Thread(target=build._pump, daemon=True).start()
        return build

    def _pump(self) -> None:
        """Split the output on newlines and carriage returns (progress bars redraw with \\r)."""
        buf = b""
        while chunk := self.proc.stdout.read1(4096):
            *done, buf = re.split(rb"[\r\n]", buf + chunk)
            self.lines += [line.decode(errors="replace") for line in done if line.strip()]
        if buf.strip():
            self.lines.append(buf.decode(errors="replace"))

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def fraction(self) -> float:
        """The stages have no known total: a curve of the elapsed time that only reaches 1 when done."""
        return 1.0 if not self.running else 0.95 * (1 - math.exp(-(time.monotonic() - self.started) / EXPECTED_S))


@st.cache_resource(show_spinner=False)
def builds() -> dict[str, DemoBuild]:
    """Builds in flight, shared by sessions: a reload follows the running build instead of starting another."""
    return {}


def follow(build: DemoBuild) -> None:
    bar, log = st.progress(0.0, text="Starting…"), st.empty()
    while True:
        running = build.running
        last = build.lines[-1] if build.lines else "starting…"
        bar.progress(build.fraction(), text=f"{time.monotonic() - build.started:.0f} s · {last[:110]}")
        log.code("\n".join(build.lines[-8:]) or " ", language="text")
        if not running:
            break
        time.sleep(0.3)
    if build.proc.returncode == 0:
        st.success(f"Built {target}. Loading it…")
        builds().pop(str(target), None)
        st.rerun()
    st.error(f"`python -m precompute demo` failed with exit code {build.proc.returncode}; its last output is above.")


build = builds().get(str(target))
busy = build is not None and build.running
if st.button("Build the demo bundle", type="primary", key="build-demo", icon=":material/build:", disabled=busy,
             help="Runs `python -m precompute demo` here; it takes a few minutes."):
    build = builds()[str(target)] = DemoBuild.start()
if build is not None:
    follow(build)
