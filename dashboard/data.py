"""Cached bundle loaders and the live view every page draws from.

An opened bundle is cached with `st.cache_resource` (arrays memory-mapped, shared by
all sessions, never copied). Everything read or derived from it (arrays, splits,
softmaxes, thumbnails, the live view per parameter set) is memoised on that cached
bundle in plain dictionaries: `st.cache_resource` hashes its arguments on every call
(about 1 ms), too slow for the dozens of look-ups one page makes.
"""

from __future__ import annotations

import io
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import streamlit as st
from PIL import Image

from vrf_core import bundle_adapter
from vrf_core.bundle import Bundle, open_bundle
from vrf_core.evaluate import ROLES_EVAL, Hyperparameters, SplitData, VRFParams, method_preds
from vrf_core.topm import TopMSplit
from vrf_core.weights import kth_distance, weight

METHODS_LIVE = ("zero-shot", "fine-tuned", "VRF")
THUMB_MIN_SIDE = 160
T = TypeVar("T")


@st.cache_resource(show_spinner=False, max_entries=8)
def _open(path: str, mtime_ns: int) -> Bundle:
    return open_bundle(path)


def load_bundle(path: str | Path) -> Bundle:
    """Opens (once per manifest version) the bundle at `path`; raises BundleError naming the file."""
    manifest = Path(path) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns if manifest.is_file() else 0
    return _open(str(path), stamp)


# ---- memo on the cached bundle ---------------------------------------------------------------

_MEMOS: dict[int, dict] = {}
_LOCK = threading.RLock()


def memoize(bundle: Bundle, key: Hashable, make: Callable[[], T], keep: int | None = None) -> T:
    """`make()` once per (bundle, key), kept as long as the bundle stays cached. With `keep`, entries
    whose key shares `key[0]` form an LRU of that size (for values that vary with the controls)."""
    memo = _MEMOS.get(id(bundle))
    if memo is None:
        with _LOCK:
            memo = _MEMOS.setdefault(id(bundle), {})
            weakref.finalize(bundle, _MEMOS.pop, id(bundle), None)
    store = memo if keep is None else memo.setdefault(("lru", key[0]), OrderedDict())
    try:
        value = store[key]
    except KeyError:
        with _LOCK:  # one builder at a time; the next caller finds the value
            if key not in store:
                store[key] = make()
            value = store[key]
            if keep is not None:
                while len(store) > keep:
                    store.popitem(last=False)
    if keep is not None:
        with _LOCK:
            if key in store:
                store.move_to_end(key)
    return value


def array(bundle: Bundle, split: str, name: str) -> np.ndarray:
    return memoize(bundle, ("array", split, name), lambda: np.asarray(bundle.array(split, name)))


def split_data(bundle: Bundle, split: str) -> SplitData:
    """An evaluation split's arrays, its logits memory-mapped and projected only where read."""
    return memoize(bundle, ("split", split), lambda: bundle_adapter.eval_split(bundle, split))


def wse_preds(bundle: Bundle, split: str) -> np.ndarray | None:
    """(A, N) WSE predictions at each of the bundle's alphas (None without WSE)."""
    return memoize(bundle, ("wse_preds", split), lambda: bundle_adapter.wse_preds(bundle, split))


def hyperparameters(bundle: Bundle, mode: str) -> Hyperparameters:
    return memoize(bundle, ("hyperparameters", mode), lambda: bundle_adapter.hyperparameters(bundle, mode))


def topm_split(bundle: Bundle, mode: str, split: str) -> TopMSplit:
    """An evaluation split ready for exact re-weighting with the mode's temperatures, from the top-m
    tables precompute stored (only rows the tables cannot decide read the logits)."""
    return memoize(bundle, ("topm_split", mode, split),
                   lambda: bundle_adapter.topm_split(bundle, split, mode, split_data(bundle, split)))


def vrf_accuracy(bundle: Bundle, mode: str, split: str, params: VRFParams) -> float:
    """VRF accuracy on one evaluation split (the last few hundred parameter sets are kept)."""
    return memoize(bundle, ("vrf_accuracy", mode, split, params),
                   lambda: topm_split(bundle, mode, split).vrf_accuracy(params), keep=512)


def ose_accuracy(bundle: Bundle, mode: str, split: str, alpha: float, calibrated: bool) -> float:
    """OSE accuracy on one evaluation split at one alpha (it does not follow the VRF controls: kept)."""
    return memoize(bundle, ("ose_accuracy", mode, split, float(alpha), bool(calibrated)),
                   lambda: topm_split(bundle, mode, split).ose_accuracy(alpha, calibrated), keep=512)


