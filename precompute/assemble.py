"""From extracted arrays to a finished bundle: ZSF set, kNN distances, selective
scores, the embedding map, hyperparameter selection, manifest.

Shared by the real pipeline (`precompute run`, `precompute demo`) and by the
synthetic bundles of the benchmarks, so every bundle is finished the same way.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vrf_core.bundle import MANIFEST, Bundle, BundleWriter, open_bundle
from vrf_core.data import ClassProjection
from vrf_core.evaluate import default_k_values, select
from vrf_core.knn import knn_sqdist
from vrf_core.progress import log, progress
from vrf_core.selective import GaussianFit
from vrf_core.weights import k_from_rule
from vrf_core.zsf import zsf_mask


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
    logits_wse: np.ndarray | None = None
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


def _versions() -> dict:
    import faiss
    import open_clip
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "faiss": faiss.__version__}


def compute_embedding(parts: dict[str, np.ndarray], max_points: int, n_neighbors: int,
                      seed: int) -> dict[str, np.ndarray]:
    """2-D UMAP of the fine-tuned features of several splits at once (cosine metric, exact kNN
    graph from faiss). Each split keeps at most its share of `max_points`; other rows are NaN."""
    import umap

    rng = np.random.default_rng(seed)
    total = sum(len(x) for x in parts.values())
    frac = min(1.0, max_points / max(total, 1))
    chosen = {n: np.sort(rng.choice(len(x), size=max(1, int(round(len(x) * frac))), replace=False))
              for n, x in parts.items() if len(x)}
    feats = np.concatenate([np.asarray(parts[n][idx], dtype=np.float32) for n, idx in chosen.items()])
    k = min(n_neighbors, len(feats) - 1)
    sq, idx = knn_sqdist(feats, feats, k, backend="faiss", exclude_self=True)
    # UMAP's precomputed graph includes each point itself at distance 0 in column 0.
    knn_idx = np.concatenate([np.arange(len(feats))[:, None], idx], 1)
    knn_dist = np.concatenate([np.zeros((len(feats), 1), np.float32), np.sqrt(sq) / np.sqrt(2)], 1)
    reducer = umap.UMAP(n_neighbors=k + 1, metric="cosine", random_state=seed,
                        precomputed_knn=(knn_idx, knn_dist, None), n_jobs=1)
    coords = reducer.fit_transform(feats).astype(np.float32)
    out, start = {}, 0
    for n, x in parts.items():
        full = np.full((len(x), 2), np.nan, dtype=np.float32)
        if n in chosen:
            full[chosen[n]] = coords[start:start + len(chosen[n])]
            start += len(chosen[n])
        out[n] = full
    return out


def assemble(out_dir, name: str, train: Extracted, evals: dict[str, Extracted],
             settings: AssembleSettings, manifest_extra: dict,
             zsf_thumbs: Callable[[np.ndarray], list[bytes]] | None = None) -> Bundle:
    writer = BundleWriter(out_dir)
    # A bundle being rebuilt is not a bundle: readers must never see new arrays under an old manifest.
    (writer.root / MANIFEST).unlink(missing_ok=True)
    rng = np.random.default_rng(settings.seed)
    num_classes = len(manifest_extra["classnames"])

    # 1. ZSF set (paper Sec. 4.1): fine-tuned right, zero-shot wrong on the training set.
    mask = zsf_mask(train.predictions("zs"), train.predictions("ft"), train.labels)
    zsf_idx = np.flatnonzero(mask)
    if len(zsf_idx) < 2:
        raise ValueError(
            f"the zero-shot failure set has {len(zsf_idx)} member(s) out of {len(mask)} training samples; "
            "VRF needs at least k+1. Fine-tune longer, or check that the fine-tuned checkpoint is right")
    k_max = min(settings.k_max, len(zsf_idx) - 1)
    zsf_feats = np.asarray(train.features_ft[zsf_idx], dtype=np.float32)
    log(f"ZSF set: {len(zsf_idx)} of {len(mask)} training samples; k_max = {k_max}")

    # 2. kNN distances of every split to the ZSF set, up to k_max.
    zsf_sq, zsf_nn = knn_sqdist(zsf_feats, zsf_feats, k_max, settings.knn_backend, exclude_self=True)
    writer.put("zsf", "labels", np.asarray(train.labels[zsf_idx], np.int64))
    writer.put("zsf", "refs", np.asarray(train.refs)[zsf_idx].astype(str))
    writer.put("zsf", "train_index", zsf_idx.astype(np.int64))
    writer.put("zsf", "preds_zs", train.predictions("zs")[zsf_idx].astype(np.int64))
    writer.put("zsf", "features_ft", zsf_feats.astype(np.float16))
    writer.put("zsf", "knn_sqdist", zsf_sq)
    writer.put("zsf", "knn_index", zsf_nn.astype(np.int32))
    if zsf_thumbs is not None:
        writer.put_thumbs("zsf", zsf_thumbs(zsf_idx))

    n_train = len(train.labels)
    sample = np.arange(n_train) if n_train <= settings.train_sample else np.sort(
        rng.choice(n_train, settings.train_sample, replace=False))
    t_sq, t_nn = knn_sqdist(np.asarray(train.features_ft[sample], np.float32), zsf_feats, k_max + 1,
                            settings.knn_backend)
    # A ZSF member's nearest neighbour is itself: use its leave-one-out row instead.
    pos = np.searchsorted(zsf_idx, sample)
    is_member = mask[sample]
    t_sq, t_nn = t_sq[:, :k_max].copy(), t_nn[:, :k_max].copy()
    t_sq[is_member], t_nn[is_member] = zsf_sq[pos[is_member]], zsf_nn[pos[is_member]]
    writer.put("train", "labels", np.asarray(train.labels[sample], np.int64))
    writer.put("train", "refs", np.asarray(train.refs)[sample].astype(str))
    writer.put("train", "train_index", sample.astype(np.int64))
    writer.put("train", "is_zsf", is_member)
    writer.put("train", "knn_sqdist", t_sq)
    writer.put("train", "knn_index", t_nn.astype(np.int32))

    # 3. Feature-based ID scores for the selective-routing baselines, fit on the training set.
    gauss = GaussianFit(np.asarray(train.features_ft, np.float32), np.asarray(train.labels), num_classes)
    base_idx = np.arange(n_train) if n_train <= settings.knn_train_base else np.sort(
        rng.choice(n_train, settings.knn_train_base, replace=False))
    train_base = np.asarray(train.features_ft[base_idx], np.float32)

    for split, ex in progress(evals.items(), desc="distances and scores", total=len(evals)):
        feats = np.asarray(ex.features_ft, np.float32)
        sq, nn = knn_sqdist(feats, zsf_feats, k_max, settings.knn_backend)
        for arr_name, arr in (("labels", np.asarray(ex.labels, np.int64)), ("refs", np.asarray(ex.refs).astype(str)),
                              ("features_ft", np.asarray(ex.features_ft, np.float16)),
                              ("logits_zs", np.asarray(ex.logits_zs, np.float32)),
                              ("logits_ft", np.asarray(ex.logits_ft, np.float32)),
                              ("knn_sqdist", sq), ("knn_index", nn.astype(np.int32))):
            writer.put(split, arr_name, arr)
        if ex.features_zs is not None:
            writer.put(split, "features_zs", np.asarray(ex.features_zs, np.float16))
        if ex.logits_wse is not None:
            writer.put(split, "logits_wse", np.asarray(ex.logits_wse, np.float16))
        writer.put(split, "score_mahalanobis", gauss.mahalanobis(feats).astype(np.float32))
        writer.put(split, "score_relative_mahalanobis", gauss.relative_mahalanobis(feats).astype(np.float32))
        kk = min(settings.knn_train_k, len(train_base))
        tsq, _ = knn_sqdist(feats, train_base, kk, settings.knn_backend)
        writer.put(split, "score_knn", (-np.sqrt(tsq[:, -1])).astype(np.float32))
        if ex.thumbs is not None:
            writer.put_thumbs(split, ex.thumbs)

    # 4. Embedding map of the ZSF set and the evaluation splits.
    embedding = None
    if settings.umap:
        log("embedding map (UMAP)")
        parts = {"zsf": zsf_feats, **{s: np.asarray(e.features_ft, np.float32) for s, e in evals.items()}}
        coords = compute_embedding(parts, settings.umap_max_points, settings.umap_neighbors, settings.seed)
        for split, c in coords.items():
            writer.put(split, "umap", c)
        embedding = {"method": "umap", "metric": "cosine", "n_neighbors": settings.umap_neighbors,
                     "max_points": settings.umap_max_points, "of": "features_ft"}

    k_rule_value = min(k_from_rule(settings.k_rule, len(zsf_idx), n_train), k_max)
    splits_meta = {
        "train": {"role": "id_train", "n": int(len(sample)), "classnames": None, "projection": None,
                  "source": train.source},
        "zsf": {"role": "zsf", "n": int(len(zsf_idx)), "classnames": None, "projection": None,
                "source": train.source},
    }
    for split, ex in evals.items():
        splits_meta[split] = {"role": ex.role, "n": int(len(ex.labels)), "classnames": ex.classnames,
                              "projection": ex.projection.to_json() if ex.projection else None,
                              "source": ex.source}
    manifest = {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "num_classes": num_classes,
        "feature_dim": int(zsf_feats.shape[1]),
        "splits": splits_meta,
        "zsf": {"size": int(len(zsf_idx)), "train_size": int(n_train), "k_rule": settings.k_rule,
                "k_rule_value": int(k_rule_value)},
        "ensemble": {"wse_alphas": settings.wse_alphas, "ose_alphas": settings.ose_alphas, "k_max": int(k_max),
                     "distance": settings.distance, "calibration": settings.calibration,
                     "weight_rule": settings.weight_rule},
        "embedding": embedding,
        "versions": _versions(),
        **manifest_extra,
    }
    # 5. Hyperparameters chosen on the ID validation split; the oracle on ID test, for comparison.
    manifest["files"] = writer.files
    manifest["schema_version"] = 1
    manifest["selection"] = {}
    partial = Bundle(writer.root, manifest)
    k_values = default_k_values(k_rule_value, k_max)
    for mode, role in (("validation", "id_val"), ("oracle", "id_test")):
        names = partial.split_names(role)
        if names:
            log(f"selecting hyperparameters on {names[0]} ({mode})")
            sel = select(partial.split_data(names[0]), settings.wse_alphas, settings.ose_alphas, k_values,
                         settings.weight_rule, settings.distance, settings.calibration)
            manifest["selection"][mode] = sel.to_json()
    writer.finalize(manifest)
    return open_bundle(out_dir)
