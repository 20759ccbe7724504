"""The benchmark runs end to end at its small scale and prints its table (no timing is asserted:
speed targets live in docs/benchmarks.md, not in tests)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_small_prints_a_table(tmp_path):
    cmd = [sys.executable, "-m", "precompute.bench", "--scale", "small", "--repeats", "1",
           "--bundle", str(tmp_path / "bundle")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| figure | fast | straightforward | ratio |")
    figures = " ".join(rows)
    for figure in ("live re-weighting", "trade-off curves", "kNN exact", "kNN approximate", "cold start", "extraction"):
        assert figure in figures
    assert "predictions equal on every sample" in figures
