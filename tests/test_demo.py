"""A reduced demo world builds through the real pipeline, its bundle opens, and `report --json` matches it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    subprocess.run(
        [sys.executable, "-m", "precompute", "demo", "--small", "--out", str(out), "--no-report"],
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    return out


def test_small_demo_bundle_opens_with_every_role(demo_bundle):
    bundle = open_bundle(demo_bundle, verify=True)
    assert {s["role"] for s in bundle.splits.values()} == {"id_train", "zsf", "id_val", "id_test", "ood"}
    assert set(bundle.split_names("ood")) == {"v2", "sketch", "rendition", "hard", "clutter"}
    assert bundle_adapter.projection(bundle, "hard") is not None and bundle_adapter.projection(bundle, "hard").is_subset
    assert bundle.manifest["models"]["zs"]["name"].startswith("local-dir:")
    coords = np.asarray(bundle.array("test", "umap"))
    assert coords.shape == (bundle.splits["test"]["n"], 2) and np.isfinite(coords).any()


def test_small_demo_report_json_matches_arrays(demo_bundle):
    out = subprocess.run(
        [sys.executable, "-m", "precompute", "report", str(demo_bundle), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rep = json.loads(out.stdout)
    bundle = open_bundle(demo_bundle)
    for split in rep["columns"][:-1]:
        data = bundle_adapter.eval_split(bundle, split, lazy=False)
        assert rep["rows"]["fine-tuned"][split]["acc"] == pytest.approx(
            (data.logits_ft.argmax(1) == data.labels).mean()
        )
        assert rep["rows"]["zero-shot"][split]["acc"] == pytest.approx((data.logits_zs.argmax(1) == data.labels).mean())


def test_small_demo_bundle_is_schema_2_and_its_results_rederive_exactly(demo_bundle):
    bundle = open_bundle(demo_bundle)
    assert bundle.manifest["schema_version"] == 2
    assert not any("logits_wse" in rel for rel in bundle.manifest["files"])
    out = subprocess.run([sys.executable, "-m", "precompute", "report", str(demo_bundle), "--recompute", "--json"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["recomputed"] == {**json.loads(out.stdout)["recomputed"], "agrees": True,
                                                    "differences": []}
