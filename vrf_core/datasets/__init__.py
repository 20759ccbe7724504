"""Loaders for the paper's benchmark suites, keyed by the dataset `type` a config names.

Every loader is `load(name, path, model_classnames, **options) -> ImageSet` and raises a
`DatasetError` that ends with the layout it expected. To add a layout: write the loader in the
module of its family (or a new one), decorate it with `layout.dataset_loader`, register it here.

| type            | options                                     | layout under `path`                                  |
|-----------------|---------------------------------------------|------------------------------------------------------|
| imagenet        | split = "train" / "val"                     | train/<wnid>/*.JPEG, val/<wnid>/*.JPEG               |
| imagenet_v2     |                                             | <class index 0..999>/*.jpeg                          |
| imagenet_sketch |                                             | sketch/<wnid>/* or <wnid>/*                          |
| imagenet_a      |                                             | <wnid>/* (200 classes, subset projection)            |
| imagenet_r      |                                             | <wnid>/* (200 classes, subset projection)            |
| objectnet       | crop_border = 2                             | images/<folder>/*.png (113 classes, max projection)  |
| cifar10         | split = "train" / "test"                    | cifar-10-batches-py/data_batch_1..5, test_batch      |
| stl10           | split = "test" / "train"                    | stl10_binary/{split}_X.bin, {split}_y.bin            |
| entity30        | split = "train" / "val", subpopulation =    | an ImageNet root (train/<wnid>, val/<wnid>)          |
|                 | "source" / "target"                         |                                                      |

Model class lists these loaders expect: the 1000 ImageNet classes for the ImageNet family,
CIFAR-10's 10 for cifar10/stl10, Entity-30's 30 superclasses for entity30 (`CLASSNAMES`).
"""

from __future__ import annotations

from collections.abc import Callable

from vrf_core.datasets.breeds import entity30
from vrf_core.datasets.cifar_stl import cifar10, stl10
from vrf_core.datasets.imagenet import imagenet, imagenet_a, imagenet_r, imagenet_sketch, imagenet_v2, objectnet
from vrf_core.datasets.metadata import cifar10_classnames, entity30_classnames, imagenet_classnames

LOADERS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (imagenet, imagenet_v2, imagenet_sketch, imagenet_a, imagenet_r, objectnet, cifar10, stl10, entity30)
}

# Class lists a config may name in [classes] names (besides a file or an inline list).
CLASSNAMES: dict[str, Callable[[], tuple[str, ...]]] = {
    "imagenet": imagenet_classnames,
    "cifar10": cifar10_classnames,
    "entity30": entity30_classnames,
}

# Recommended size of the seeded validation split carved from each suite's training set
# (vrf_core.data.split_indices), used to tune T, a, b and the ensemble alphas: large enough that
# an accuracy near 80% is resolved to about +-0.4 points (standard error at 10k samples), small
# next to the training set (0.8% of ImageNet's 1.28M, 4% of CIFAR-10's 50k, ~3% of Entity-30's ~156k).
DEFAULT_VAL_HOLDOUT: dict[str, int] = {
    "imagenet": 10_000,
    "cifar10": 2_000,
    "entity30": 5_000,
}

__all__ = ["CLASSNAMES", "DEFAULT_VAL_HOLDOUT", "LOADERS"]
