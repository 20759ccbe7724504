"""BREEDS Entity-30: ImageNet images relabelled by 30 superclasses, with disjoint ID and OOD subclasses.

Each superclass has 8 ImageNet subclasses: 4 form the source (ID) subpopulation, 4 the target
(OOD) one (BREEDS' random split; data/entity30.json). The model classifies the 30 superclasses.
"""

from __future__ import annotations

from pathlib import Path

from vrf_core.data import DatasetError, ImageSet, file_image_set, list_images
from vrf_core.datasets.layout import choice, dataset_loader, require_dir, require_model_classes
from vrf_core.datasets.metadata import entity30_superclasses


@dataset_loader(
    "an ImageNet root: path/train/<wnid>/*.JPEG and path/val/<wnid>/*.JPEG (as for type 'imagenet'); only the "
    "120 source or 120 target subclass folders of Entity-30 are read"
)
def entity30(
    name: str, path: Path, model_classnames: list[str], split: str = "train", subpopulation: str = "source"
) -> ImageSet:
    split = choice(name, "split", split, ("train", "val"))
    subpopulation = choice(name, "subpopulation", subpopulation, ("source", "target"))
    superclasses = entity30_superclasses()
    require_model_classes(name, model_classnames, len(superclasses), "Entity-30")
    root = require_dir(name, path / split)
    members = [(j, wnid) for j, sc in enumerate(superclasses) for wnid in getattr(sc, subpopulation)]
    missing = [wnid for _, wnid in members if not (root / wnid).is_dir()]
    if missing:
        raise DatasetError(f"{name}: {len(missing)} Entity-30 {subpopulation} subclasses are missing under {root}: "
                           f"{missing[:5]}")
    rel, labels = [], []
    for j, wnid in members:
        files = list_images(root / wnid)
        if not files:
            raise DatasetError(f"{name}: class folder {root / wnid} holds no images")
        rel += [f"{wnid}/{p.name}" for p in files]
        labels += [j] * len(files)
    ds = file_image_set(name, root, rel, labels, model_classnames)
    ds.notes["breeds"] = {"suite": "entity30", "subpopulation": subpopulation, "subclass_split": "rand"}
    return ds
