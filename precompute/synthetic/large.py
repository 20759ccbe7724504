"""A synthetic bundle of any shapes (the benchmarks' ImageNet-sized workload), written through
the same manifest and derivation path as every bundle (`precompute.assemble.bundle_manifest`
and `finish`), but with drawn kNN distances and routing scores instead of searched ones.

Why drawn: a real assemble needs the whole training set's predictions to form the ZSF set
(1.28M samples for ImageNet) and an exact search of every split against it (about 20 minutes
on 2 cores); what the benchmarks measure on this bundle (derivation, size, live re-weighting,
cold start) reads the distances but does not depend on how they were found, and the kNN
benchmark searches the stored features itself. The distances grow with the shift, as in the
paper's Fig. 2; the ZSF set is drawn at the requested size (its zero-shot predictions wrong).
The VRF ablations' distances are drawn the same way: to the whole training set (`knn_sqdist_train`,
on average nearer than the ZSF set; `score_knn` is its 10th distance, as precompute defines it) and in
zero-shot features (`knn_sqdist_zs`, growing less with the shift: the zero-shot encoder drifts less).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precompute.assemble import AssembleSettings, bundle_manifest, finish, split_entry, zsf_summary
from precompute.synthetic.splits import SetSpec, make_split
from precompute.synthetic.world import IMAGENET_LIKE, Regime, World
from vrf_core.bundle import Bundle, BundleWriter

SOURCE = {"synthetic": True}


@dataclass(frozen=True)
class LargeSpec:
    classes: int
    dim: int
    sets: tuple[SetSpec, ...]  # the evaluation splits
    zsf: int  # ZSF set size
    train_size: int  # training set size (the ZSF set's and the train sample's indices are drawn from it)
    train_sample: int  # rows of the id_train split stored (precompute's default sample)
    k_max: int
    wse_alphas: tuple[float, ...] | None = tuple(round(i / 10, 1) for i in range(11))
    umap_max_points: int = 20_000  # precompute's default
    regime: Regime = IMAGENET_LIKE
    seed: int = 0


# (nearest squared distance in distribution, its growth per unit of shift) of each drawn distance array
DRAWN_DISTANCES = {"knn_sqdist": (0.95, 0.55), "knn_sqdist_train": (0.8, 0.55), "knn_sqdist_zs": (1.0, 0.25)}


def drawn_sqdist(rng: np.random.Generator, shift: np.ndarray, k: int, near: float = 0.95,
                 growth: float = 0.55) -> np.ndarray:
    """(n, k) ascending squared distances; the nearest, `near` in distribution, grows with the shift."""
    d1 = np.clip(near + growth * shift + 0.1 * rng.standard_normal(len(shift)), 0.05, 3.0)
    steps = rng.exponential(0.004, size=(len(shift), k))
    return np.clip(d1[:, None] + np.cumsum(steps, axis=1) - steps[:, :1], 0.0, 4.0).astype(np.float32)


def drawn_map(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """(n, 2) embedding-map coordinates as precompute writes them: `share` of the rows drawn, the others NaN."""
    xy = np.full((n, 2), np.nan, np.float32)
    rows = rng.choice(n, max(1, round(n * share)), replace=False)
    xy[rows] = rng.standard_normal((len(rows), 2), dtype=np.float32)
    return xy


def _distances(rng: np.random.Generator, shift: np.ndarray, spec: LargeSpec, k_max: int,
               ablations: bool = False) -> dict[str, np.ndarray]:
    """The kNN rows to the ZSF set; with `ablations` (evaluation splits) the VRF ablations' distances too."""
    names = DRAWN_DISTANCES if ablations else ["knn_sqdist"]
    out = {name: drawn_sqdist(rng, shift, k_max, *DRAWN_DISTANCES[name]) for name in names}
    return {**out, "knn_index": rng.integers(0, spec.zsf, out["knn_sqdist"].shape, dtype=np.int32)}


