"""The benchmark-suite loaders on fixtures that copy each suite's real on-disk layout with tiny images."""

from __future__ import annotations

import inspect
import os
import pickle
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest
from suite_fixtures import JPEG, bordered_png, cifar_fixture, class_tree, dump_pickle, stl_fixture

from vrf_core.data import DatasetError
from vrf_core.datasets import CLASSNAMES, DEFAULT_VAL_HOLDOUT, LOADERS
from vrf_core.datasets.cifar_stl import CIFAR_PICKLE_GLOBALS
from vrf_core.datasets.metadata import (
    cifar10_classnames,
    entity30_superclasses,
    imagenet_subset_indices,
    imagenet_wnids,
    objectnet_classes,
    stl10_to_cifar10_labels,
)
from vrf_core.projection import project_logits
from vrf_core.safe_unpickle import SafeUnpickleError, load_allowlisted

IMAGENET_NAMES = list(CLASSNAMES["imagenet"]())
CIFAR_NAMES = list(cifar10_classnames())
EXTRA_IMAGES = {0: 2, 417: 3, 999: 2}  # class index -> images in the fixture (default 1)


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _raises_with_layout(match: str, layout: str = ""):
    """A DatasetError saying `match`, then the expected layout (mentioning `layout`)."""
    return pytest.raises(DatasetError, match=f"(?s){match}.*expected layout.*{layout}")


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    for split in ("train", "val"):
        class_tree(root / split, list(imagenet_wnids()), extra=EXTRA_IMAGES)
    return root


# ---------------------------------------------------------------- data files


def test_class_lists_and_mappings_are_consistent():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert (wnids[0], wnids[999]) == ("n01440764", "n15075141")
    import open_clip  # the shipped names are open_clip's list, in the same order

    assert IMAGENET_NAMES == list(open_clip.IMAGENET_CLASSNAMES)
    a, r = imagenet_subset_indices("a"), imagenet_subset_indices("r")
    assert len(a) == len(r) == 200 and list(a) == sorted(set(a)) and list(r) == sorted(set(r))
    assert a[:5] == (6, 11, 13, 15, 17) and r[:5] == (1, 2, 4, 6, 8)
    classes = objectnet_classes()
    assert len(classes) == 113 and [c.folder for c in classes] == sorted(c.folder for c in classes)
    assert all(0 <= i < 1000 for c in classes for i in c.imagenet_indices)
    by_folder = {c.folder: c.imagenet_indices for c in classes}
    assert by_folder["alarm_clock"] == (409, 530) and by_folder["band_aid"] == (419,)
    assert stl10_to_cifar10_labels() == (0, 2, 1, 3, 4, 5, 7, -1, 8, 9)
    supers = entity30_superclasses()
    members = [w for s in supers for w in s.source + s.target]
    assert len(supers) == 30 and all(len(s.source) == len(s.target) == 4 for s in supers)
    assert len(set(members)) == 240 and set(members) <= set(wnids)
    assert len(set(CLASSNAMES["entity30"]())) == 30 and len(CLASSNAMES["cifar10"]()) == 10
    assert set(DEFAULT_VAL_HOLDOUT) <= set(LOADERS)


# ---------------------------------------------------------------- ImageNet family


@pytest.mark.parametrize("split", ["train", "val"])
def test_imagenet_labels_follow_the_wnid_order(imagenet_root, split):
    ds = LOADERS["imagenet"](split, imagenet_root, IMAGENET_NAMES, split=split)
    counts = [EXTRA_IMAGES.get(j, 1) for j in range(1000)]
    assert len(ds) == sum(counts) and ds.projection is None and ds.classnames == IMAGENET_NAMES
    np.testing.assert_array_equal(ds.labels, _labels(counts))
    i = int(np.flatnonzero(ds.labels == 417)[2])
    assert ds.refs[i] == f"{imagenet_wnids()[417]}/img_2.JPEG"
    assert ds.load(i).mode == "RGB" and ds.load(i).size == (8, 6)


def test_imagenet_layout_errors_name_the_structure(tmp_path, imagenet_root):
    with _raises_with_layout("train does not exist"):
        LOADERS["imagenet"]("train", tmp_path, IMAGENET_NAMES)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(JPEG)
    with _raises_with_layout("holds images directly"):
        LOADERS["imagenet"]("test", tmp_path, IMAGENET_NAMES, split="val")
    with pytest.raises(DatasetError, match="option split = 'test'"):
        LOADERS["imagenet"]("test", imagenet_root, IMAGENET_NAMES, split="test")
    with pytest.raises(DatasetError, match="unknown option.*'splt'.*known options: split"):
        LOADERS["imagenet"]("test", imagenet_root, IMAGENET_NAMES, splt="val")
    with pytest.raises(DatasetError, match="ImageNet's 1000 classes.*has 10 class names"):
        LOADERS["imagenet"]("test", imagenet_root, CIFAR_NAMES)


