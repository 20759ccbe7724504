"""The benchmarks' workload: a seeded synthetic bundle with ImageNet's shapes (1000 classes,
512-d features, a 128k ZSF set of 1.28M training images, the six evaluation sets at their real
sizes with the 200-class subsets and ObjectNet's 113 groups, a 10k validation split, 11 WSE
alphas), written once by `precompute.synthetic.large` and reused while its settings match."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from precompute.assemble import ASSEMBLE_FORMAT
from precompute.synthetic.large import LargeSpec, write_large_bundle
from precompute.synthetic.splits import SetSpec
from precompute.synthetic.world import GENERATOR_VERSION
from vrf_core.bundle import open_bundle


@dataclass(frozen=True)
class Scale:
    bundle: LargeSpec
    knn_queries: int  # evaluation samples timed in the kNN figure (spread over the sets)
    images: int  # images in the extraction figure


IMAGENET_SETS = (  # the real sizes; A and R are 200-class subsets, ObjectNet 113 groups of classes
    SetSpec("val", "id_val", 10_000, 0.0),  # held out from the training set: the hyperparameters are tuned here
    SetSpec("imagenet", "id_test", 50_000, 0.0),
    SetSpec("imagenet_v2", "ood", 10_000, 0.25),
    SetSpec("imagenet_sketch", "ood", 50_889, 0.8),
    SetSpec("imagenet_a", "ood", 7_500, 1.0, 200),
    SetSpec("imagenet_r", "ood", 30_000, 0.9, 200),
    SetSpec("objectnet", "ood", 18_574, 0.7, 113, grouped=True),
)
IMAGENET = LargeSpec(classes=1000, dim=512, sets=IMAGENET_SETS, zsf=128_000, train_size=1_281_167,
                     train_sample=50_000, k_max=100)  # k_max = the reference rule's k for this ZSF size
SCALES = {
    "imagenet": Scale(IMAGENET, knn_queries=2048, images=192),
    # The same structure, about 1/50 of the samples and 1/10 of the classes: a quick run.
    "small": Scale(replace(IMAGENET, classes=100, dim=64, zsf=2_000, train_size=20_000, train_sample=2_000, k_max=20,
                           sets=tuple(replace(s, n=max(300, s.n // 50), classes=s.classes // 10)
                                      for s in IMAGENET_SETS), wse_alphas=(0.0, 0.5, 1.0)),
                   knn_queries=512, images=16),
}


def ensure_workload(path: Path, scale: Scale) -> float | None:
    """The workload bundle at `path`, written unless one with the same settings (and the same
    generator and assemble format) is there. Returns the seconds it took to write, None if reused."""
    settings = json.loads(json.dumps({**asdict(scale.bundle), "generator": GENERATOR_VERSION,
                                      "assemble_format": ASSEMBLE_FORMAT}))
    try:
        if open_bundle(path).manifest["config"].get("benchmark") == settings:
            return None
    except Exception:  # absent, stale or half-written: rebuild
        pass
    t0 = time.perf_counter()
    spec = scale.bundle
    write_large_bundle(path, spec, f"benchmark-{len(spec.sets)}-sets-{spec.classes}-classes",
                       {"benchmark": settings})
    seconds = time.perf_counter() - t0
    print(f"wrote the benchmark bundle {path} in {seconds:.0f} s", file=sys.stderr)
    return seconds
