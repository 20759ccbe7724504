"""One progress bar and one logger for the whole pipeline (stderr, rank 0 only)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_T0 = time.perf_counter()


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def log(msg: str) -> None:
    if is_main_process():
        print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def progress(it: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterable[T]:
    return tqdm(it, desc=desc, total=total, disable=not is_main_process() or None, dynamic_ncols=True,
                leave=False, file=sys.stderr, **kw)
