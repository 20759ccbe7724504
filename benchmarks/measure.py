"""What every benchmark figure shares: timing, the table row and its formatting, memory, the machine."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Row:
    figure: str
    fast: str
    baseline: str
    ratio: str
    target: str
    met: str
    note: str = ""


def timed(fn: Callable, repeats: int) -> tuple[float, object]:
    """Median wall seconds of `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.1f}x" if fast > 0 else "-"


def seconds(s: float) -> str:
    """Milliseconds below 1 s, seconds above."""
    return f"{1000 * s:.1f} ms" if s < 1 else f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not carry the parent's
    peak over a fork and exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import faiss
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU used; Python {platform.python_version()}, "
            f"numpy {np.__version__}, torch {torch.__version__}, faiss {faiss.__version__}")


def load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def table(rows: list[Row]) -> str:
    lines = ["| figure | fast | straightforward | ratio | target | met | notes |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.fast} | {r.baseline} | {r.ratio} | {r.target} | {r.met} | {r.note} |" for r in rows]
    return "\n".join(lines)
