"""How much the demo's results table moves between machines: `python benchmarks/demo_spread.py`.

The demo is deterministic on one machine (two builds give identical reports), but its
fine-tuning runs on the CPU, and which CPU kernels torch picks (AVX-512, AVX2, plain) and
how many threads split each reduction change the last bits of every step. Those bits grow
into slightly different weights, hence different predictions near the decision boundary
and, where candidates are close, a different choice of hyperparameters on the validation
split. This builds the demo from fresh output folders under several kernel and thread
settings of this machine (what another machine would pick) and prints, per method, the
range of ID test and OOD-average accuracy and the chosen alpha or (a, b, k). Reusing
--work reuses the builds already there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> (folder, environment): what a machine with other CPU kernels or another core count would run.
# torch's own kernels, MKL (matrix products) and oneDNN (convolutions) each pick their instruction set.
VARIANTS = {
    "this machine (AVX-512, 2 threads)": ("this-machine", {}),
    "AVX2 kernels": ("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                              "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "SSE4 kernels": ("sse4", {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                              "ONEDNN_MAX_CPU_ISA": "SSE41"}),
    "1 thread": ("one-thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
}


def build(out: Path, env: dict) -> tuple[dict, float]:
    t0 = time.perf_counter()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    subprocess.run([sys.executable, "-m", "precompute", "demo", "--out", str(out), "--no-report"], cwd=ROOT,
                   env=full_env, check=True, capture_output=True)
    rep = subprocess.run([sys.executable, "-m", "precompute", "report", str(out), "--json"], cwd=ROOT,
                         env=full_env, check=True, capture_output=True, text=True)
    return json.loads(rep.stdout), time.perf_counter() - t0


def chosen(rep: dict, method: str) -> str:
    hp = rep["hyperparameters"]
    if method == "WSE":
        return f"alpha {hp['wse_alpha']}"
    if method.startswith("OSE"):
        return f"alpha {hp['ose_cal_alpha' if 'calibrated' in method else 'ose_alpha']}"
    if method == "VRF":
        v = hp["vrf"]
        return f"a {v['a']:.3f}, b {v['b']:.3f}, k {v['k']}"
    return ""


def spread_table(reports: dict[str, dict]) -> str:
    first = next(iter(reports.values()))
    test = first["columns"][1]
    lines = ["| method | ID test (%) | OOD avg (%) | chosen |", "|---|---|---|---|"]
    for method in first["rows"]:
        ids = [100 * r["rows"][method][test]["acc"] for r in reports.values()]
        oods = [100 * r["rows"][method]["OOD avg"]["acc"] for r in reports.values()]
        picks = sorted({chosen(r, method) for r in reports.values()} - {""})
        lines.append(f"| {method} | {min(ids):.1f}-{max(ids):.1f} | {min(oods):.1f}-{max(oods):.1f} | "
                     f"{'; '.join(picks)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the builds (default: a temporary one)")
    parser.add_argument("--only", nargs="*", help="variant folders (default: all): " + ", ".join(
        folder for folder, _ in VARIANTS.values()))
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="demo-spread-"))
    reports = {}
    for name, (folder, env) in VARIANTS.items():
        if args.only and folder not in args.only:
            continue
        reports[name], seconds = build(work / folder, env)  # a fresh folder per variant: no shared caches
        rows = reports[name]["rows"]
        test = reports[name]["columns"][1]
        print(f"{name}: built in {seconds:.0f} s; VRF {100 * rows['VRF'][test]['acc']:.1f} ID / "
              f"{100 * rows['VRF']['OOD avg']['acc']:.1f} OOD", file=sys.stderr)
    print(spread_table(reports))
    (work / "reports.json").write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