def test_imagenet_v2_folders_are_class_indices(tmp_path):
    top = tmp_path / "imagenetv2-matched-frequency-format-val"
    counts = class_tree(top, [str(i) for i in range(1000)], ".jpeg", extra=EXTRA_IMAGES)
    for path in (tmp_path, top):  # the archive's parent folder or the folder itself
        ds = LOADERS["imagenet_v2"]("imagenet_v2", path, IMAGENET_NAMES)
        np.testing.assert_array_equal(ds.labels, _labels(counts))
        assert ds.refs[-1] == "999/img_1.jpeg" and ds.projection is None


def test_imagenet_sketch_with_or_without_the_sketch_folder(tmp_path, imagenet_root):
    (tmp_path / "sketch").symlink_to(imagenet_root / "val", target_is_directory=True)
    counts = [EXTRA_IMAGES.get(j, 1) for j in range(1000)]
    for path in (tmp_path, imagenet_root / "val"):  # path/sketch/<wnid>/ and path/<wnid>/
        ds = LOADERS["imagenet_sketch"]("imagenet_sketch", path, IMAGENET_NAMES)
        np.testing.assert_array_equal(ds.labels, _labels(counts))


@pytest.mark.parametrize("variant", ["a", "r"])
def test_imagenet_a_and_r_project_onto_their_200_classes(tmp_path, variant):
    indices = imagenet_subset_indices(variant)
    counts = class_tree(tmp_path, [imagenet_wnids()[i] for i in indices], ".jpg", extra=EXTRA_IMAGES)
    (tmp_path / "README.txt").write_text("the real archives ship one")
    ds = LOADERS[f"imagenet_{variant}"](variant, tmp_path, IMAGENET_NAMES)
    assert ds.classnames == [IMAGENET_NAMES[i] for i in indices]
    assert ds.projection.groups == tuple((i,) for i in indices)
    np.testing.assert_array_equal(ds.labels, _labels(counts))
    logits = np.random.default_rng(0).normal(size=(5, 1000))
    np.testing.assert_array_equal(project_logits(logits, ds.projection), logits[:, list(indices)])
    (tmp_path / imagenet_wnids()[0 if variant == "a" else 3]).mkdir()
    with _raises_with_layout("not in the class list"):
        LOADERS[f"imagenet_{variant}"](variant, tmp_path, IMAGENET_NAMES)


def test_objectnet_maps_113_classes_and_crops_the_border(tmp_path):
    classes = objectnet_classes()
    images = tmp_path / "objectnet-1.0" / "images"
    counts = class_tree(images, [c.folder for c in classes], ".png", bordered_png(), extra=EXTRA_IMAGES)
    class_tree(images, ["squeegee", "coaster"], ".png", bordered_png())  # not in ImageNet: skipped
    (tmp_path / "objectnet-1.0" / "mappings").mkdir()
    ds = LOADERS["objectnet"]("objectnet", tmp_path, IMAGENET_NAMES)
    assert ds.classnames == [c.name for c in classes] and len(ds) == sum(counts)
    np.testing.assert_array_equal(ds.labels, _labels(counts))
    assert not any(r.startswith(("squeegee/", "coaster/")) for r in ds.refs)
    logits = np.random.default_rng(1).normal(size=(4, 1000))
    expected = np.stack([logits[:, list(c.imagenet_indices)].max(axis=1) for c in classes], axis=1)
    np.testing.assert_array_equal(project_logits(logits, ds.projection), expected)
    cropped = np.asarray(ds.load(0))
    assert cropped.shape == (6, 8, 3) and (cropped == (0, 255, 0)).all()
    full = LOADERS["objectnet"]("objectnet", tmp_path / "objectnet-1.0", IMAGENET_NAMES, crop_border=0)
    assert np.asarray(full.load(0)).shape == (10, 12, 3)
    for p in (images / classes[5].folder).iterdir():
        p.unlink()
    (images / classes[5].folder).rmdir()
    with _raises_with_layout(f"1 of the 113 ObjectNet classes are missing.*{classes[5].folder}"):
        LOADERS["objectnet"]("objectnet", tmp_path, IMAGENET_NAMES)
    with _raises_with_layout("images does not exist"):
        LOADERS["objectnet"]("objectnet", images, IMAGENET_NAMES)


