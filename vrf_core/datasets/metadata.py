"""The class lists and mappings shipped in `data/` (sources in data/README.md), read once and cached."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


def _lines(filename: str) -> list[str]:
    return [line.strip() for line in (DATA_DIR / filename).read_text().splitlines() if line.strip()]


def _json(filename: str):
    return json.loads((DATA_DIR / filename).read_text())


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in the standard class-index order (sorted wnids)."""
    return tuple(_lines("imagenet_wnids.txt"))


@cache
def imagenet_classnames() -> tuple[str, ...]:
    """CLIP's readable ImageNet class names (open_clip's list), in class-index order."""
    return tuple(_lines("imagenet_classnames.txt"))


@cache
def imagenet_subset_indices(variant: str) -> tuple[int, ...]:
    """ImageNet class indices of the 200 classes of ImageNet-A (`variant="a"`) or ImageNet-R (`"r"`)."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return tuple(index[w] for w in _lines(f"imagenet_{variant}_wnids.txt"))


@dataclass(frozen=True)
class ObjectNetClass:
    folder: str                          # folder name under objectnet-1.0/images/
    name: str                            # ObjectNet's label
    imagenet_indices: tuple[int, ...]    # the ImageNet classes it maps to (projection group)


@cache
def objectnet_classes() -> tuple[ObjectNetClass, ...]:
    """The 113 ObjectNet classes that map to ImageNet, sorted by folder name (WiSE-FT's class order)."""
    return tuple(
        ObjectNetClass(row["folder"], row["name"], tuple(row["imagenet_indices"]))
        for row in _json("objectnet_to_imagenet.json")
    )


@cache
def cifar10_classnames() -> tuple[str, ...]:
    return tuple(_lines("cifar10_classnames.txt"))


@cache
def stl10_to_cifar10_labels() -> tuple[int, ...]:
    """For STL-10 label 0..9 (file label minus one), the CIFAR-10 class index, or -1 for "monkey" (removed)."""
    stl = _lines("stl10_classnames.txt")
    mapping = _json("stl10_to_cifar10.json")
    cifar = cifar10_classnames()
    return tuple(-1 if mapping[s] is None else cifar.index(mapping[s]) for s in stl)


@dataclass(frozen=True)
class BreedsSuperclass:
    wnid: str
    name: str                         # readable name for the zero-shot prompts
    breeds_name: str                  # the node's name in the BREEDS hierarchy
    source: tuple[str, ...]           # ID subpopulation (wnids)
    target: tuple[str, ...]           # OOD subpopulation (wnids)


@cache
def entity30_superclasses() -> tuple[BreedsSuperclass, ...]:
    """BREEDS Entity-30: 30 superclasses, each with 4 source and 4 target ImageNet subclasses."""
    raw = _json("entity30.json")
    return tuple(
        BreedsSuperclass(s["wnid"], s["name"], s["breeds_name"], tuple(s["source"]), tuple(s["target"]))
        for s in raw["superclasses"]
    )


def entity30_classnames() -> tuple[str, ...]:
    return tuple(s.name for s in entity30_superclasses())
