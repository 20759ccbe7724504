"""Every recipe in recipes/ run end to end: its data sections (types, options, roles, OOD names) kept, its
paths pointed at fixtures in the suites' real layouts, its model swapped for the tiny one, its schedule shrunk.

The loaders need every class folder of a suite (ImageNet's 1000 wnids, ObjectNet's 113 folders), so the
ImageNet fixture holds one 16 px image per class, and a few classes (LEARNED) get enough class-coloured
images for the tiny model to learn them: the zero-shot failure set is then never empty. The three ImageNet
recipes share that fixture and one output folder (its caches).
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from suite_fixtures import cifar_fixture, class_square, class_tree, image_bytes, stl_fixture
from tiny import tiny_local_dir

from precompute.config import parse_config
from precompute.pipeline import run
from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle
from vrf_core.datasets import CLASSNAMES
from vrf_core.datasets.metadata import (
    entity30_superclasses,
    imagenet_subset_indices,
    imagenet_wnids,
    objectnet_classes,
    stl10_to_cifar10_labels,
)
from vrf_core.zeroshot import resolve_templates

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
IMAGENET_RECIPES = ["imagenet_vitb16_e2e", "imagenet_vitb16_lpft", "imagenet_vitb32_e2e", "imagenet_vitb16_flyp"]
SIDE = 16
LEARNED = dict.fromkeys((0, 217, 417, 640, 999), 24)  # ImageNet class index -> training images (others: 1)
HOLDOUT = {"imagenet": 20, "cifar10": 12, "entity30": 20}
K_MAX = 3


def _square_file(j: int, seed: int, fmt: str, border: int = 0) -> bytes:
    return image_bytes(class_square(j, np.random.default_rng(seed), SIDE, border), fmt)


def _squares(fmt: str, seed: int, label_of=lambda j: j, border: int = 0):
    """class_tree's `image(j, k)`: class label_of(j)'s square, different per folder and image."""
    return lambda j, k: _square_file(label_of(j), seed * 1_000_003 + 1000 * j + k, fmt, border)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These matrices are tiny: a second intra-op thread gains nothing, and its spin-waiting costs up to 20x
    the time on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_local_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def imagenet_suite(tmp_path_factory) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """({dataset type: path}, {dataset type or OOD name: labels in the loader's order, and under
    "<type>_train" those of the whole training set}) for the ImageNet family."""
    root = tmp_path_factory.mktemp("suites")
    wnids = list(imagenet_wnids())
    paths, labels = {}, {}
    paths["imagenet"] = root / "imagenet"
    counts = class_tree(paths["imagenet"] / "train", wnids, image=_squares("JPEG", 1), extra=LEARNED)
    labels["imagenet_train"] = np.repeat(np.arange(1000), counts)
    class_tree(paths["imagenet"] / "val", wnids, image=_squares("JPEG", 2))
    labels["imagenet"] = np.arange(1000)
    paths["imagenet_v2"] = root / "imagenetv2-matched-frequency-format-val"
    class_tree(paths["imagenet_v2"], [str(i) for i in range(1000)], ".jpeg", _squares("JPEG", 3))
    labels["imagenet_v2"] = np.arange(1000)
    paths["imagenet_sketch"] = root / "imagenet-sketch"
    class_tree(paths["imagenet_sketch"] / "sketch", wnids, ".JPEG", _squares("JPEG", 4))
    labels["imagenet_sketch"] = np.arange(1000)
    for variant in ("a", "r"):
        indices = imagenet_subset_indices(variant)
        paths[f"imagenet_{variant}"] = root / f"imagenet-{variant}"
        class_tree(paths[f"imagenet_{variant}"], [wnids[i] for i in indices], ".jpg",
                   _squares("JPEG", 5, lambda j, ix=indices: ix[j]))
        (paths[f"imagenet_{variant}"] / "README.txt").write_text("the real archives ship one")
        labels[f"imagenet_{variant}"] = np.arange(200)
    classes = objectnet_classes()
    paths["objectnet"] = root / "objectnet-1.0"
    class_tree(paths["objectnet"] / "images", [c.folder for c in classes], ".png",
               _squares("PNG", 6, lambda j: classes[j].imagenet_indices[0], border=2))
    not_in_imagenet = ["squeegee", "coaster"]  # two of the 200 other folders, which the loader skips
    class_tree(paths["objectnet"] / "images", not_in_imagenet, ".png", _squares("PNG", 6, border=2))
    (paths["objectnet"] / "mappings").mkdir()
    labels["objectnet"] = np.arange(113)
    return paths, labels


@pytest.fixture(scope="module")
def cifar_stl_suite(tmp_path_factory) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("cifar_stl")
    _, cifar_labels = cifar_fixture(root / "cifar10", "py2", per_batch=24,
                                    draw=lambda y, rng: class_square(y, rng, 32))
    to_cifar = stl10_to_cifar10_labels()
    stl_labels = [1 + i % 10 for i in range(30)]  # 1-based, "monkey" (8) included
    stl_fixture(root / "stl10", "test", stl_labels,
                draw=lambda y, rng: class_square(max(to_cifar[y - 1], 0), rng, 96))
    labels = {"cifar10_train": np.array(cifar_labels["train"]), "cifar10": np.array(cifar_labels["test"]),
              "stl10": np.array([to_cifar[y - 1] for y in stl_labels if to_cifar[y - 1] >= 0])}
    return {"cifar10": root / "cifar10", "stl10": root / "stl10"}, labels


@pytest.fixture(scope="module")
def entity30_suite(tmp_path_factory) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """An ImageNet root holding only Entity-30's subclass folders (the loader reads no others), images
    coloured by superclass: 3 per source subclass in train, 1 per subclass in val."""
    root = tmp_path_factory.mktemp("entity30") / "imagenet"
    supers = entity30_superclasses()
    source = [(j, w) for j, s in enumerate(supers) for w in s.source]
    target = [(j, w) for j, s in enumerate(supers) for w in s.target]
    class_tree(root / "train", [w for _, w in source], image=_squares("JPEG", 7, lambda i: source[i][0]),
               extra=dict.fromkeys(range(len(source)), 3))
    class_tree(root / "val", [w for _, w in source + target],
               image=_squares("JPEG", 8, lambda i: (source + target)[i][0]))
    labels = {"entity30_train": np.repeat([j for j, _ in source], 3),
              "entity30": np.array([j for j, _ in source]), "entity30_target": np.array([j for j, _ in target])}
    return {"entity30": root}, labels


def tiny_recipe(recipe: str, paths: dict[str, Path], model_dir: Path, out: Path) -> dict:
    """The recipe with its data paths on the fixtures, the tiny model, and a schedule of a few steps."""
    raw = tomllib.loads((RECIPES / f"{recipe}.toml").read_text())
    data = raw["data"]
    for section in [data["train"], data["test"], *data.get("ood", {}).values()]:
        assert section["path"].startswith("/path/to/")
        section["path"] = str(paths[section["type"]])
    data["train"]["val_holdout"] = HOLDOUT[data["train"]["type"]]
    raw["model"] = {"name": f"local-dir:{model_dir}"}
    raw["run"].update(out=str(out), workers=0, batch_size=128)
    # A randomly initialised model needs a far larger rate than CLIP's 1e-5 to 3e-5 to learn in a few steps.
    raw["finetune"].update(epochs=2, batch_size=32, lr=1e-2, warmup_steps=2, workers=0)
    if raw["finetune"]["mode"] == "lpft":
        raw["finetune"].update(lp_epochs=1, lp_lr=1e-2, epochs=1)
    if raw["finetune"]["mode"] == "flyp":  # at 1e-2 the contrastive loss collapses to chance in the first steps
        raw["finetune"].update(lr=1e-3, epochs=3)
    raw["ensemble"].update(wse_alphas=[0.0, 0.5, 1.0], k_max=K_MAX)
    raw["bundle"] = {"umap": False, "thumb_size": 16}
    if len(CLASSNAMES[raw["classes"]["names"]]()) == 1000:
        # 80 templates x 1000 classes cost ~20 s of CPU in the tiny text tower; two take the same path.
        raw["classes"]["templates"] = resolve_templates(raw["classes"]["templates"])[:2]
    return raw


def check_bundle(path: Path, raw: dict, labels: dict[str, np.ndarray]) -> None:
    """The bundle opens verified, with the recipe's splits and roles, the suites' projections and the
    fixture's labels per split."""
    bundle = open_bundle(path, verify=True)
    assert bundle.name == raw["run"]["name"]
    data, ood = raw["data"], raw["data"].get("ood", {})
    assert {s: bundle.splits[s]["role"] for s in bundle.splits} == {
        "train": "id_train", "zsf": "zsf", "val": "id_val", "test": "id_test", **dict.fromkeys(ood, "ood")}
    assert bundle.classnames == list(CLASSNAMES[raw["classes"]["names"]]())
    assert bundle.wse_alphas == [0.0, 0.5, 1.0]
    assert bundle.manifest["models"]["ft"]["finetune"]["settings"]["mode"] == raw["finetune"]["mode"]

    train_type = data["train"]["type"]
    full = labels[f"{train_type}_train"]
    n_val = data["train"]["val_holdout"]
    assert bundle.splits["train"]["n"] == len(full) - n_val and bundle.splits["val"]["n"] == n_val
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([bundle.array("train", "labels"), bundle.array("val", "labels")]),
                    minlength=len(bundle.classnames)),
        np.bincount(full, minlength=len(bundle.classnames)))
    assert bundle.splits["zsf"]["n"] > K_MAX == bundle.k_max

    expected = {"test": labels[data["test"]["type"]]}
    expected.update({name: labels[name] for name in ood})
    for split, want in expected.items():
        np.testing.assert_array_equal(bundle.array(split, "labels"), want, err_msg=split)
        assert bundle.array(split, "preds_wse").shape == (3, len(want))

    projections = {name: bundle_adapter.projection(bundle, name) for name in ood}
    for variant in ("a", "r"):
        name = f"imagenet_{variant}"
        if name in ood:
            indices = imagenet_subset_indices(variant)
            assert projections.pop(name).groups == tuple((i,) for i in indices)
            assert bundle.split_classnames(name) == [bundle.classnames[i] for i in indices]
    if "objectnet" in ood:
        classes = objectnet_classes()
        assert projections.pop("objectnet").groups == tuple(c.imagenet_indices for c in classes)
        assert bundle.split_classnames("objectnet") == [c.name for c in classes]
        thumb = np.asarray(Image.open(io.BytesIO(bundle.thumbnail("objectnet", 0))).convert("RGB"), int)
        edges = np.concatenate([thumb[0], thumb[-1], thumb[:, 0], thumb[:, -1]])
        assert (edges[:, 0] - edges[:, 1]).min() < 100  # crop_border = 2 took off the red frame
    # Everything else (ImageNet-V2 and -Sketch, STL-10 relabelled into CIFAR-10, Entity-30's target
    # subclasses) is scored in the model's own classes.
    assert all(p is None for p in projections.values()), projections