def write_large_bundle(path, spec: LargeSpec, name: str, config: dict) -> Bundle:
    """Write (staged, then moved into place) and return the bundle; config: the manifest's `config`."""
    rng = np.random.default_rng(spec.seed)
    world = World(spec.classes, spec.dim, spec.regime, rng)
    settings = AssembleSettings(k_max=spec.k_max, wse_alphas=list(spec.wse_alphas) if spec.wse_alphas else None,
                                umap_max_points=spec.umap_max_points, seed=spec.seed)
    zsf = zsf_summary(spec.zsf, spec.train_size, settings)
    map_share = min(1.0, spec.umap_max_points / (spec.zsf + sum(s.n for s in spec.sets)))
    splits = {"train": split_entry("id_train", spec.train_sample, SOURCE), "zsf": split_entry("zsf", spec.zsf, SOURCE)}
    writer = BundleWriter(path)
    try:
        for s in spec.sets:
            ex, shift = make_split(world, s, settings.wse_alphas)
            arrays = {"labels": ex.labels, "refs": ex.refs, "features_zs": ex.features_zs.astype(np.float16),
                      "features_ft": ex.features_ft.astype(np.float16), "logits_zs": ex.logits_zs,
                      "logits_ft": ex.logits_ft, **_distances(rng, shift, spec, zsf.k_max, ablations=True)}
            if ex.preds_wse is not None:
                arrays["preds_wse"] = ex.preds_wse
            sq = arrays["knn_sqdist"]  # routing scores that, like the real ones, fall with the distance
            arrays["score_mahalanobis"] = (-sq[:, 0] * 40 + rng.standard_normal(s.n)).astype(np.float32)
            arrays["score_relative_mahalanobis"] = (-sq[:, 0] * 5 + rng.standard_normal(s.n)).astype(np.float32)
            arrays["score_knn"] = -np.sqrt(arrays["knn_sqdist_train"][:, min(9, zsf.k_max - 1)])
            arrays["umap"] = drawn_map(rng, s.n, map_share)
            for array, arr in arrays.items():
                writer.put(s.name, array, arr)
            splits[s.name] = split_entry(ex.role, s.n, ex.source, ex.classnames, ex.projection)
            del ex, arrays
        _write_training(writer, world, rng, spec, zsf.k_max, map_share)
        embedding = {"method": "synthetic", "metric": "cosine", "n_neighbors": None,
                     "max_points": spec.umap_max_points, "of": "features_ft"}
        extra = {"classnames": world.classnames, "templates": ["a photo of a {}."],
                 "models": {m: {"name": "synthetic", "pretrained": None, "sha256": None} for m in ("zs", "ft")},
                 "preprocessing": SOURCE, "config": config}
        return finish(writer, bundle_manifest(name, settings, zsf, splits, spec.dim, embedding, extra))
    except BaseException:
        writer.abort()
        raise


def _write_training(writer: BundleWriter, world: World, rng: np.random.Generator, spec: LargeSpec, k_max: int,
                    map_share: float) -> None:
    """The ZSF set (features, labels, wrong zero-shot predictions) and the stored training sample."""
    zsf_index = np.sort(rng.choice(spec.train_size, spec.zsf, replace=False))
    members, _ = make_split(world, SetSpec("train", "zsf", spec.zsf, 0.0), logits=False)
    wrong = (members.labels + rng.integers(1, spec.classes, spec.zsf)) % spec.classes
    zsf = {"labels": members.labels, "refs": np.array([f"train/{i:07d}.JPEG" for i in zsf_index]),
           "train_index": zsf_index, "preds_zs": wrong, "features_ft": members.features_ft.astype(np.float16),
           **_distances(rng, np.zeros(spec.zsf), spec, k_max), "umap": drawn_map(rng, spec.zsf, map_share)}
    zsf["knn_sqdist"] *= 0.8  # members lie closer to each other than other samples to them
    sample = np.sort(rng.choice(spec.train_size, spec.train_sample, replace=False))
    train = {"labels": rng.integers(0, spec.classes, spec.train_sample),
             "refs": np.array([f"train/{i:07d}.JPEG" for i in sample]), "train_index": sample,
             "is_zsf": np.isin(sample, zsf_index), **_distances(rng, np.zeros(spec.train_sample), spec, k_max)}
    for split, arrays in (("zsf", zsf), ("train", train)):
        for array, arr in arrays.items():
            writer.put(split, array, arr)
