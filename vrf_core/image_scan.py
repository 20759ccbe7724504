"""Decode-check every image of a dataset before any expensive work, so that one unreadable file
is reported with all the others at the start of a run rather than as a crash mid-extraction."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from vrf_core.data import ImageSet
from vrf_core.progress import progress


def _check_decodes(images: ImageSet, i: int) -> tuple[str, str] | None:
    ref = images.refs[i]
    try:
        if images.root and "#" not in ref:
            with Image.open(Path(images.root) / ref) as im:
                im.draft("RGB", (64, 64))  # JPEGs decode at reduced scale but still read every byte
                im.load()
                im.convert("RGB")
        else:
            images.load(i)
    except Exception as exc:  # PIL raises many types for bad files
        return ref, f"{type(exc).__name__}: {exc}"
    return None


def scan_images(images: ImageSet, workers: int = 2, chunk: int = 2048) -> list[tuple[str, str]]:
    """(ref, reason) of every sample that cannot be decoded (unreadable, truncated, not an image), in
    order. One decode per image, `workers` threads (PIL releases the GIL while decoding)."""
    bad: list[tuple[str, str]] = []
    starts = range(0, len(images), chunk)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in progress(starts, desc=f"scan {images.name}", total=len(starts)):
            idx = range(start, min(start + chunk, len(images)))
            bad += [r for r in pool.map(lambda i: _check_decodes(images, i), idx) if r is not None]
    return bad