# ---------------------------------------------------------------- CIFAR-10 and STL-10


@pytest.mark.parametrize("fmt", ["py2", 2, 3, 4, 5])
def test_cifar10_reads_the_python_batches(tmp_path, fmt):
    images, labels = cifar_fixture(tmp_path, fmt)
    if fmt == "py2":
        blob = (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
        assert blob.startswith(b"\x80\x02}q") and b"U\x04data" in blob  # Python 2 str opcodes
        assert b"T" + struct.pack("<i", 4 * 3072) in blob and b"cnumpy" in blob
    for split in ("train", "test"):
        ds = LOADERS["cifar10"](split, tmp_path, CIFAR_NAMES, split=split)
        assert len(ds) == len(labels[split]) and ds.classnames == CIFAR_NAMES and ds.projection is None
        np.testing.assert_array_equal(ds.labels, labels[split])
        for i in (0, len(ds) - 1):
            np.testing.assert_array_equal(np.asarray(ds.load(i)), images[split][i])
    assert LOADERS["cifar10"]("train", tmp_path, CIFAR_NAMES).refs[4] == "cifar-10-batches-py/train#4"


def test_cifar10_layout_errors(tmp_path):
    cifar_fixture(tmp_path, "py2")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with _raises_with_layout("lacks \\['data_batch_4'\\]", "data_batch_1..data_batch_5"):
        LOADERS["cifar10"]("train", tmp_path, CIFAR_NAMES)
    with pytest.raises(DatasetError, match="CIFAR-10's 10 classes"):
        LOADERS["cifar10"]("test", tmp_path, IMAGENET_NAMES, split="test")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _read_cifar_pickle(blob: bytes, source: str) -> object:
    return load_allowlisted(blob, CIFAR_PICKLE_GLOBALS, source)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_cifar_batch_pickled_by_python3_reads_back_equal(protocol):
    rng = np.random.default_rng(0)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [3, 0, 9],
        b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8),
        b"filenames": [b"a.png", b"b.png", b"c.png"],
    }
    back = _read_cifar_pickle(pickle.dumps(batch, protocol=protocol), "test_batch")
    assert back.keys() == batch.keys()
    assert all(back[k] == batch[k] for k in (b"batch_label", b"labels", b"filenames"))
    assert back[b"data"].dtype == np.uint8 and back[b"data"].shape == (3, 3072)
    np.testing.assert_array_equal(back[b"data"], batch[b"data"])


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_reader_refuses_other_globals_without_running_them(tmp_path, protocol):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": _RunsCode(marker), "labels": [1]}, protocol=protocol)
    with pytest.raises(SafeUnpickleError,
                       match="evil_batch: refusing global (posix|os|nt)\\.system.*Nothing was imported or run"):
        _read_cifar_pickle(blob, "evil_batch")
    assert not marker.exists()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(blob)
    with pytest.raises(DatasetError, match="test_batch: refusing global.*python version"):
        LOADERS["cifar10"]("test", tmp_path, CIFAR_NAMES, split="test")
    assert not marker.exists()


def test_cifar_reader_refuses_what_a_batch_never_holds():
    with pytest.raises(SafeUnpickleError, match="object_array: .*dtype 'O8' is not a plain numeric type"):
        _read_cifar_pickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4), "object_array")
    with pytest.raises(SafeUnpickleError, match="truncated: not a pickle this reader accepts"):
        _read_cifar_pickle(pickle.dumps([1, 2, 3], protocol=4)[:-3], "truncated")
    many = {b"filenames": [b"f%d.png" % i for i in range(3000)], b"labels": list(range(3000))}
    blob = dump_pickle(many, "py2")
    assert pickle.LONG_BINPUT in blob  # memo indices past 255
    assert _read_cifar_pickle(blob, "big") == many
    arr = np.arange(12, dtype=">i4").reshape(3, 4)
    np.testing.assert_array_equal(_read_cifar_pickle(pickle.dumps({"a": arr}, protocol=4), "ok")["a"], arr)


