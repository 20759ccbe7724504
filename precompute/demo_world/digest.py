"""Content keys of the demo world's caches: the code that generates the data is part of the content."""

from __future__ import annotations

import hashlib
from pathlib import Path


def source_digest(*module_files: str) -> str:
    """sha256 over the source of the named files of this package (e.g. "render.py")."""
    h = hashlib.sha256()
    for name in module_files:
        h.update(name.encode())
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()
