"""From extracted arrays to a finished bundle: ZSF set, kNN distances, routing
scores, the embedding map, manifest; then everything derived (vrf_core.derive).

Shared by the real pipeline (`precompute run`, `precompute demo`) and by the
synthetic bundles of the benchmarks, so every bundle is finished the same way.
The expensive steps (kNN searches, the embedding map) are content-keyed stages of
a `StageCache` (precompute/stage_cache.py): keyed by the bytes of the arrays they read
and their settings. The manifest's description of the run is built in precompute/manifest.py.

Each evaluation split's kNN stage also writes the inputs of the two VRF ablations (paper Fig. 4):
K = ensemble.k_max ascending squared L2 distances of L2-normalised features, float32 (n, K):
- `knn_sqdist_train`: fine-tuned features to the training base, the whole ID training set or a seeded
  sample of `knn_train_base` of its rows when it is larger. One search with the kNN routing score:
  `score_knn` is minus the square root of its kk-th distance (kk = knn_train_k).
- `knn_sqdist_zs`: zero-shot features to the ZSF set's zero-shot features; left out (with a log line)
  unless the training split and every evaluation split carry zero-shot features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from precompute.assemble_checks import AssembleError, check_finite, check_zsf_size
from precompute.embedding import compute_embedding
from precompute.manifest import bundle_manifest, split_entry, zsf_summary
from precompute.stage_cache import StageCache, array_digest, content_key
from vrf_core.bundle import Bundle, BundleWriter, open_bundle
from vrf_core.bundle_adapter import rederive
from vrf_core.data import ClassProjection
from vrf_core.filesafe import kill_point
from vrf_core.knn import knn_sqdist
from vrf_core.progress import log, progress
from vrf_core.projection import project_logits
from vrf_core.routing import GaussianFit
from vrf_core.zsf import zsf_mask

__all__ = ["AssembleError", "AssembleSettings", "Extracted", "assemble", "check_zsf_size", "finish"]


@dataclass
class Extracted:
    """One split's extraction outputs (arrays may be memory-mapped).

    Evaluation splits carry logits; the training split may carry only predictions.
    """

    role: str
    labels: np.ndarray
    refs: np.ndarray
    features_ft: np.ndarray
    features_zs: np.ndarray | None = None
    logits_zs: np.ndarray | None = None
    logits_ft: np.ndarray | None = None
    preds_wse: np.ndarray | None = None  # (A, N) argmax of the WSE logits at each alpha, projected
    preds_zs: np.ndarray | None = None
    preds_ft: np.ndarray | None = None
    thumbs: list[bytes] | None = None
    classnames: list[str] | None = None
    projection: ClassProjection | None = None
    source: dict = field(default_factory=dict)

    def predictions(self, model: str) -> np.ndarray:
        preds = self.preds_zs if model == "zs" else self.preds_ft
        if preds is not None:
            return np.asarray(preds)
        return np.asarray(self.logits_zs if model == "zs" else self.logits_ft).argmax(1)


@dataclass
class AssembleSettings:
    k_max: int = 100
    k_rule: str | int = "reference"
    distance: str = "squared"
    calibration: str = "confidence"
    wse_alphas: list[float] | None = None
    ose_alphas: list[float] = field(default_factory=lambda: [round(i / 10, 2) for i in range(11)])
    weight_rule: str = "sigmoid"
    knn_backend: str = "auto"
    train_sample: int = 50000
    knn_train_k: int = 10
    knn_train_base: int = 100000
    umap: bool = True
    umap_max_points: int = 20000
    umap_neighbors: int = 15
    seed: int = 0


# Part of the assemble stage's key: bump when assemble writes different arrays from the same inputs
# (2: predictions, top-m tables and results tables; 3: bundle schema 2; 4: the VRF ablations' distances
# knn_sqdist_train and knn_sqdist_zs), so that existing bundles are brought up to date by the next run.
ASSEMBLE_FORMAT = 4


def wse_predictions(logits_per_alpha: list[np.ndarray], projection: ClassProjection | None) -> np.ndarray:
    """(A, N) int32 argmax of each alpha's WSE logits, projected to the split's classes."""
    return np.stack([project_logits(np.asarray(z, np.float32), projection).argmax(axis=1)
                     for z in logits_per_alpha]).astype(np.int32)


def zero_shot_base(train: Extracted, evals: dict[str, Extracted], zsf_idx: np.ndarray) -> np.ndarray | None:
    """(|ZSF|, D) float32 zero-shot features of the ZSF set: the base of `knn_sqdist_zs`. None (and a log
    line naming the splits) when the training split or an evaluation split has no zero-shot features."""
    lacking = [split for split, ex in [("train", train), *evals.items()] if ex.features_zs is None]
    if lacking:
        log("VRF ablation 'distance in zero-shot features' unavailable (knn_sqdist_zs not written): no zero-shot "
            f"image features for split(s) {', '.join(lacking)}; an import gives them as features_zs")
        return None
    return np.asarray(train.features_zs[zsf_idx], np.float32)


def assemble(out_dir, name: str, train: Extracted, evals: dict[str, Extracted],
             settings: AssembleSettings, manifest_extra: dict,
             zsf_thumbs: Callable[[np.ndarray], list[bytes]] | None = None,
             cache: StageCache | None = None) -> Bundle:
    """Write the bundle at `out_dir`: staged, then moved into place (see BundleWriter); on any error the
    bundle already there is left as it was."""
    cache = cache or StageCache(None)
    for split, ex in [("train", train), *evals.items()]:
        check_finite(split, ex)
    writer = BundleWriter(out_dir)
    try:
        return finish(writer, _write_arrays(writer, name, train, evals, settings, manifest_extra, zsf_thumbs, cache))
    except BaseException:
        writer.abort()
        raise


def finish(writer: BundleWriter, manifest: dict) -> Bundle:
    """Derive everything from the staged arrays (vrf_core.derive: hyperparameters, predictions, top-m
    tables, results, curves), stage it, and move the bundle into place."""
    log("tuning hyperparameters and deriving predictions, top-m tables, results and curves")
    t0 = time.perf_counter()
    derived = rederive(writer.staged(manifest))
    for split, arrays in derived.arrays.items():
        for name, arr in arrays.items():
            writer.put(split, name, arr)
    writer.finalize({**manifest, **derived.manifest()})
    log(f"derived in {time.perf_counter() - t0:.1f} s (tuning {derived.tuning_seconds:.1f} s)")
    return open_bundle(writer.root)


def _write_arrays(writer: BundleWriter, name: str, train: Extracted, evals: dict[str, Extracted],
                  settings: AssembleSettings, manifest_extra: dict,
                  zsf_thumbs: Callable[[np.ndarray], list[bytes]] | None, cache: StageCache) -> dict:
    """Stage every array; returns the manifest (without the derived keys)."""
    rng = np.random.default_rng(settings.seed)
    num_classes = len(manifest_extra["classnames"])
    backend = settings.knn_backend
    # What the search runs on is part of its identity: results differ in the last bits between devices.
    searcher = (backend, "cuda" if torch.cuda.is_available() else "cpu")

    # 1. ZSF set (paper Sec. 4.1): fine-tuned right, zero-shot wrong on the training set.
    preds_zs, preds_ft = train.predictions("zs"), train.predictions("ft")
    mask = zsf_mask(preds_zs, preds_ft, train.labels)
    zsf_idx = np.flatnonzero(mask)
    n_train = len(train.labels)
    check_zsf_size(len(zsf_idx), n_train, settings, float((preds_zs == train.labels).mean()),
                   float((preds_ft == train.labels).mean()))
    zsf = zsf_summary(len(zsf_idx), n_train, settings)
    k_max = zsf.k_max
    zsf_feats = np.asarray(train.features_ft[zsf_idx], dtype=np.float32)
    zsf_digest = array_digest(zsf_feats)
    log(f"ZSF set: {len(zsf_idx)} of {len(mask)} training samples; k_max = {k_max}")

    # 2. kNN distances of every split to the ZSF set, up to k_max.
    sample = np.arange(n_train) if n_train <= settings.train_sample else np.sort(
        rng.choice(n_train, settings.train_sample, replace=False))
    sample_feats = np.asarray(train.features_ft[sample], np.float32)

    def zsf_search() -> dict[str, np.ndarray]:
        zsf_sq, zsf_nn = knn_sqdist(zsf_feats, zsf_feats, k_max, backend, exclude_self=True)
        t_sq, t_nn = knn_sqdist(sample_feats, zsf_feats, k_max + 1, backend)
        return {"zsf_sq": zsf_sq, "zsf_nn": zsf_nn, "train_sq": t_sq, "train_nn": t_nn}

    nn = cache.get("knn/zsf", content_key("knn-zsf", zsf_digest, array_digest(sample_feats), k_max, searcher),
                   zsf_search)
    zsf_sq, zsf_nn = np.asarray(nn["zsf_sq"]), np.asarray(nn["zsf_nn"])
    kill_point("knn")
    writer.put("zsf", "labels", np.asarray(train.labels[zsf_idx], np.int64))
    writer.put("zsf", "refs", np.asarray(train.refs)[zsf_idx].astype(str))
    writer.put("zsf", "train_index", zsf_idx.astype(np.int64))
    writer.put("zsf", "preds_zs", preds_zs[zsf_idx].astype(np.int64))
    writer.put("zsf", "features_ft", zsf_feats.astype(np.float16))
    writer.put("zsf", "knn_sqdist", zsf_sq)
    writer.put("zsf", "knn_index", zsf_nn.astype(np.int32))
    if zsf_thumbs is not None:
        writer.put_thumbs("zsf", zsf_thumbs(zsf_idx))

    # A ZSF member's nearest neighbour is itself: use its leave-one-out row instead.
    pos = np.searchsorted(zsf_idx, sample)
    is_member = mask[sample]
    t_sq, t_nn = np.array(nn["train_sq"][:, :k_max]), np.array(nn["train_nn"][:, :k_max])
    t_sq[is_member], t_nn[is_member] = zsf_sq[pos[is_member]], zsf_nn[pos[is_member]]
    writer.put("train", "labels", np.asarray(train.labels[sample], np.int64))
    writer.put("train", "refs", np.asarray(train.refs)[sample].astype(str))
    writer.put("train", "train_index", sample.astype(np.int64))
    writer.put("train", "is_zsf", is_member)
    writer.put("train", "knn_sqdist", t_sq)
    writer.put("train", "knn_index", t_nn.astype(np.int32))

    # 3. Feature-based ID scores for the routing baselines, fit on the training set.
    gauss = GaussianFit(np.asarray(train.features_ft, np.float32), np.asarray(train.labels), num_classes)
    base_idx = np.arange(n_train) if n_train <= settings.knn_train_base else np.sort(
        rng.choice(n_train, settings.knn_train_base, replace=False))
    train_base = np.asarray(train.features_ft[base_idx], np.float32)
    base_digest = array_digest(train_base)
    kk = min(settings.knn_train_k, len(train_base))
    k_train = min(max(k_max, kk), len(train_base))  # one search serves score_knn (kk) and knn_sqdist_train (k_max)
    zsf_zs = zero_shot_base(train, evals, zsf_idx)
    zsf_zs_digest = array_digest(zsf_zs) if zsf_zs is not None else None

    for split, ex in progress(evals.items(), desc="distances and scores", total=len(evals)):
        feats = np.asarray(ex.features_ft, np.float32)
        feats_zs = np.asarray(ex.features_zs, np.float32) if zsf_zs is not None else None

        def search(feats=feats, feats_zs=feats_zs) -> dict[str, np.ndarray]:
            sq, idx = knn_sqdist(feats, zsf_feats, k_max, backend)
            tsq, _ = knn_sqdist(feats, train_base, k_train, backend)
            out = {"knn_sqdist": sq, "knn_index": idx.astype(np.int32), "score_knn": -np.sqrt(tsq[:, kk - 1]),
                   "knn_sqdist_train": tsq[:, :k_max]}
            if feats_zs is not None:
                out["knn_sqdist_zs"] = knn_sqdist(feats_zs, zsf_zs, k_max, backend)[0]
            return out

        # The zero-shot parts (None without zero-shot features) tell this stage's outputs from those of
        # bundles before assemble format 4, which had no ablation distances.
        key = content_key("knn-split", array_digest(feats), zsf_digest, base_digest, k_max, kk, searcher,
                          array_digest(feats_zs) if feats_zs is not None else None, zsf_zs_digest)
        dist = cache.get(f"knn/{split}", key, search)
        kill_point(f"scores:{split}")
        for arr_name, arr in (("labels", np.asarray(ex.labels, np.int64)), ("refs", np.asarray(ex.refs).astype(str)),
                              ("features_ft", np.asarray(ex.features_ft, np.float16)),
                              ("logits_zs", np.asarray(ex.logits_zs, np.float32)),
                              ("logits_ft", np.asarray(ex.logits_ft, np.float32)),
                              ("knn_sqdist", dist["knn_sqdist"]), ("knn_index", dist["knn_index"]),
                              ("knn_sqdist_train", dist["knn_sqdist_train"])):
            writer.put(split, arr_name, arr)
        if "knn_sqdist_zs" in dist:
            writer.put(split, "knn_sqdist_zs", dist["knn_sqdist_zs"])
        if ex.features_zs is not None:
            writer.put(split, "features_zs", np.asarray(ex.features_zs, np.float16))
        if ex.preds_wse is not None:
            writer.put(split, "preds_wse", np.asarray(ex.preds_wse, np.int32))
        writer.put(split, "score_mahalanobis", gauss.mahalanobis(feats).astype(np.float32))
        writer.put(split, "score_relative_mahalanobis", gauss.relative_mahalanobis(feats).astype(np.float32))
        writer.put(split, "score_knn", np.asarray(dist["score_knn"], np.float32))
        if ex.thumbs is not None:
            writer.put_thumbs(split, ex.thumbs)

    # 4. Embedding map of the ZSF set and the evaluation splits.
    embedding = None
    if settings.umap:
        parts = {"zsf": zsf_feats, **{s: np.asarray(e.features_ft, np.float32) for s, e in evals.items()}}

        def embed() -> dict[str, np.ndarray]:
            log("embedding map (UMAP)")
            coords = compute_embedding(parts, settings.umap_max_points, settings.umap_neighbors, settings.seed)
            return {"coords": np.concatenate([coords[n] for n in parts])}

        key = content_key("umap", [array_digest(x) for x in parts.values()], settings.umap_max_points,
                          settings.umap_neighbors, settings.seed)
        coords = np.asarray(cache.get("umap", key, embed)["coords"])
        ends = np.cumsum([len(x) for x in parts.values()])
        for split, c in zip(parts, np.split(coords, ends[:-1])):
            writer.put(split, "umap", c)
        embedding = {"method": "umap", "metric": "cosine", "n_neighbors": settings.umap_neighbors,
                     "max_points": settings.umap_max_points, "of": "features_ft"}

    splits = {"train": split_entry("id_train", len(sample), train.source),
              "zsf": split_entry("zsf", len(zsf_idx), train.source)}
    splits |= {split: split_entry(ex.role, len(ex.labels), ex.source, ex.classnames, ex.projection)
               for split, ex in evals.items()}
    return bundle_manifest(name, settings, zsf, splits, zsf_feats.shape[1], embedding, manifest_extra)
