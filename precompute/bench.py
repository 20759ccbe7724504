"""Benchmarks on an ImageNet-shaped workload: `python -m precompute.bench [--scale imagenet|small]`.

Every figure is measured in the same run against the straightforward implementation
and printed as one markdown table (results and the machine: docs/benchmarks.md):

- live:    the six test sets' VRF accuracy after a change of a, b, k, rule or calibration;
           vrf_core.topm against the full N x C mixtures of vrf_core.evaluate, the
           predictions of both compared on every sample of every timed call
- curves:  OSE over 11 alphas + VRF over 20 values of a, same comparison
- knn:     exact kNN of evaluation samples to the ZSF set: vrf_core.knn's torch path against
           the reference approach (a flat faiss L2 index searched per dataset), plus IVF
           with measured recall; timed on a sample of the queries and extrapolated
- cold:    dashboard cold start: open the bundle, compute the first chart's accuracies, peak
           memory, each in a fresh process
- extract: each image decoded once for the zero-shot and fine-tuned models vs one pass per
           model (vrf_core.extract), and the same under torchrun with 1 and 2 processes

The workload is a seeded synthetic bundle with ImageNet's shapes (1000 classes, 512-d
features, a 128k ZSF set, the six evaluation sets at their real sizes, the 200-class
subsets and ObjectNet's 113 groups), written once with BundleWriter and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vrf_core.data import ClassProjection
from vrf_core.evaluate import ROLES_EVAL, Hyperparameters, SplitData, VRFParams, select, vrf_preds
from vrf_core.projection import project_logits

ROOT = Path(__file__).resolve().parents[1]


# ---- the workload -----------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalSet:
    name: str
    role: str
    n: int
    shift: float  # 0 = in-distribution; larger = the fine-tuned model degrades more
    classes: int = 0  # a subset of the model's classes (0 = all of them)
    grouped: bool = False  # ObjectNet: each own class is the max over a group of model classes


@dataclass(frozen=True)
class Scale:
    classes: int
    dim: int
    zsf: int
    train_size: int
    train_sample: int
    k_max: int
    sets: tuple[EvalSet, ...]
    knn_queries: int  # evaluation samples timed in the kNN figure (spread over the sets)
    images: int  # images in the extraction figure
    wse_alphas: tuple[float, ...] | None = tuple(round(i / 10, 1) for i in range(11))
    tune_rows: int = 2000  # rows of the validation split the stored selection is chosen on
    seed: int = 0


IMAGENET_SETS = (  # the real sizes; A and R are 200-class subsets, ObjectNet 113 groups of classes
    EvalSet("val", "id_val", 10_000, 0.0),  # held out from the training set, for tuning
    EvalSet("imagenet", "id_test", 50_000, 0.0),
    EvalSet("imagenet_v2", "ood", 10_000, 0.25),
    EvalSet("imagenet_sketch", "ood", 50_889, 0.8),
    EvalSet("imagenet_a", "ood", 7_500, 1.0, 200),
    EvalSet("imagenet_r", "ood", 30_000, 0.9, 200),
    EvalSet("objectnet", "ood", 18_574, 0.7, 113, grouped=True),
)
SCALES = {
    "imagenet": Scale(1000, 512, 128_000, 1_281_167, 50_000, 100, IMAGENET_SETS, knn_queries=2048, images=192),
    # The same structure, about 1/50 of the samples and 1/10 of the classes: a quick run.
    "small": Scale(100, 64, 2_000, 20_000, 2_000, 20,
                   tuple(replace(e, n=max(300, e.n // 50), classes=e.classes // 10) for e in IMAGENET_SETS),
                   knn_queries=512, images=16, wse_alphas=(0.0, 0.5, 1.0), tune_rows=400),
}
UMAP_MAX_POINTS = 20_000  # precompute's default (AssembleSettings.umap_max_points)
GENERATOR = 4  # bump when World changes: a bundle written by another generator is rebuilt
CHUNK = 4096  # rows generated at a time (the class subspaces gathered per row: 128 MiB)
LOGIT_SCALE = 100.0  # CLIP's


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class World:
    """Class prototypes, a robust zero-shot head and a sharper fine-tuned head. A sample's spread
    around its prototype lies mostly in a 16-dimensional subspace of its class, so that nearest
    neighbours are of the same class as in real CLIP features. A shift pushes features along a
    domain direction, which the fine-tuned encoder follows more: about 66 / 80 % accuracy
    (zero-shot / fine-tuned) in distribution, 51 / 35 % at the largest shift."""

    def __init__(self, sc: Scale, rng: np.random.Generator, rank: int = 16):
        c, d = sc.classes, sc.dim
        self.rng, self.dim, self.rank = rng, d, rank
        self.protos = _unit(rng.standard_normal((c, d)))
        self.basis = np.linalg.qr(rng.standard_normal((c, d, rank), dtype=np.float32))[0]  # (C, D, r)
        self.head_zs = _unit(self.protos + 0.5 * self._noise(c))
        self.head_ft = _unit(self.protos + 0.3 * self._noise(c))
        self.domain = _unit(rng.standard_normal(d))

    def _noise(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)

    def features(self, labels: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(f_zs, f_ft) L2-normalised; shift: (n,) per-sample strength."""
        z = self.rng.standard_normal((len(labels), self.rank, 1), dtype=np.float32) / np.sqrt(self.rank)
        g = 0.95 * (self.basis[labels] @ z)[:, :, 0] + 0.3 * self._noise(len(labels))
        s = shift[:, None]
        f_zs = _unit(self.protos[labels] + 5.6 * (1 + 0.15 * s) * g + 0.5 * s * self.domain)
        f_ft = _unit(self.protos[labels] + 5.2 * (1 + 0.5 * s) * g + 2.0 * s * self.domain)
        return f_zs, f_ft

    def sqdist(self, shift: np.ndarray, k: int) -> np.ndarray:
        """Sorted squared distances to the ZSF set, growing with the shift (the paper's Fig. 2)."""
        d1 = np.clip(0.95 + 0.55 * shift + 0.1 * self.rng.standard_normal(len(shift)), 0.05, 3.0)
        steps = self.rng.exponential(0.004, size=(len(shift), k))
        return np.clip(d1[:, None] + np.cumsum(steps, axis=1) - steps[:, :1], 0.0, 4.0).astype(np.float32)


