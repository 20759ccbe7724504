"""Seeded synthetic bundles: the arrays a real run would produce, from a generative
model of features instead of images. For benchmarks and dashboard tests; the demo
world (`precompute demo`) is the real, model-based default.

Features: each class has a prototype; the zero-shot encoder sees every domain
equally (robust, mediocre head), the fine-tuned encoder is sharp in-distribution
and drifts along a domain direction under shift (accurate ID, brittle OOD).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from precompute.assemble import AssembleSettings, Extracted, assemble
from vrf_core.bundle import Bundle
from vrf_core.data import ClassProjection


@dataclass
class SyntheticSpec:
    num_classes: int = 20
    dim: int = 64
    n_train: int = 4000
    n_val: int = 600
    n_test: int = 1000
    # name -> (n, shift strength, number of classes in a projected subset or 0)
    ood: tuple = (("shift_v2", 1000, 0.25, 0), ("shift_sketch", 1000, 0.8, 0),
                  ("shift_hard", 600, 1.0, 12), ("shift_render", 800, 1.2, 0))
    thumbs: bool = True
    seed: int = 0


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _thumbs(labels: np.ndarray, shift: float, num_classes: int, rng: np.random.Generator) -> list[bytes]:
    """Small JPEGs: a hue per class, noisier and greyer as the shift grows."""
    out = []
    for y in labels:
        hue = np.array([np.sin(y * 2.4), np.sin(y * 2.4 + 2.1), np.sin(y * 2.4 + 4.2)]) * 0.5 + 0.5
        img = np.ones((32, 32, 3)) * hue * (1 - 0.5 * min(shift, 1.0)) + rng.normal(0, 0.1 + 0.2 * shift, (32, 32, 3))
        buf = io.BytesIO()
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def make_split(spec: SyntheticSpec, rng, protos, heads, domain, n: int, shift: float, role: str,
               wse_alphas, subset: int = 0) -> Extracted:
    c, d = protos.shape
    w_zs, w_ft = heads
    if subset:
        classes = np.sort(rng.choice(c, subset, replace=False))
        labels_model = classes[rng.integers(0, subset, n)]
        labels = np.searchsorted(classes, labels_model)
        projection = ClassProjection.subset(classes.tolist())
    else:
        labels_model = labels = rng.integers(0, c, n)
        projection = None
    noise = rng.normal(size=(n, d)).astype(np.float32)
    f_zs = _unit(protos[labels_model] + 0.55 * noise / np.sqrt(d) * 6 + 0.2 * shift * domain)
    f_ft = _unit(protos[labels_model] + (0.35 + 0.9 * shift) * noise / np.sqrt(d) * 6 + 1.1 * shift * domain)
    scale = 30.0
    logits_zs = scale * f_zs @ w_zs.T
    logits_ft = scale * f_ft @ w_ft.T
    wse = None
    if wse_alphas is not None and role != "id_train":
        wse = np.stack([scale * _unit((1 - a) * f_zs + a * f_ft) @ _unit((1 - a) * w_zs + a * w_ft).T
                        for a in wse_alphas]).astype(np.float16)
    return Extracted(
        role=role, labels=labels, refs=np.array([f"synthetic/{role}/{i}" for i in range(n)]),
        features_ft=f_ft, features_zs=f_zs, logits_zs=logits_zs, logits_ft=logits_ft, logits_wse=wse,
        thumbs=_thumbs(labels_model, shift, c, rng) if spec.thumbs and role != "id_train" else None,
        classnames=None, projection=projection, source={"synthetic": True, "shift": shift})


def write_synthetic_bundle(out_dir, spec: SyntheticSpec | None = None,
                           settings: AssembleSettings | None = None) -> Bundle:
    spec = spec or SyntheticSpec()
    settings = settings or AssembleSettings(k_max=50, wse_alphas=[round(i / 10, 2) for i in range(11)],
                                            umap_max_points=5000)
    rng = np.random.default_rng(spec.seed)
    protos = _unit(rng.normal(size=(spec.num_classes, spec.dim)))
    heads = (_unit(protos + 0.35 * rng.normal(size=protos.shape) / np.sqrt(spec.dim) * 3), protos)
    domain = _unit(rng.normal(size=spec.dim))
    mk = lambda n, shift, role, subset=0: make_split(spec, rng, protos, heads, domain, n, shift, role,  # noqa: E731
                                                     settings.wse_alphas, subset)
    train = mk(spec.n_train, 0.0, "id_train")
    evals = {"val": mk(spec.n_val, 0.0, "id_val"), "test": mk(spec.n_test, 0.0, "id_test")}
    for name, n, shift, subset in spec.ood:
        evals[name] = mk(n, shift, "ood", subset)
        if subset:
            classes = [g[0] for g in evals[name].projection.groups]
            evals[name].classnames = [f"class_{i:03d}" for i in classes]
    classnames = [f"class_{i:03d}" for i in range(spec.num_classes)]

    def zsf_thumbs(idx: np.ndarray) -> list[bytes]:
        return _thumbs(np.asarray(train.labels)[idx], 0.0, spec.num_classes, rng) if spec.thumbs else []

    extra = {
        "classnames": classnames,
        "templates": ["a photo of a {}."],
        "models": {"zs": {"name": "synthetic", "pretrained": None, "sha256": None},
                   "ft": {"name": "synthetic", "pretrained": None, "sha256": None}},
        "preprocessing": {"synthetic": True},
        "config": {"synthetic": spec.__dict__},
    }
    return assemble(out_dir, "synthetic", train, evals, settings, extra,
                    zsf_thumbs if spec.thumbs else None)
