"""The small synthetic bundle (`python -m precompute synthetic`, the dashboard tests): a 20-class
world written through `precompute.assemble.assemble` like a real run (ZSF set from the
training split's predictions, exact kNN, routing scores, embedding map), with thumbnails."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from precompute.assemble import AssembleSettings, assemble
from precompute.synthetic.splits import SetSpec, make_split
from precompute.synthetic.world import TOY, World
from vrf_core.bundle import Bundle


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


def thumbnails(labels: np.ndarray, shift: float, rng: np.random.Generator) -> list[bytes]:
    """Small JPEGs: a hue per model class, noisier and greyer as the shift grows."""
    out = []
    for y in labels:
        hue = np.array([np.sin(y * 2.4), np.sin(y * 2.4 + 2.1), np.sin(y * 2.4 + 4.2)]) * 0.5 + 0.5
        img = np.ones((32, 32, 3)) * hue * (1 - 0.5 * min(shift, 1.0)) + rng.normal(0, 0.1 + 0.2 * shift, (32, 32, 3))
        buf = io.BytesIO()
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def write_synthetic_bundle(out_dir, spec: SyntheticSpec | None = None,
                           settings: AssembleSettings | None = None) -> Bundle:
    spec = spec or SyntheticSpec()
    settings = settings or AssembleSettings(k_max=50, wse_alphas=[round(i / 10, 2) for i in range(11)],
                                            umap_max_points=5000)
    rng = np.random.default_rng(spec.seed)
    world = World(spec.num_classes, spec.dim, TOY, rng)
    sets = [SetSpec("train", "id_train", spec.n_train, 0.0), SetSpec("val", "id_val", spec.n_val, 0.0),
            SetSpec("test", "id_test", spec.n_test, 0.0)]
    sets += [SetSpec(name, "ood", n, shift, subset) for name, n, shift, subset in spec.ood]
    splits = {}
    for s in sets:
        ex = splits[s.name] = make_split(world, s, settings.wse_alphas if s.role != "id_train" else None)[0]
        if spec.thumbs and s.role != "id_train":
            model_class = np.asarray(ex.labels) if ex.projection is None else \
                np.array([g[0] for g in ex.projection.groups])[ex.labels]
            ex.thumbs = thumbnails(model_class, s.shift, rng)
    train = splits.pop("train")

    def zsf_thumbs(idx: np.ndarray) -> list[bytes]:
        return thumbnails(np.asarray(train.labels)[idx], 0.0, rng)

    extra = {
        "classnames": world.classnames,
        "templates": ["a photo of a {}."],
        "models": {m: {"name": "synthetic", "pretrained": None, "sha256": None} for m in ("zs", "ft")},
        "preprocessing": {"synthetic": True},
        "config": {"synthetic": spec.__dict__},
    }
    return assemble(out_dir, "synthetic", train, splits, settings, extra, zsf_thumbs if spec.thumbs else None)
