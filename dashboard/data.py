"""Cached bundle loaders and the live state every page draws from.

Bundles, splits and arrays are cached with `st.cache_resource` (memory-mapped,
shared, never copied); the live view (distances, weights and predictions for the
current a, b, k, rule, scale, calibration) is recomputed through vrf_core when a
control changes and cached per parameter set.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from vrf_core.bundle import Bundle, open_bundle
from vrf_core.evaluate import ROLES_EVAL, Selection, SplitData, VRFParams, results_table
from vrf_core.live import LiveSplit
from vrf_core.weights import kth_distance, weight

METHODS_LIVE = ("zero-shot", "fine-tuned", "VRF")
THUMB_MIN_SIDE = 160


def bundle_key(bundle: Bundle) -> str:
    """Identifies one build of a bundle: a rebuilt bundle at the same path gets a new key."""
    return f"{bundle.path}|{bundle.manifest.get('created')}|{len(bundle.manifest['files'])}"


@st.cache_resource(show_spinner=False, max_entries=8)
def _open(path: str, mtime_ns: int) -> Bundle:
    return open_bundle(path)


def load_bundle(path: str | Path) -> Bundle:
    """Opens (once per manifest version) the bundle at `path`; raises BundleError naming the file."""
    manifest = Path(path) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns if manifest.is_file() else 0
    return _open(str(path), stamp)


@st.cache_resource(show_spinner=False, max_entries=128)
def _split_data(key: str, split: str, _bundle: Bundle) -> SplitData:
    return _bundle.split_data(split)


def split_data(bundle: Bundle, split: str) -> SplitData:
    """An evaluation split's arrays; its softmaxes are cached inside (SplitData.probs)."""
    return _split_data(bundle_key(bundle), split, bundle)


@st.cache_resource(show_spinner=False, max_entries=128)
def _live_split(key: str, mode: str, split: str, _bundle: Bundle) -> LiveSplit:
    sel = selection(_bundle, mode)
    return LiveSplit.from_split_data(split_data(_bundle, split), sel.t_zs, sel.t_ft)


def live_split(bundle: Bundle, mode: str, split: str) -> LiveSplit:
    """An evaluation split ready for exact live re-weighting with the mode's temperatures."""
    return _live_split(bundle_key(bundle), mode, split, bundle)


@st.cache_resource(show_spinner=False, max_entries=512)
def _array(key: str, split: str, name: str, _bundle: Bundle) -> np.ndarray:
    return np.asarray(_bundle.array(split, name))


def array(bundle: Bundle, split: str, name: str) -> np.ndarray:
    return _array(bundle_key(bundle), split, name, bundle)


@st.cache_resource(show_spinner=False, max_entries=4096)
def _thumbnail(key: str, split: str, i: int, _bundle: Bundle) -> bytes:
    img = Image.open(io.BytesIO(_bundle.thumbnail(split, i))).convert("RGB")
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
    return _thumbnail(bundle_key(bundle), split, int(i), bundle)


def selection(bundle: Bundle, mode: str) -> Selection:
    return Selection.from_json(bundle.manifest["selection"][mode])


def eval_splits(bundle: Bundle) -> list[str]:
    return bundle.split_names(*ROLES_EVAL)


def test_splits(bundle: Bundle) -> list[str]:
    """The reported splits: ID test first, then every shift."""
    return bundle.split_names("id_test") + bundle.split_names("ood")


@st.cache_resource(show_spinner="Bootstrapping confidence intervals…", max_entries=16)
def _static_table(key: str, mode: str, _bundle: Bundle) -> dict:
    splits = [split_data(_bundle, s) for s in test_splits(_bundle)]
    return results_table(splits, selection(_bundle, mode), _bundle.wse_alphas)


def static_table(bundle: Bundle, mode: str) -> dict:
    """vrf_core's results table on the test splits with the tuned selection: every method's row
    except VRF's, which the pages take from the live view."""
    return _static_table(bundle_key(bundle), mode, bundle)


# ---- the live state ------------------------------------------------------------------------

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
class Live:
    params: VRFParams
    views: dict[str, SplitView]
    ms: float

    def ood_average(self, method: str) -> float:
        ood = [v for v in self.views.values() if v.role == "ood"]
        return float(np.mean([v.accuracy(method) for v in ood])) if ood else float("nan")


@st.cache_resource(show_spinner=False, max_entries=128)
def _static_preds(key: str, split: str, _bundle: Bundle) -> dict[str, np.ndarray]:
    sd = split_data(_bundle, split)
    return {"zero-shot": np.asarray(sd.logits_zs).argmax(1), "fine-tuned": np.asarray(sd.logits_ft).argmax(1)}


@st.cache_resource(show_spinner=False, max_entries=64)
def _live(key: str, mode: str, params: VRFParams, _bundle: Bundle) -> Live:
    start = time.perf_counter()
    views = {}
    for split in eval_splits(_bundle):
        ls = live_split(_bundle, mode, split)
        preds = {**_static_preds(key, split, _bundle), "VRF": ls.vrf_preds(params)}
        views[split] = SplitView(split, ls.split.role, ls.labels,
                                 kth_distance(ls.split.knn_sqdist, params.k, params.scale), ls.vrf_weights(params),
                                 preds)
    for split in _bundle.split_names("id_train", "zsf"):
        d = kth_distance(array(_bundle, split, "knn_sqdist"), params.k, params.scale)
        views[split] = SplitView(split, _bundle.splits[split]["role"], array(_bundle, split, "labels"), d,
                                 weight(d, params.a, params.b, params.rule))
    return Live(params, views, 1000 * (time.perf_counter() - start))


def live(bundle: Bundle, mode: str, params: VRFParams) -> Live:
    """Distances, weights and predictions of every split for the current controls."""
    return _live(bundle_key(bundle), mode, params, bundle)
