"""Unpickling behind an allow-list: the mechanism of torch.load(weights_only=True), for pickles we must read.

Every global a pickle names (for GLOBAL, STACK_GLOBAL, INST and extension codes) goes through `find_class`,
and REDUCE, NEWOBJ and BUILD can only reach objects a global or a plain container produced. So when
`find_class` resolves just the (module, name) pairs in `allowed`, each to a callable we wrote (a constructor
that checks its arguments, or an inert stand-in), nothing else is ever imported or run.
A stand-in that can be a BUILD target should define `__setstate__`: without one, BUILD sets its attributes.
Objects stored outside the pickle (persistent ids, e.g. torch's tensor storages) are refused unless the caller
passes `persistent`, a function of ours that turns such an id into an inert object.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

AllowList = Mapping[tuple[str, str], Callable]
PersistentLoad = Callable[[object], object]


class SafeUnpickleError(ValueError):
    """A pickle named a global outside its allow-list, or is not one we can read; the message names the file."""


def printable_name(text: object) -> str:
    """A name from the file as one short line (STACK_GLOBAL names are arbitrary strings)."""
    text = str(text)
    return text if text.isprintable() and len(text) <= 200 else repr(text[:200])


class AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed`; `source` (a file name) starts every error."""

    def __init__(self, file: BinaryIO, allowed: AllowList, source: str, persistent: PersistentLoad | None = None):
        # encoding="bytes": Python 2 `str` (CIFAR's batches) stays raw bytes instead of being guessed as text.
        super().__init__(file, encoding="bytes")
        self.allowed, self.source, self.persistent = allowed, source, persistent

    def find_class(self, module: str, name: str) -> Callable:
        if (module, name) not in self.allowed:
            name_shown = f"{printable_name(module)}.{printable_name(name)}"
            raise SafeUnpickleError(f"{self.source}: refusing global {name_shown}, which is not in this file's "
                                    "allow-list. Nothing was imported or run")
        return self.allowed[(module, name)]

    def persistent_load(self, pid: object) -> object:
        if self.persistent is not None:
            return self.persistent(pid)
        raise SafeUnpickleError(f"{self.source}: refusing persistent id {printable_name(pid)}: this reader resolves no "
                                "objects stored outside the pickle. Nothing was imported or run")


def load_allowlisted(data: str | Path | bytes, allowed: AllowList, source: str | None = None) -> object:
    """Unpickle a file (or bytes), resolving only the globals in `allowed`; raises SafeUnpickleError."""
    source = source or (str(data) if not isinstance(data, bytes) else "pickled bytes")
    with io.BytesIO(data) if isinstance(data, bytes) else Path(data).open("rb") as file:
        try:
            return AllowListUnpickler(file, allowed, source).load()
        except SafeUnpickleError:
            raise
        except Exception as exc:  # a malformed file fails in many ways; only the allowed callables ever ran
            reason = str(exc) or type(exc).__name__
            raise SafeUnpickleError(f"{source}: not a pickle this reader accepts: {reason}") from exc
