"""Dashboard cold start on the library path: a fresh process opens the bundle and computes what the
first chart shows, the zero-shot, fine-tuned and VRF accuracy of every evaluation split.

Fast: as the dashboard does it, through the top-m tables precompute stored (logits memory-mapped,
read only for rows the tables cannot decide). Straightforward: every split's logits read and
projected, full N x C mixtures. Each measurement is its own process:
`python -m benchmarks.cold {fast,full} BUNDLE` prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import Row, peak_rss_gib, ratio
from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle
from vrf_core.evaluate import vrf_preds
from vrf_core.topm import TopMSplit

ROOT = Path(__file__).resolve().parents[1]


def cold_start(path: Path, mode: str) -> dict:
    """In this (fresh) process: open the bundle, each split's three accuracies, the time and peak memory."""
    rss0 = peak_rss_gib()
    t0 = time.perf_counter()
    bundle = open_bundle(path)
    hp = bundle_adapter.hyperparameters(bundle, "validation")
    accs = {}
    for name in bundle_adapter.eval_split_names(bundle):
        if mode == "fast":
            split = bundle_adapter.topm_split(bundle, name, "validation")
            preds = [split.model_preds("zs"), split.model_preds("ft"), split.vrf_preds(hp.vrf)]
        else:
            data = bundle_adapter.eval_split(bundle, name, lazy=False)
            preds = [data.logits_zs.argmax(1), data.logits_ft.argmax(1), vrf_preds(data, hp.vrf, (hp.t_zs, hp.t_ft))]
        labels = np.asarray(bundle.array(name, "labels"))
        accs[name] = [float((p == labels).mean()) for p in preds]
    elapsed = time.perf_counter() - t0
    rss = peak_rss_gib()
    t0 = time.perf_counter()
    if mode == "fast":  # what a bundle without stored tables would cost: building them from the logits
        for name in bundle_adapter.eval_split_names(bundle):
            TopMSplit.from_split_data(bundle_adapter.eval_split(bundle, name), hp.t_zs, hp.t_ft).tables()
    return {"seconds": elapsed, "peak_rss_gib": rss, "imports_rss_gib": rss0, "accuracy": accs,
            "build_seconds": time.perf_counter() - t0}


def bench_cold(path: Path, repeats: int) -> list[Row]:
    runs: dict[str, list[dict]] = {"fast": [], "full": []}
    for _ in range(max(1, repeats // 2)):
        for mode in runs:  # alternating, so that both see the same machine load
            cmd = [sys.executable, "-m", "benchmarks.cold", mode, str(path)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    if runs["fast"][0]["accuracy"] != runs["full"][0]["accuracy"]:
        raise AssertionError("cold start: the top-m accuracies differ from the full computation")
    med = {m: (float(np.median([r["seconds"] for r in rs])), max(r["peak_rss_gib"] for r in rs))
           for m, rs in runs.items()}
    (tf, mf), (tb, mb) = med["fast"], med["full"]
    return [Row("dashboard cold start: open the bundle, zero-shot / fine-tuned / VRF accuracy of all 7 splits",
                f"{tf:.2f} s, {mf:.2f} GiB", f"{tb:.2f} s, {mb:.2f} GiB", ratio(tb, tf), "<= 5 s, <= 4 GB",
                "yes" if tf <= 5 and mf * 2**30 <= 4e9 else "no",
                f"fresh process each, median of {len(runs['fast'])}, warm OS page cache; peak RSS includes the "
                f"imports ({runs['fast'][0]['imports_rss_gib']:.2f} GiB) and the memory-mapped pages read. Fast: "
                "bundle_adapter.topm_split (the stored top-m tables, logits left unread); building the tables "
                "from the logits instead would take "
                f"{np.median([r['build_seconds'] for r in runs['fast']]):.1f} s more; straightforward: "
                "eval_split(lazy=False) and full mixtures")]


if __name__ == "__main__":
    print(json.dumps(cold_start(Path(sys.argv[2]), sys.argv[1])))
