"""Shown when the bundle folder holds no bundle: how to build one, and a button that builds the demo."""

import os
import queue
import re
import subprocess
import sys
import threading
import time

import streamlit as st

from dashboard import sidebar

root = sidebar.bundles_root()
target = root / "demo"
PERCENT = re.compile(r"(\d{1,3})%\|")

st.title("VRF lab")
st.markdown(
    "Variance Reduction Fine-tuning (Zhu, Cui & Zhang, NeurIPS 2024) mixes a zero-shot and a fine-tuned CLIP per "
    "sample: the closer a test image lies to the training images that only the fine-tuned model gets right, the more "
    "it trusts the fine-tuned model. This dashboard reads **run bundles** written by `precompute`.")
st.warning(f"No bundle found under `{root}`.", icon=":material/folder_off:")
st.markdown("Build the demo bundle (a small, self-contained run) from the repository root:")
st.code(f"python -m precompute demo --out {target}", language="bash")
st.markdown("or a full run from a configuration file, then reload this page:")
st.code("python -m precompute run --config CONFIG.yaml", language="bash")
st.caption("Start the dashboard on another folder with `streamlit run dashboard/app.py -- --bundles DIR` or the "
           "`VRF_BUNDLES` environment variable.")


def pump(stream, lines: queue.Queue) -> None:
    """Split the child's output on newlines and carriage returns (progress bars redraw with \\r)."""
    buf = b""
    while chunk := stream.read1(4096):
        buf += chunk
        *done, buf = re.split(rb"[\r\n]", buf)
        for line in done:
            if line.strip():
                lines.put(line.decode(errors="replace"))
    if buf.strip():
        lines.put(buf.decode(errors="replace"))


def build_demo() -> int:
    cmd = [sys.executable, "-m", "precompute", "demo", "--out", str(target)]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    proc = subprocess.Popen(cmd, cwd=sidebar.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
    bar = st.progress(0.0, text="Starting…")
    log = st.empty()
    tail: list[str] = []
    start, fraction = time.monotonic(), 0.0
    while proc.poll() is None or not lines.empty():
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        tail = (tail + [line])[-8:]
        if m := PERCENT.search(line):
            fraction = max(fraction, min(int(m.group(1)), 99) / 100)
        else:
            fraction = max(fraction, min(0.95, 1 - 1 / (1 + (time.monotonic() - start) / 120)))
        bar.progress(fraction, text=line[:120])
        log.code("\n".join(tail), language="text")
    bar.progress(1.0, text="Done" if proc.returncode == 0 else f"Failed (exit code {proc.returncode})")
    return proc.returncode


if st.button("Build the demo bundle", type="primary", key="build-demo", icon=":material/build:"):
    code = build_demo()
    if code == 0:
        st.success(f"Built {target}. Loading it…")
        st.rerun()
    st.error(f"`python -m precompute demo` failed with exit code {code}; see its output above.")