def _set_classes(es: EvalSet, sc: Scale, rng) -> tuple[ClassProjection | None, list[np.ndarray] | None]:
    if not es.classes:
        return None, None
    if not es.grouped:
        classes = np.sort(rng.choice(sc.classes, es.classes, replace=False))
        return ClassProjection.subset(classes.tolist()), [classes[[j]] for j in range(es.classes)]
    # ObjectNet: 113 classes over 313 ImageNet classes; every group gets at least one.
    members = rng.choice(sc.classes, max(es.classes, round(0.313 * sc.classes)), replace=False)
    owner = np.concatenate([np.arange(es.classes), rng.integers(0, es.classes, len(members) - es.classes)])
    groups = [np.sort(members[owner == j]) for j in range(es.classes)]
    return ClassProjection(tuple(tuple(int(i) for i in g) for g in groups)), groups


def eval_arrays(world: World, sc: Scale, es: EvalSet) -> tuple[dict[str, np.ndarray], ClassProjection | None]:
    """One evaluation split's bundle arrays, generated in row chunks."""
    rng = world.rng
    projection, groups = _set_classes(es, sc, rng)
    n_own = len(groups) if groups else sc.classes
    labels = rng.integers(0, n_own, es.n)
    if groups:
        labels_model = np.array([g[rng.integers(len(g))] for g in (groups[y] for y in labels)])
    else:
        labels_model = labels
    shift = es.shift * rng.uniform(0.5, 1.5, es.n) if es.shift else np.zeros(es.n)
    out = {
        "labels": labels.astype(np.int64),
        "refs": np.array([f"{es.name}/{i:06d}.JPEG" for i in range(es.n)]),
        "features_zs": np.empty((es.n, sc.dim), np.float16),
        "features_ft": np.empty((es.n, sc.dim), np.float16),
        "logits_zs": np.empty((es.n, sc.classes), np.float32),
        "logits_ft": np.empty((es.n, sc.classes), np.float32),
    }
    if sc.wse_alphas:
        out["logits_wse"] = np.empty((len(sc.wse_alphas), es.n, sc.classes), np.float16)
    for s in range(0, es.n, CHUNK):
        e = min(s + CHUNK, es.n)
        f_zs, f_ft = world.features(labels_model[s:e], shift[s:e])
        out["features_zs"][s:e], out["features_ft"][s:e] = f_zs, f_ft
        out["logits_zs"][s:e] = LOGIT_SCALE * f_zs @ world.head_zs.T
        out["logits_ft"][s:e] = LOGIT_SCALE * f_ft @ world.head_ft.T
        for i, a in enumerate(sc.wse_alphas or ()):
            out["logits_wse"][i, s:e] = (1 - a) * out["logits_zs"][s:e] + a * out["logits_ft"][s:e]
    sq = world.sqdist(shift, sc.k_max)
    out["knn_sqdist"] = sq
    out["knn_index"] = rng.integers(0, sc.zsf, sq.shape, dtype=np.int32)
    out["score_mahalanobis"] = (-sq[:, 0] * 40 + rng.standard_normal(es.n)).astype(np.float32)
    out["score_relative_mahalanobis"] = (-sq[:, 0] * 5 + rng.standard_normal(es.n)).astype(np.float32)
    out["score_knn"] = -np.sqrt(sq[:, 9 if sc.k_max >= 10 else -1])
    out["umap"] = map_coords(rng, es.n, sc)
    return out, projection