def test_stl10_drops_monkey_and_maps_to_cifar_classes(tmp_path):
    stl_labels = [1, 2, 3, 8, 4, 5, 6, 7, 8, 9, 10]  # 8 is "monkey"
    images = stl_fixture(tmp_path, "test", stl_labels)
    ds = LOADERS["stl10"]("stl10", tmp_path, CIFAR_NAMES)
    keep = [i for i, y in enumerate(stl_labels) if y != 8]
    stl_names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    renamed = {"car": "automobile"}
    expected = [CIFAR_NAMES.index(renamed.get(stl_names[stl_labels[i] - 1], stl_names[stl_labels[i] - 1]))
                for i in keep]
    assert ds.classnames == CIFAR_NAMES and ds.projection is None and ds.notes["removed"]["count"] == 2
    assert set(ds.notes["source_files"]) == {"test_X.bin", "test_y.bin"}
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.refs == [f"stl10_binary/test_X.bin#{i}" for i in keep]
    for j in (0, 3, len(ds) - 1):
        np.testing.assert_array_equal(np.asarray(ds.load(j)), images[keep[j]])


def test_stl10_layout_errors(tmp_path):
    with _raises_with_layout("lacks \\['test_X.bin', 'test_y.bin'\\]", "stl10_binary/"):
        LOADERS["stl10"]("stl10", tmp_path, CIFAR_NAMES)
    stl_fixture(tmp_path, "train", [1, 2, 3])
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2, 3, 4]))
    with _raises_with_layout("expected 4 images"):
        LOADERS["stl10"]("stl10", tmp_path / "stl10_binary", CIFAR_NAMES, split="train")


# ---------------------------------------------------------------- Entity-30


@pytest.mark.parametrize("subpopulation", ["source", "target"])
def test_entity30_labels_subclasses_by_superclass(imagenet_root, subpopulation):
    names = list(CLASSNAMES["entity30"]())
    ds = LOADERS["entity30"]("entity30", imagenet_root, names, split="val", subpopulation=subpopulation)
    index = {w: j for j, w in enumerate(imagenet_wnids())}
    expected = [j for j, s in enumerate(entity30_superclasses()) for w in getattr(s, subpopulation)
                for _ in range(EXTRA_IMAGES.get(index[w], 1))]
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.classnames == names and ds.projection is None and len(set(ds.labels)) == 30
    assert {r.split("/")[0] for r in ds.refs} == {w for s in entity30_superclasses() for w in getattr(s, subpopulation)}


def test_entity30_errors(tmp_path, imagenet_root):
    names = list(CLASSNAMES["entity30"]())
    with pytest.raises(DatasetError, match="Entity-30's 30 classes"):
        LOADERS["entity30"]("entity30", imagenet_root, IMAGENET_NAMES)
    with pytest.raises(DatasetError, match="subpopulation = 'ood'"):
        LOADERS["entity30"]("entity30", imagenet_root, names, subpopulation="ood")
    wnid = entity30_superclasses()[3].target[1]
    class_tree(tmp_path / "train", [w for s in entity30_superclasses() for w in s.target if w != wnid])
    with _raises_with_layout(f"1 Entity-30 target subclasses are missing.*{wnid}", "an ImageNet root"):
        LOADERS["entity30"]("entity30", tmp_path, names, subpopulation="target")


# ---------------------------------------------------------------- recipes

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


def test_recipes_parse_and_name_known_dataset_types(tmp_path):
    from precompute.config import load_config

    assert {p.stem for p in RECIPES} >= {"imagenet_vitb16_e2e", "imagenet_vitb16_lpft", "imagenet_vitb32_e2e",
                                         "cifar10_stl10_vitb16", "entity30_vitb16"}
    for recipe in RECIPES:
        raw = tomllib.loads(recipe.read_text())
        load_config(recipe)  # the pipeline's own validation
        data = raw["data"]
        sections = [data["train"], data["test"], *data.get("ood", {}).values()]
        classnames = list(CLASSNAMES[raw["classes"]["names"]]())
        for section in sections:
            assert section["type"] in LOADERS, f"{recipe.name}: unknown dataset type {section['type']!r}"
            assert section["path"].startswith("/path/to/"), f"{recipe.name}: paths use the DATA_ROOT placeholder"
            loader, options = LOADERS[section["type"]], section.get("options", {})
            assert set(options) <= set(list(inspect.signature(loader.__wrapped__).parameters)[3:])
            # Valid options and class list: the loader gets as far as looking for the (absent) data.
            with pytest.raises(DatasetError, match="does not exist|lacks|missing"):
                loader(section["type"], tmp_path / "absent", classnames, **options)
