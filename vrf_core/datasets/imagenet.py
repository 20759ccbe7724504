"""ImageNet and its distribution shifts: ImageNet-V2, -Sketch, -A, -R and ObjectNet.

All of them label images in ImageNet's 1000-class space (the model's classes). ImageNet-A and -R
cover 200 of those classes and ObjectNet 113 groups of them; their sets carry the `ClassProjection`
that maps the 1000-way logits onto their own classes (WiSE-FT's rule: a group's logit is the max).
"""

from __future__ import annotations

from pathlib import Path

from vrf_core.data import ClassProjection, DatasetError, ImageSet, file_image_set, image_folder, list_images
from vrf_core.datasets.layout import choice, dataset_loader, descend, require_dir, require_model_classes
from vrf_core.datasets.metadata import imagenet_subset_indices, imagenet_wnids, objectnet_classes


def _imagenet_classes(name: str, model_classnames: list[str]) -> None:
    require_model_classes(name, model_classnames, 1000, "ImageNet")


@dataset_loader(
    "path/train/<wnid>/*.JPEG and path/val/<wnid>/*.JPEG, one folder per ImageNet-1k WordNet id (1000); "
    "val must already be sorted into wnid folders (e.g. with the widely used valprep.sh)"
)
def imagenet(name: str, path: Path, model_classnames: list[str], split: str = "train") -> ImageSet:
    split = choice(name, "split", split, ("train", "val"))
    _imagenet_classes(name, model_classnames)
    root = require_dir(name, path / split)
    if list_images(root) and not any(p.is_dir() for p in root.iterdir()):
        raise DatasetError(f"{name}: {root} holds images directly, not in one folder per wnid; sort them first")
    return image_folder(name, root, model_classnames, imagenet_wnids())


@dataset_loader(
    "path/<class index 0..999>/*.jpeg (ImageNetV2 matched-frequency; path may also be the folder that "
    "holds imagenetv2-matched-frequency-format-val/)"
)
def imagenet_v2(name: str, path: Path, model_classnames: list[str]) -> ImageSet:
    _imagenet_classes(name, model_classnames)
    root = descend(path, "imagenetv2-matched-frequency-format-val")
    return image_folder(name, root, model_classnames, [str(i) for i in range(1000)])


@dataset_loader("path/sketch/<wnid>/*.JPEG or path/<wnid>/*.JPEG, one folder per ImageNet-1k wnid (1000)")
def imagenet_sketch(name: str, path: Path, model_classnames: list[str]) -> ImageSet:
    _imagenet_classes(name, model_classnames)
    return image_folder(name, descend(path, "sketch"), model_classnames, imagenet_wnids())


def _imagenet_200(name: str, root: Path, model_classnames: list[str], variant: str) -> ImageSet:
    _imagenet_classes(name, model_classnames)
    indices = imagenet_subset_indices(variant)
    wnids = imagenet_wnids()
    return image_folder(
        name,
        root,
        classnames=[model_classnames[i] for i in indices],
        folder_names=[wnids[i] for i in indices],
        projection=ClassProjection.subset(indices),
    )


@dataset_loader("path/<wnid>/*.jpg with the 200 ImageNet-A wnids (or path/imagenet-a/<wnid>/)")
def imagenet_a(name: str, path: Path, model_classnames: list[str]) -> ImageSet:
    return _imagenet_200(name, descend(path, "imagenet-a"), model_classnames, "a")


@dataset_loader("path/<wnid>/*.jpg with the 200 ImageNet-R wnids (or path/imagenet-r/<wnid>/)")
def imagenet_r(name: str, path: Path, model_classnames: list[str]) -> ImageSet:
    return _imagenet_200(name, descend(path, "imagenet-r"), model_classnames, "r")


@dataset_loader(
    "path/images/<ObjectNet folder>/*.png (the objectnet-1.0 release; path may also hold objectnet-1.0/); "
    "the 113 folders that map to ImageNet must all be there, the other 200 are skipped"
)
def objectnet(name: str, path: Path, model_classnames: list[str], crop_border: int = 2) -> ImageSet:
    _imagenet_classes(name, model_classnames)
    if not isinstance(crop_border, int) or crop_border < 0:
        raise DatasetError(f"{name}: option crop_border must be a non-negative integer, got {crop_border!r}")
    images = require_dir(name, descend(path, "objectnet-1.0") / "images")
    classes = objectnet_classes()
    missing = [c.folder for c in classes if not (images / c.folder).is_dir()]
    if missing:
        raise DatasetError(f"{name}: {len(missing)} of the 113 ObjectNet classes are missing under {images}: "
                           f"{missing[:5]}")
    rel, labels = [], []
    for j, c in enumerate(classes):
        files = list_images(images / c.folder)
        if not files:
            raise DatasetError(f"{name}: class folder {images / c.folder} holds no images")
        rel += [f"{c.folder}/{p.name}" for p in files]
        labels += [j] * len(files)
    projection = ClassProjection(tuple(c.imagenet_indices for c in classes))
    return file_image_set(name, images, rel, labels, [c.name for c in classes], projection, crop_border)