def _run_and_check(recipe: str, suite, model_dir: Path, out: Path) -> None:
    paths, labels = suite
    raw = tiny_recipe(recipe, paths, model_dir, out)
    bundle = run(parse_config(raw, RECIPES, recipe))
    check_bundle(bundle.path, raw, labels)


@pytest.fixture(scope="module")
def imagenet_out(tmp_path_factory) -> Path:
    """One output folder for the three ImageNet recipes: its content-keyed caches let them share the scans,
    the zero-shot head and the zero-shot features; each run writes its own bundle (with the tiny model, the
    ViT-B/32 recipe is the ViT-B/16 E2E one, so it reuses that fine-tuning too)."""
    return tmp_path_factory.mktemp("imagenet_bundle")


@pytest.mark.parametrize("recipe", IMAGENET_RECIPES)
def test_imagenet_recipe_runs_end_to_end(recipe, imagenet_suite, model_dir, imagenet_out):
    _run_and_check(recipe, imagenet_suite, model_dir, imagenet_out)


def test_cifar10_stl10_recipe_runs_end_to_end(cifar_stl_suite, model_dir, tmp_path):
    _run_and_check("cifar10_stl10_vitb16", cifar_stl_suite, model_dir, tmp_path / "bundle")


def test_entity30_recipe_runs_end_to_end(entity30_suite, model_dir, tmp_path):
    _run_and_check("entity30_vitb16", entity30_suite, model_dir, tmp_path / "bundle")


def test_every_recipe_is_covered():
    assert {p.stem for p in RECIPES.glob("*.toml")} == {
        *IMAGENET_RECIPES, "cifar10_stl10_vitb16", "entity30_vitb16"}
