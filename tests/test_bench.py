"""The benchmark runs end to end at its small scale and prints its table (no timing is asserted:
speed targets live in docs/benchmarks.md, not in tests); the synthetic world behaves as the
benchmarks assume."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from precompute.synthetic.splits import SetSpec, make_split
from precompute.synthetic.world import IMAGENET_LIKE, World

ROOT = Path(__file__).resolve().parents[1]


def test_bench_small_prints_a_table(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.bench", "--scale", "small", "--repeats", "1",
           "--bundle", str(tmp_path / "bundle")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| figure | fast | straightforward | ratio |")
    figures = " ".join(rows)
    for figure in ("workload bundle written", "derive + tuning", "bundle size on disk", "live re-weighting",
                   "trade-off curves", "kNN exact", "kNN approximate", "cold start", "extraction"):
        assert figure in figures
    assert "predictions equal on every sample" in figures
    derive_row = next(r for r in rows if "derive + tuning" in r)
    assert "chosen hyperparameters equal in both modes" in derive_row
    assert "stored results vs the straightforward derivation: equal" in derive_row


def test_synthetic_world_regime_and_projections():
    """Fine-tuned above zero-shot in distribution and below it under shift; projected splits
    (a subset, and groups covering 31.3 % of the classes) give labels and WSE predictions in the
    dataset's own classes; chunked generation covers every row."""
    world = World(1000, 512, IMAGENET_LIKE, np.random.default_rng(0))  # the regime is calibrated for these
    acc = {}
    for spec in (SetSpec("id", "id_test", 3000, 0.0), SetSpec("far", "ood", 5000, 1.0)):
        ex, shift = make_split(world, spec, [0.0, 1.0])
        acc[spec.name] = [float((ex.logits_zs.argmax(1) == ex.labels).mean()),
                          float((ex.logits_ft.argmax(1) == ex.labels).mean())]
        assert np.array_equal(ex.preds_wse[0], ex.logits_zs.argmax(1))  # alpha 0 is the zero-shot model
        assert np.array_equal(ex.preds_wse[1], ex.logits_ft.argmax(1))
        assert len(shift) == spec.n and np.isfinite(ex.features_ft).all()
    assert acc["id"][1] > acc["id"][0] + 0.05 and acc["far"][1] < acc["far"][0] - 0.05, acc
    grouped, _ = make_split(world, SetSpec("objects", "ood", 300, 0.5, 11, grouped=True), [0.5])
    assert grouped.projection.num_classes == 11 and sum(map(len, grouped.projection.groups)) == 313
    assert grouped.labels.max() < 11 and grouped.preds_wse.max() < 11 and len(grouped.classnames) == 11