def map_coords(rng: np.random.Generator, n: int, sc: Scale) -> np.ndarray:
    """Embedding-map coordinates as precompute writes them: each split's share of
    `umap_max_points` (its default) drawn, the other rows NaN."""
    total = sum(es.n for es in sc.sets) + sc.zsf
    xy = np.full((n, 2), np.nan, np.float32)
    rows = rng.choice(n, max(1, round(n * min(1.0, UMAP_MAX_POINTS / total))), replace=False)
    xy[rows] = rng.standard_normal((len(rows), 2), dtype=np.float32)
    return xy


def write_workload(path: Path, sc: Scale) -> Path:
    """The ImageNet-shaped bundle at `path`, reused when its recorded settings match."""
    from precompute.assemble import _versions
    from precompute.derived import derive
    from vrf_core.bundle import BundleWriter, open_bundle
    from vrf_core.weights import k_from_rule

    settings = json.loads(json.dumps({**asdict(sc), "generator": GENERATOR}))
    try:
        if open_bundle(path).manifest.get("config", {}).get("benchmark") == settings:
            return path
    except Exception:  # absent, stale or half-written: rebuild
        pass
    t0 = time.perf_counter()
    rng = np.random.default_rng(sc.seed)
    world = World(sc, rng)
    writer = BundleWriter(path)
    meta, tune = {}, {}
    for es in sc.sets:
        arrays, projection = eval_arrays(world, sc, es)
        for name, arr in arrays.items():
            writer.put(es.name, name, arr)
        own = projection.num_classes if projection else None
        meta[es.name] = {"role": es.role, "n": es.n,
                         "classnames": [f"{es.name}_class_{j}" for j in range(own)] if own else None,
                         "projection": projection.to_json() if projection else None, "source": {"synthetic": True}}
        if es.role in ("id_val", "id_test"):
            rows = slice(0, min(es.n, sc.tune_rows))
            tune[es.role] = SplitData(es.name, es.role, arrays["labels"][rows],
                                      project_logits(arrays["logits_zs"][rows], projection),
                                      project_logits(arrays["logits_ft"][rows], projection), arrays["knn_sqdist"][rows],
                                      arrays.get("logits_wse", np.zeros((0,)))[:, rows] if sc.wse_alphas else None,
                                      {n: arrays[f"score_{n}"][rows] for n in ("mahalanobis", "knn")})
        del arrays
    zsf_index = np.sort(rng.choice(sc.train_size, sc.zsf, replace=False))
    zsf_labels = rng.integers(0, sc.classes, sc.zsf)
    zsf_feats = np.empty((sc.zsf, sc.dim), np.float16)
    for s in range(0, sc.zsf, CHUNK):
        e = min(s + CHUNK, sc.zsf)
        zsf_feats[s:e] = world.features(zsf_labels[s:e], np.zeros(e - s))[1]
    zsf_sq = world.sqdist(np.zeros(sc.zsf), sc.k_max) * 0.8
    for name, arr in (("labels", zsf_labels), ("refs", np.array([f"train/{i:07d}.JPEG" for i in zsf_index])),
                      ("train_index", zsf_index), ("preds_zs", (zsf_labels + rng.integers(1, sc.classes, sc.zsf))
                                                   % sc.classes),
                      ("features_ft", zsf_feats), ("knn_sqdist", zsf_sq),
                      ("knn_index", rng.integers(0, sc.zsf, zsf_sq.shape, dtype=np.int32)),
                      ("umap", map_coords(rng, sc.zsf, sc))):
        writer.put("zsf", name, arr)
    sample = np.sort(rng.choice(sc.train_size, sc.train_sample, replace=False))
    train_sq = world.sqdist(np.zeros(sc.train_sample), sc.k_max)
    for name, arr in (("labels", rng.integers(0, sc.classes, sc.train_sample)),
                      ("refs", np.array([f"train/{i:07d}.JPEG" for i in sample])), ("train_index", sample),
                      ("is_zsf", np.isin(sample, zsf_index)), ("knn_sqdist", train_sq),
                      ("knn_index", rng.integers(0, sc.zsf, train_sq.shape, dtype=np.int32))):
        writer.put("train", name, arr)
    k_rule = min(k_from_rule("reference", sc.zsf, sc.train_size), sc.k_max)
    alphas = [round(i / 10, 2) for i in range(11)]
    wse = list(sc.wse_alphas) if sc.wse_alphas else None
    selection = {mode: select(tune[role], wse, alphas, [k_rule]).to_json()
                 for mode, role in (("validation", "id_val"), ("oracle", "id_test"))}
    meta = {"train": {"role": "id_train", "n": sc.train_sample, "classnames": None, "projection": None,
                      "source": {"synthetic": True}},
            "zsf": {"role": "zsf", "n": sc.zsf, "classnames": None, "projection": None,
                    "source": {"synthetic": True}}, **meta}
    manifest = {
        "name": f"benchmark-{len(sc.sets)}-sets-{sc.classes}-classes",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "classnames": [f"class_{i:04d}" for i in range(sc.classes)], "templates": ["a photo of a {}."],
        "num_classes": sc.classes, "feature_dim": sc.dim, "splits": meta,
        "zsf": {"size": sc.zsf, "train_size": sc.train_size, "k_rule": "reference", "k_rule_value": k_rule},
        "ensemble": {"wse_alphas": wse, "ose_alphas": alphas, "k_max": sc.k_max, "distance": "squared",
                     "calibration": "confidence", "weight_rule": "sigmoid"},
        "selection": selection,
        "embedding": {"method": "synthetic", "metric": "cosine", "n_neighbors": None, "max_points": UMAP_MAX_POINTS},
        "models": {m: {"name": "synthetic", "pretrained": None, "sha256": None} for m in ("zs", "ft")},
        "preprocessing": {"synthetic": True},
        "config": {"benchmark": settings, "note": f"selection chosen on the first {sc.tune_rows} rows"},
        "versions": _versions(),
    }
    # As precompute does: predictions, live tables and results tables (precompute/derived.py).
    selections = {mode: Hyperparameters.from_json(j) for mode, j in selection.items()}
    manifest.update(derive(writer.staged(manifest), writer, selections))
    writer.finalize(manifest)
    print(f"wrote the benchmark bundle {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


# ---- measuring ----------------------------------------------------------------------------------

def timed(fn: Callable, repeats: int) -> tuple[float, object]:
    """Median wall seconds of `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


@dataclass
class Row:
    figure: str
    fast: str
    baseline: str
    ratio: str
    target: str
    met: str
    note: str = ""


def _ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.1f}x" if fast > 0 else "-"


def _ms(s: float) -> str:
    return f"{1000 * s:.1f} ms" if s < 10 else f"{s:.1f} s"


def _splits(path: Path, mode: str = "validation"):
    from vrf_core.bundle import open_bundle

    bundle = open_bundle(path)
    sel = Hyperparameters.from_json(bundle.manifest["selection"][mode])
    names = bundle.split_names("id_test") + bundle.split_names("ood")
    return bundle, sel, [bundle.split_data(n) for n in names]


def param_changes(base: VRFParams) -> list[VRFParams]:
    """One change of each control: a, b, k, rule (linear, binary), calibration, scale."""
    return [replace(base, a=base.a + 0.1), replace(base, b=base.b * 2), replace(base, k=max(1, base.k // 2)),
            replace(base, rule="linear"), replace(base, rule="binary"), replace(base, calibrate=not base.calibrate),
            replace(base, scale="l2", a=float(np.sqrt(base.a)), b=base.b / 2), base]


def accuracies(preds: list[np.ndarray], splits: list[SplitData]) -> list[float]:
    """What the chart shows: each split's accuracy."""
    return [float((p == s.labels).mean()) for p, s in zip(preds, splits)]


def bench_live(path: Path, repeats: int, m: int) -> list[Row]:
    from vrf_core.topm import TopMSplit, ose_curve, vrf_curve

    _, sel, splits = _splits(path)
    temps = (sel.t_zs, sel.t_ft)
    t0 = time.perf_counter()
    lives = [TopMSplit.from_split_data(s, *temps, m=m) for s in splits]
    for live in lives:
        live.mixture_preds(0.5, True)
    build_cal = time.perf_counter() - t0
    t0 = time.perf_counter()
    for live in lives:
        live.mixture_preds(0.5, False)
    build_uncal = time.perf_counter() - t0
    for s in splits:  # the baseline's softmaxes, cached as the dashboard caches them
        for model, t in (("zs", temps[0]), ("ft", temps[1]), ("zs", 1.0), ("ft", 1.0)):
            s.probs(model, t)
    changes = param_changes(sel.vrf)
    n = sum(len(s) for s in splits)
    fast_t, base_t, fallback0 = [], [], sum(live.fallback_rows for live in lives)
    full: dict[int, list[np.ndarray]] = {}
    for rep in range(repeats):
        for j, p in enumerate(changes):
            t0 = time.perf_counter()
            fast = [live.vrf_preds(p) for live in lives]
            accuracies(fast, splits)
            fast_t.append(time.perf_counter() - t0)
            if rep < max(1, repeats // 2):  # the slow side fewer times
                t0 = time.perf_counter()
                full[j] = [vrf_preds(s, p, temps) for s in splits]
                accuracies(full[j], splits)
                base_t.append(time.perf_counter() - t0)
            for f, g, s in zip(fast, full[j], splits):  # every call, every sample
                if not np.array_equal(f, g):
                    raise AssertionError(f"live VRF differs from the full mixture on {s.name} at {p}: "
                                         f"{int((f != g).sum())} samples")
    fallback = (sum(live.fallback_rows for live in lives) - fallback0) / (n * len(changes) * repeats)
    live_fast, live_base = float(np.median(fast_t)), float(np.median(base_t))

    alphas = [round(i / 10, 2) for i in range(11)]
    a_values = np.linspace(max(0.05, sel.vrf.a - 1.0), sel.vrf.a + 1.0, 20)

    def curves_fast():
        return ose_curve(lives, alphas, calibrated=False), vrf_curve(lives, sel.vrf, a_values)

    def curves_full():
        from vrf_core.evaluate import mixture_preds

        ose = [[(mixture_preds(s, al, 1.0, 1.0) == s.labels).mean() for s in splits] for al in alphas]
        vrf = [[(vrf_preds(s, replace(sel.vrf, a=float(a)), temps) == s.labels).mean() for s in splits]
               for a in a_values]
        return np.array(ose), np.array(vrf)

    cf, (ose_f, vrf_f) = timed(curves_fast, repeats)
    cb, (ose_b, vrf_b) = timed(curves_full, max(1, repeats // 3))
    if not (np.array_equal(ose_f, ose_b) and np.array_equal(vrf_f, vrf_b)):
        raise AssertionError("live curves differ from the full mixtures")
    sizes = "+".join(f"{len(s) / 1000:.1f}k" for s in splits)
    return [
        Row("live re-weighting: VRF accuracy of the six test sets after one change of a/b/k/rule/calibration",
            _ms(live_fast), _ms(live_base), _ratio(live_base, live_fast), "<= 100 ms, >= 20x",
            "yes" if live_fast <= 0.1 and live_base / live_fast >= 20 else "no",
            f"{n} samples ({sizes}); median of {len(fast_t)} fast and {len(base_t)} full calls over "
            f"{len(changes)} changes; predictions equal on every sample of every call; m = {m}, "
            f"full rows recomputed for {100 * fallback:.3f}% of samples"),
        Row("trade-off curves: OSE 11 alphas + VRF 20 values of a, six test sets", _ms(cf), _ms(cb),
            _ratio(cb, cf), "<= 1 s", "yes" if cf <= 1.0 else "no", "accuracies equal"),
        Row("live tables: build for the calibrated / uncalibrated temperatures (once per bundle)",
            f"{build_cal:.2f} s / {build_uncal:.2f} s", "-", "-", "(precompute, stored)", "-",
            "the full softmax of both models, top-m kept; precompute stores them in the bundle, the dashboard "
            "builds them only for bundles written without them"),
    ]


def _exact_reference(queries: list[np.ndarray], base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference approach: a flat faiss L2 index on the ZSF set, searched per dataset."""
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    out = [index.search(q, k) for q in queries]
    return np.concatenate([d for d, _ in out]), np.concatenate([i for _, i in out])


def bench_knn(path: Path, sc: Scale, repeats: int) -> list[Row]:
    import faiss
    import torch

    from vrf_core.bundle import open_bundle
    from vrf_core.knn import knn_sqdist, l2_normalize

    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    bundle = open_bundle(path)
    base = l2_normalize(np.asarray(bundle.array("zsf", "features_ft"), np.float32))
    names = bundle.split_names("id_test") + bundle.split_names("ood")
    total = sum(bundle.splits[s]["n"] for s in names)
    queries = []
    for s in names:
        take = max(1, round(sc.knn_queries * bundle.splits[s]["n"] / total))
        queries.append(l2_normalize(np.asarray(bundle.array(s, "features_ft")[:take], np.float32)))
    nq, k = sum(len(q) for q in queries), sc.k_max
    scale_up = total / nq
    every = np.concatenate(queries)
    ref_t, (ref_d, ref_i) = timed(lambda: _exact_reference(queries, base, k), max(1, repeats // 3))
    fast_t, (fast_d, fast_i) = timed(lambda: knn_sqdist(every, base, k, backend="torch"), max(1, repeats // 3))
    worst = float(np.abs(fast_d - ref_d).max())
    if worst > 1e-4:
        raise AssertionError(f"torch kNN distances differ from the flat index by {worst}")
    same = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(fast_i, ref_i)]))
    lists = int(2 ** int(np.log2(min(3 * np.sqrt(len(base)), len(base) / 39))))  # faiss: >= 39 points a list
    t0 = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.train(base)  # what knn_sqdist(..., ivf_lists=lists) builds, timed apart from the search
    index.add(base)
    build_t = time.perf_counter() - t0
    desc = f"{nq} of {total} queries x {len(base)} ZSF, k = {k}, {threads} threads"
    rows = [Row(f"kNN exact: {desc}", _ms(fast_t), _ms(ref_t), _ratio(ref_t, fast_t), ">= 1x (as fast as flat L2)",
                "yes" if fast_t <= ref_t else "no",
                f"torch matmul + top-k (knn_sqdist backend 'torch', now 'auto') vs faiss IndexFlatL2 per dataset; all "
                f"{total} queries extrapolated: {fast_t * scale_up / 60:.1f} vs {ref_t * scale_up / 60:.1f} min; max "
                f"distance diff {worst:.1e}, same neighbours {100 * same:.2f}% (the rest are ties)")]
    for nprobe in (32, 128):
        index.nprobe = nprobe
        ivf_t, (_, ivf_i) = timed(lambda: index.search(every, k), 1)
        recall = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ivf_i, ref_i)]))
        recall1 = float(np.mean(ivf_i[:, 0] == ref_i[:, 0]))
        rows.append(Row(f"kNN approximate: IVF{lists}, nprobe {nprobe}, same queries (search only)", _ms(ivf_t),
                        _ms(ref_t), _ratio(ref_t, ivf_t), "recall measured", "-",
                        f"recall@{k} {recall:.3f}, recall@1 {recall1:.3f} on this synthetic geometry; index build "
                        f"{build_t:.1f} s once; all queries extrapolated {(build_t + ivf_t * scale_up) / 60:.1f} min"))
    return rows


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not carry the parent's
    peak over a fork and exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cold_start(path: Path, mode: str) -> dict:
    """In this (fresh) process: open the bundle and compute what the first chart shows, the
    zero-shot, fine-tuned and VRF accuracy of every evaluation split."""
    import vrf_core.topm  # noqa: F401  (imports are not part of the figure)
    from vrf_core.bundle import open_bundle
    from vrf_core.topm import TopMSplit

    rss0 = peak_rss_gib()
    t0 = time.perf_counter()
    bundle = open_bundle(path)
    sel = Hyperparameters.from_json(bundle.manifest["selection"]["validation"])
    accs = {}
    for name in bundle.split_names(*ROLES_EVAL):
        if mode == "fast":  # as the dashboard: the stored live tables, the logits left unread
            split = bundle.split_data(name, wse=False, lazy=True)
            live = TopMSplit.from_split_data(split, sel.t_zs, sel.t_ft, tables=bundle.live_tables(name))
            preds = [live.model_preds("zs"), live.model_preds("ft"), live.vrf_preds(sel.vrf)]
        else:
            split = bundle.split_data(name)
            preds = [np.asarray(split.logits_zs).argmax(1), np.asarray(split.logits_ft).argmax(1),
                     vrf_preds(split, sel.vrf, (sel.t_zs, sel.t_ft))]
        accs[name] = accuracies(preds, [split] * 3)
    seconds = time.perf_counter() - t0
    rss = peak_rss_gib()
    t0 = time.perf_counter()
    if mode == "fast":  # what a bundle written without the stored tables costs: building them here
        for name in bundle.split_names(*ROLES_EVAL):
            TopMSplit.from_split_data(bundle.split_data(name, wse=False), sel.t_zs, sel.t_ft).tables()
    return {"seconds": seconds, "peak_rss_gib": rss, "imports_rss_gib": rss0, "accuracy": accs,
            "build_seconds": time.perf_counter() - t0}


def bench_cold(path: Path, repeats: int) -> list[Row]:
    runs: dict[str, list[dict]] = {"fast": [], "full": []}
    for _ in range(max(1, repeats // 2)):
        for mode in runs:
            cmd = [sys.executable, "-m", "precompute.bench", "--cold-start", mode, "--bundle", str(path)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    if runs["fast"][0]["accuracy"] != runs["full"][0]["accuracy"]:
        raise AssertionError("cold start: the live accuracies differ from the full computation")
    med = {m: (float(np.median([r["seconds"] for r in rs])), max(r["peak_rss_gib"] for r in rs))
           for m, rs in runs.items()}
    (tf, mf), (tb, mb) = med["fast"], med["full"]
    return [Row("dashboard cold start: open the bundle, zero-shot / fine-tuned / VRF accuracy of all 7 splits",
                f"{tf:.2f} s, {mf:.2f} GiB", f"{tb:.2f} s, {mb:.2f} GiB", _ratio(tb, tf), "<= 5 s, <= 4 GB",
                "yes" if tf <= 5 and mf * 2**30 <= 4e9 else "no",
                f"fresh process each, median of {len(runs['fast'])}, warm OS page cache; peak RSS includes the "
                f"imports ({runs['fast'][0]['imports_rss_gib']:.2f} GiB) and the memory-mapped pages read. Fast: "
                "the live tables precompute stored, logits left unread (split_data(lazy=True)); building the "
                "tables from the logits instead (bundles written without them) took "
                f"{np.median([r['build_seconds'] for r in runs['fast']]):.1f} s more; straightforward: "
                "split_data with WSE and full mixtures")]


# ---- extraction -----------------------------------------------------------------------------------

# Small open_clip image towers (random weights): "tiny" is tests/tiny.py's model, whose forward pass is
# cheap next to decoding a photo (as on a GPU); "small" costs about a third of the decode on one core.
CLIPS = {
    "tiny": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
    "small": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 3, "width": 128, "patch_size": 8},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
}


def image_tree(root: Path, n: int, seed: int = 0) -> Path:
    """n photo-sized JPEGs (500 x 375, ImageNet's typical size) in 4 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((500, 375), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def small_models(clip: str, n_classes: int = 1000):
    """Two open_clip image classifiers of architecture CLIPS[clip] with different random weights,
    and the evaluation transform."""
    import open_clip
    import torch

    from vrf_core.models import ImageClassifier

    name = f"bench-{clip}-clip"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{name}.json").write_text(json.dumps(CLIPS[clip]))
        open_clip.add_model_config(Path(tmp) / f"{name}.json")
    models = {}
    for seed, role in enumerate(("zs", "ft")):
        torch.manual_seed(seed)
        model, _, transform = open_clip.create_model_and_transforms(name)
        head = torch.nn.functional.normalize(torch.randn(n_classes, CLIPS[clip]["embed_dim"]), dim=-1) * 100
        models[role] = ImageClassifier(model.visual, head)
    return models, transform


def extract_seconds(models: dict, transform, images, separate: bool) -> float:
    """Seconds to extract features and logits of every image (this process's shard under torchrun)
    for both models: in one pass, or one pass per model (`separate`)."""
    from vrf_core.distributed import barrier
    from vrf_core.extract import extract

    barrier()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        groups = [{m: mod} for m, mod in models.items()] if separate else [models]
        for i, group in enumerate(groups):
            shard_dir = Path(os.environ.get("BENCH_SHARDS", tmp)) / str(i)
            extract(group, images, transform, batch_size=32, workers=0, shard_dir=shard_dir, desc="bench")
    barrier()
    return time.perf_counter() - t0


def extract_worker(folder: Path, clip: str, compare: int) -> None:
    """Prints JSON: with `compare` > 0, {"once": [...], "apart": [...]} seconds of that many
    interleaved runs of each; otherwise (under torchrun) rank 0 prints {"seconds"} of one run."""
    import torch

    from vrf_core.data import image_folder
    from vrf_core.distributed import init_distributed, is_main

    init_distributed()
    models, transform = small_models(clip)
    images = image_folder("bench", folder)
    with torch.no_grad():  # first calls initialise kernels: not part of the figure
        for model in models.values():
            model.eval()(transform(images.load(0))[None])
    if compare:
        runs = {"once": [], "apart": []}
        for _ in range(compare):  # interleaved, so that both see the same machine load
            for mode in runs:
                runs[mode].append(extract_seconds(models, transform, images, mode == "apart"))
        print(json.dumps(runs))
    else:
        seconds = extract_seconds(models, transform, images, False)
        if is_main():
            print(json.dumps({"seconds": seconds}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def bench_extract(sc: Scale, repeats: int, work: Path) -> list[Row]:
    """Each figure in a fresh process with one torch thread per process: on a shared 2-core
    machine two OpenMP threads spin against each other's load (several times slower here)."""
    folder = image_tree(work / "images", sc.images)

    def worker(*extra: str, procs: int = 0) -> dict:
        launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_port=29533"] if procs else []
        cmd = [sys.executable, *launcher, "-m", "precompute.bench", "--extract-worker", str(folder), *extra]
        env = {**os.environ, "BENCH_SHARDS": str(work / "shards"), "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    n, rows = sc.images, []
    for clip in ("tiny", "small") if n >= 64 else ("tiny",):
        runs = worker("--clip", clip, "--compare", str(repeats))
        once, apart = float(np.median(runs["once"])), float(np.median(runs["apart"]))
        v = CLIPS[clip]["vision_cfg"]
        rows.append(Row(f"extraction, zero-shot + fine-tuned: one decode vs a pass per model; {n} JPEGs 500x375, "
                        f"{clip} CLIP ({v['image_size']} px, {v['layers']} layers, width {v['width']})",
                        f"{n / once:.1f} img/s", f"{n / apart:.1f} img/s", _ratio(apart, once),
                        ">= 1.8x" if clip == "tiny" else "report",
                        ("yes" if apart / once >= 1.8 else "no") if clip == "tiny" else "-",
                        f"1 process, 1 torch thread, median of {repeats} interleaved"))
    if n >= 64:
        t1 = float(np.median([worker(procs=1)["seconds"] for _ in range(max(1, repeats // 2))]))
        t2 = float(np.median([worker(procs=2)["seconds"] for _ in range(max(1, repeats // 2))]))
        rows.append(Row("extraction under torchrun (tiny CLIP, one decode): 2 processes vs 1", f"{n / t2:.1f} img/s",
                        f"{n / t1:.1f} img/s", _ratio(t1, t2), "report", "-",
                        f"{os.cpu_count()} cores, 1 thread per process; shards written and gathered by rank 0"))
    return rows


# ---- the table ------------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import faiss
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU used; Python {platform.python_version()}, "
            f"numpy {np.__version__}, torch {torch.__version__}, faiss {faiss.__version__}")


def load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def table(rows: list[Row]) -> str:
    lines = ["| figure | fast | straightforward | ratio | target | met | notes |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.fast} | {r.baseline} | {r.ratio} | {r.target} | {r.met} | {r.note} |" for r in rows]
    return "\n".join(lines)


FIGURES = ("live", "knn", "cold", "extract")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=list(SCALES), default="imagenet")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES))
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the fast paths (fewer of the slow ones)")
    parser.add_argument("--bundle", help="where the workload bundle is written and reused "
                                         "(default: bundles/bench-<scale>)")
    parser.add_argument("--m", type=int, default=5, help="top classes kept per model for live re-weighting")
    parser.add_argument("--cold-start", choices=["fast", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--extract-worker", help=argparse.SUPPRESS)
    parser.add_argument("--clip", choices=list(CLIPS), default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--compare", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_start:
        print(json.dumps(cold_start(Path(args.bundle), args.cold_start)))
        return 0
    if args.extract_worker:
        extract_worker(Path(args.extract_worker), args.clip, args.compare)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sc = SCALES[args.scale]
    path = Path(args.bundle or ROOT / "bundles" / f"bench-{args.scale}")
    started = load()
    rows: list[Row] = []
    if {"live", "knn", "cold"} & set(args.only):
        write_workload(path, sc)
    if "live" in args.only:
        rows += bench_live(path, args.repeats, args.m)
    if "knn" in args.only:
        rows += bench_knn(path, sc, args.repeats)
    if "cold" in args.only:
        rows += bench_cold(path, args.repeats)
    if "extract" in args.only:
        with tempfile.TemporaryDirectory() as work:
            rows += bench_extract(sc, args.repeats, Path(work))
    note = "" if args.scale == "imagenet" else " The targets are for --scale imagenet; this scale checks the code."
    print(f"## Benchmark, scale {args.scale}\n\n{machine()}\n\nAt start: {started}; at end: {load()}.{note}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
