"""Reads pickled CIFAR batches without unpickling them.

The CIFAR "python version" batches are Python 2 pickles (protocol 2) of a dict
{batch_label, labels, data, filenames} whose `data` is a numpy uint8 array. Unpickling would
call whatever the file names, so this module interprets the pickle opcodes itself and only
builds plain values: dicts, lists, tuples, str, bytes, ints, bools, None, and numpy arrays that
it assembles from their raw bytes. A file may name only numpy's `_reconstruct`, `ndarray` and
`dtype`; any other global is refused before anything is built, and nothing is ever imported or
called. Protocols 2-4 as written by Python 2 or 3 are understood (Python 2 `str` becomes bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from vrf_core.data import DatasetError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
}
_NUMERIC_KINDS = "biuf"


@dataclass(frozen=True)
class _Global:
    role: str  # a value of _ALLOWED_GLOBALS


class _Mark:
    pass


_MARK = _Mark()


class _PendingDtype:
    def __init__(self, descr: str):
        self.descr = descr
        self.byteorder = "|"


class _PendingArray:
    """`_reconstruct(ndarray, ...)` before its BUILD state arrives; `array` is set by BUILD."""

    def __init__(self):
        self.array: np.ndarray | None = None


def _text(value, what: str, fail) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        fail(f"{what} must be a string, got {type(value).__name__}")
    return value


class _Reader:
    def __init__(self, blob: bytes, where: str):
        self.blob, self.where, self.pos = blob, where, 0
        self.stack: list = []
        self.memo: dict[int, object] = {}

    def fail(self, msg: str):
        raise DatasetError(f"{self.where}: not a CIFAR batch pickle we can read safely (byte {self.pos}): {msg}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.blob):
            self.fail("the file ends early")
        out = self.blob[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> str:
        end = self.blob.find(b"\n", self.pos)
        if end < 0:
            self.fail("the file ends early")
        return self.take(end - self.pos + 1)[:-1].decode("ascii", "replace")

    def pop_to_mark(self) -> list:
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k] is _MARK:
                items = self.stack[k + 1:]
                del self.stack[k:]
                return items
        self.fail("no MARK on the stack")

    def pop(self, n: int = 1) -> list:
        if len(self.stack) < n or any(v is _MARK for v in self.stack[-n:]):
            self.fail("stack underflow")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def top(self, kind: type, what: str):
        if not self.stack or not isinstance(self.stack[-1], kind):
            self.fail(f"{what} needs a {kind.__name__} on the stack")
        return self.stack[-1]

    def glob(self, module: str, qualname: str) -> _Global:
        role = _ALLOWED_GLOBALS.get((module, qualname))
        if role is None:
            hint = " (bytes saved by Python 3 with protocol 2; re-save with protocol 4)" if module == "_codecs" else ""
            self.fail(f"refusing global {module}.{qualname}{hint}: a CIFAR batch names only numpy's "
                      "_reconstruct, ndarray and dtype. Nothing was imported or run")
        return _Global(role)

    def reduce(self, func, args):
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            self.fail("REDUCE on something other than an allowed numpy global")
        if func.role == "reconstruct":
            if len(args) != 3 or args[0] != _Global("ndarray"):
                self.fail("numpy _reconstruct with unexpected arguments")
            return _PendingArray()
        if func.role == "dtype":
            if not args:
                self.fail("numpy dtype without arguments")
            descr = _text(args[0], "a dtype name", self.fail)
            try:
                kind = np.dtype(descr).kind
            except TypeError:
                kind = "?"
            if kind not in _NUMERIC_KINDS:
                self.fail(f"dtype {descr!r} is not a plain numeric type")
            return _PendingDtype(descr)
        self.fail(f"cannot call numpy {func.role}")

    def build(self, obj, state):
        if isinstance(obj, _PendingDtype):
            if not isinstance(state, tuple) or len(state) < 2:
                self.fail("unexpected dtype state")
            obj.byteorder = _text(state[1], "a dtype byte order", self.fail)
            return
        if not isinstance(obj, _PendingArray) or obj.array is not None:
            self.fail("BUILD on something other than a new numpy array")
        if not isinstance(state, tuple) or len(state) != 5:
            self.fail("unexpected ndarray state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            self.fail(f"bad array shape {shape!r}")
        if not isinstance(dtype, _PendingDtype) or not isinstance(raw, bytes):
            self.fail("array data must be raw bytes of a numeric dtype")
        dt = np.dtype(dtype.descr)
        if dtype.byteorder in "<>":
            dt = dt.newbyteorder(dtype.byteorder)
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            self.fail(f"array of shape {shape} and dtype {dt} does not match its {len(raw)} data bytes")
        obj.array = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")

    def run(self):
        ops = _OPS
        while True:
            if self.pos >= len(self.blob):
                self.fail("the file ends before STOP")
            code = self.blob[self.pos:self.pos + 1]
            self.pos += 1
            op = ops.get(code)
            if op is None:
                self.fail(f"opcode {code!r} is not used by CIFAR batches")
            if op is _stop:
                result = self.pop()[0]
                return _finish(result, self.fail)
            op(self)


def _finish(value, fail):
    """Replace built arrays by numpy arrays; anything still pending means the file was not a plain batch."""
    if isinstance(value, _PendingArray):
        if value.array is None:
            fail("a numpy array was never given its data")
        return value.array
    if isinstance(value, dict):
        return {k: _finish(v, fail) for k, v in value.items()}
    if isinstance(value, list):
        return [_finish(v, fail) for v in value]
    if isinstance(value, tuple):
        return tuple(_finish(v, fail) for v in value)
    if isinstance(value, (_Global, _PendingDtype)):
        fail("a numpy global or dtype outside an array")
    return value


def _stop(r: _Reader):
    pass


def _push(value_fn):
    return lambda r: r.stack.append(value_fn(r))


def _memo_put(index_fn):
    def op(r: _Reader):
        if not r.stack:
            r.fail("memo put on an empty stack")
        r.memo[index_fn(r)] = r.stack[-1]
    return op


def _memo_get(index_fn):
    def op(r: _Reader):
        i = index_fn(r)
        if i not in r.memo:
            r.fail(f"memo entry {i} is not defined")
        r.stack.append(r.memo[i])
    return op


def _tuple_n(n: int):
    return lambda r: r.stack.append(tuple(r.pop(n)) if n else ())


def _append(r: _Reader):
    value = r.pop()[0]
    r.top(list, "APPEND").append(value)


def _appends(r: _Reader):
    items = r.pop_to_mark()
    r.top(list, "APPENDS").extend(items)


def _set_items(r: _Reader, items: list):
    target = r.top(dict, "SETITEM")
    if len(items) % 2:
        r.fail("odd number of items for SETITEMS")
    for k, v in zip(items[::2], items[1::2]):
        if not isinstance(k, (str, bytes, int)):
            r.fail(f"dict key of type {type(k).__name__}")
        target[k] = v


def _global(r: _Reader):
    module, qualname = r.line(), r.line()
    r.stack.append(r.glob(module, qualname))


def _stack_global(r: _Reader):
    module, qualname = r.pop(2)
    if not isinstance(module, str) or not isinstance(qualname, str):
        r.fail("STACK_GLOBAL needs two strings")
    r.stack.append(r.glob(module, qualname))


def _reduce(r: _Reader):
    func, args = r.pop(2)
    r.stack.append(r.reduce(func, args))


def _build(r: _Reader):
    state = r.pop()[0]
    if not r.stack:
        r.fail("BUILD on an empty stack")
    r.build(r.stack[-1], state)


def _long1(r: _Reader) -> int:
    return int.from_bytes(r.take(r.unpack("<B")), "little", signed=True)


def _utf8(n_fmt: str):
    return _push(lambda r: r.take(r.unpack(n_fmt)).decode("utf-8"))


def _raw(n_fmt: str):
    return _push(lambda r: bytes(r.take(r.unpack(n_fmt))))


_OPS = {
    b"\x80": lambda r: r.unpack("<B"),           # PROTO
    b"\x95": lambda r: r.unpack("<Q"),           # FRAME (framing is irrelevant to a reader of the whole file)
    b".": _stop,                                 # STOP
    b"(": _push(lambda r: _MARK),                # MARK
    b"}": _push(lambda r: {}),                   # EMPTY_DICT
    b"]": _push(lambda r: []),                   # EMPTY_LIST
    b")": _tuple_n(0),                           # EMPTY_TUPLE
    b"t": lambda r: r.stack.append(tuple(r.pop_to_mark())),  # TUPLE
    b"\x85": _tuple_n(1),
    b"\x86": _tuple_n(2),
    b"\x87": _tuple_n(3),
    b"a": _append,
    b"e": _appends,
    b"s": lambda r: _set_items(r, r.pop(2)),     # SETITEM
    b"u": lambda r: _set_items(r, r.pop_to_mark()),  # SETITEMS
    b"N": _push(lambda r: None),
    b"\x88": _push(lambda r: True),              # NEWTRUE
    b"\x89": _push(lambda r: False),             # NEWFALSE
    b"J": _push(lambda r: r.unpack("<i")),       # BININT
    b"K": _push(lambda r: r.unpack("<B")),       # BININT1
    b"M": _push(lambda r: r.unpack("<H")),       # BININT2
    b"\x8a": _push(_long1),                      # LONG1
    b"U": _raw("<B"),                            # SHORT_BINSTRING (Python 2 str)
    b"T": _raw("<i"),                            # BINSTRING (Python 2 str)
    b"C": _raw("<B"),                            # SHORT_BINBYTES
    b"B": _raw("<I"),                            # BINBYTES
    b"\x8e": _raw("<Q"),                         # BINBYTES8
    b"\x8c": _utf8("<B"),                        # SHORT_BINUNICODE
    b"X": _utf8("<I"),                           # BINUNICODE
    b"\x8d": _utf8("<Q"),                        # BINUNICODE8
    b"q": _memo_put(lambda r: r.unpack("<B")),   # BINPUT
    b"r": _memo_put(lambda r: r.unpack("<I")),   # LONG_BINPUT
    b"\x94": _memo_put(lambda r: len(r.memo)),   # MEMOIZE
    b"h": _memo_get(lambda r: r.unpack("<B")),   # BINGET
    b"j": _memo_get(lambda r: r.unpack("<I")),   # LONG_BINGET
    b"c": _global,                               # GLOBAL (checked against the allow-list)
    b"\x93": _stack_global,                      # STACK_GLOBAL (checked against the allow-list)
    b"R": _reduce,                               # REDUCE (only the allowed numpy globals, never called)
    b"b": _build,                                # BUILD (only numpy arrays and dtypes)
}


def parse_pickle(blob: bytes, where: str) -> object:
    """Interpret `blob` as a restricted pickle; `where` (a file name) prefixes every error."""
    try:
        return _Reader(blob, where).run()
    except RecursionError as exc:
        raise DatasetError(f"{where}: nested deeper than a CIFAR batch ever is") from exc