def _upscaled_png(jpeg: bytes) -> bytes:
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    side = min(img.size)
    if side < THUMB_MIN_SIDE:
        # Tiny thumbnails (32 px) are unreadable when the browser blurs them up: scale them here.
        factor = -(-THUMB_MIN_SIDE // side)
        img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def thumbnail(bundle: Bundle, split: str, i: int) -> bytes | None:
    """Sample i's image, upscaled when small; None when the bundle stores no thumbnails."""
    if not bundle.has(split, "thumbs_offsets"):
        return None
    return memoize(bundle, ("thumb", split, int(i)), lambda: _upscaled_png(bundle.thumbnail(split, int(i))),
                   keep=4096)


def eval_splits(bundle: Bundle) -> list[str]:
    return bundle.split_names(*ROLES_EVAL)


def test_splits(bundle: Bundle) -> list[str]:
    """The reported splits: ID test first, then every shift."""
    return bundle.split_names("id_test") + bundle.split_names("ood")


def results_rows(bundle: Bundle, mode: str) -> dict:
    """The stored results table with the tuned hyperparameters ({method: {split: {acc, lo, hi}}});
    the pages take the VRF row from the live view instead."""
    return bundle.manifest["results"][mode]["rows"]


def ceiling(bundle: Bundle, mode: str) -> dict[str, float]:
    """The stored per-sample ceiling (at least one model right): split (and OOD avg) -> accuracy; empty for
    bundles derived before it. A reference line, never a row of the results table."""
    return bundle.manifest["results"][mode].get("ceiling", {})


def method_predictions(bundle: Bundle, mode: str, split: str) -> dict[str, np.ndarray]:
    """Every results-table method's predictions (N,) on an evaluation split at the mode's tuned hyperparameters
    (`vrf_core.evaluate.method_preds`, exact through the top-m tables; the logit ensemble reads the logits
    once), kept per (mode, split); the pages take the live VRF from the live view instead."""
    return memoize(bundle, ("method_preds", mode, split),
                   lambda: method_preds(split_data(bundle, split), hyperparameters(bundle, mode),
                                        topm_split(bundle, mode, split), wse_preds(bundle, split), bundle.wse_alphas))


def stored_curves(bundle: Bundle, mode: str) -> dict[str, dict[str, np.ndarray]]:
    """The stored trade-off curves: method (OSE, OSE (calibrated), WSE) -> test split -> accuracy at each
    of the bundle's ose_alphas (WSE: wse_alphas)."""
    def make() -> dict:
        return {method: {s: np.asarray(c) for s, c in per_split.items()}
                for method, per_split in bundle.manifest["curves"].get(mode, {}).items()}
    return memoize(bundle, ("curves", mode), make)


# ---- the live view: every split under the current controls ----------------------------------

@dataclass
class SplitView:
    """One split under the current parameters. d, w: (N,); preds: method -> (N,) (evaluation
    splits only)."""

    name: str
    role: str
    labels: np.ndarray
    d: np.ndarray
    w: np.ndarray
    preds: dict[str, np.ndarray] = field(default_factory=dict)

    def correct(self, method: str) -> np.ndarray:
        return self.preds[method] == self.labels

    def accuracy(self, method: str) -> float:
        return float(self.correct(method).mean())


@dataclass
class LiveView:
    """Every split under the controls' current parameters (VRF recomputed in `ms` milliseconds)."""

    params: VRFParams
    splits: dict[str, SplitView]
    ms: float

    def ood_average(self, method: str) -> float:
        ood = [v for v in self.splits.values() if v.role == "ood"]
        return float(np.mean([v.accuracy(method) for v in ood])) if ood else float("nan")


def _compute_live_view(bundle: Bundle, mode: str, params: VRFParams) -> LiveView:
    start = time.perf_counter()
    views = {}
    for split in eval_splits(bundle):
        ls = topm_split(bundle, mode, split)
        preds = {"zero-shot": ls.model_preds("zs"), "fine-tuned": ls.model_preds("ft"), "VRF": ls.vrf_preds(params)}
        views[split] = SplitView(split, ls.split.role, ls.labels,
                                 kth_distance(ls.split.knn_sqdist, params.k, params.scale), ls.vrf_weights(params),
                                 preds)
    for split in bundle.split_names("id_train", "zsf"):
        d = kth_distance(array(bundle, split, "knn_sqdist"), params.k, params.scale)
        views[split] = SplitView(split, bundle.splits[split]["role"], array(bundle, split, "labels"), d,
                                 weight(d, params.a, params.b, params.rule))
    return LiveView(params, views, 1000 * (time.perf_counter() - start))


def live_view(bundle: Bundle, mode: str, params: VRFParams) -> LiveView:
    """Distances, weights and predictions of every split for the current controls (the last few
    parameter sets are kept)."""
    return memoize(bundle, ("live_view", mode, params), lambda: _compute_live_view(bundle, mode, params), keep=32)
