"""The VRF ablations' inputs in every bundle (precompute/assemble.py): `knn_sqdist_train` (fine-tuned
features to the training base) and `knn_sqdist_zs` (zero-shot features to the ZSF set's), each checked
against a brute-force numpy kNN computed here from the stored or extracted features; `score_knn` still
its own definition; the zero-shot array absent when an import has no zero-shot features; the kNN stages
reused by a second run and recomputed when the training set changes. Three sources: the synthetic
writers (assemble with a stage cache, and the drawn ImageNet-shaped one), `precompute import`, and a tiny
real `precompute run`; and the training split's zero-shot features cost no extra forward pass."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import CLASSES, image_folder_tree, tiny_config, tiny_local_dir

from precompute.assemble import AssembleSettings, assemble
from precompute.config import load_config
from precompute.importer import export_arrays, import_bundle
from precompute.importer_config import load_import_config
from precompute.importer_files import ArrayImportError
from precompute.pipeline import run
from precompute.stage_cache import StageCache
from precompute.synthetic.large import LargeSpec, write_large_bundle
from precompute.synthetic.splits import SetSpec, make_split
from precompute.synthetic.world import TOY, World
from vrf_core.bundle import open_bundle
from vrf_core.data import image_folder
from vrf_core.extract import extract
from vrf_core.knn import knn_sqdist
from vrf_core.models import ImageClassifier, load_clip

K_MAX = 12  # above the kNN routing score's k = 10 (the tiny run's k_max = 8 is below it)
SETTINGS = AssembleSettings(k_max=K_MAX, wse_alphas=None, umap=False)
SPLITS = [SetSpec("train", "id_train", 240, 0.0), SetSpec("val", "id_val", 50, 0.0),
          SetSpec("test", "id_test", 50, 0.0), SetSpec("shift", "ood", 60, 0.8), SetSpec("hard", "ood", 40, 1.0, 3)]
EVAL = [s.name for s in SPLITS[1:]]
EXTRA = {"classnames": [f"class_{i}" for i in range(5)], "templates": ["a photo of a {}."],
         "models": {"zs": {"name": "zs"}, "ft": {"name": "ft"}}, "config": {"run": {"seed": 0}}}


def brute_sqdist(queries, base, k: int) -> np.ndarray:
    """All pairwise squared L2 distances of the L2-normalised rows (float64), each row sorted, first k."""
    q, b = (np.asarray(x, np.float64) for x in (queries, base))
    q, b = q / np.linalg.norm(q, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sort(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1), axis=1)[:, :k]


def assert_ablation_arrays(bundle, train_ft, train_zs, feats_ft: dict, feats_zs: dict | None, kk: int = 10) -> None:
    """The stored ablation arrays equal the brute force from the given features (split -> (n, D));
    score_knn is minus the root of the kk-th training distance, exactly as its own search gives it."""
    zsf = np.asarray(bundle.array("zsf", "train_index"))
    for split in bundle.split_names("id_val", "id_test", "ood"):
        stored = np.asarray(bundle.array(split, "knn_sqdist_train"))
        assert stored.dtype == np.float32 and stored.shape == (bundle.splits[split]["n"], bundle.k_max)
        np.testing.assert_allclose(stored, brute_sqdist(feats_ft[split], train_ft, bundle.k_max), atol=2e-5)
        alone = knn_sqdist(np.asarray(feats_ft[split], np.float32), np.asarray(train_ft, np.float32), kk)[0]
        np.testing.assert_array_equal(bundle.array(split, "score_knn"), -np.sqrt(alone[:, -1]))
        if kk <= bundle.k_max:  # else the search went deeper than the k_max columns kept
            np.testing.assert_array_equal(bundle.array(split, "score_knn"), -np.sqrt(stored[:, kk - 1]))
        if feats_zs is None:
            assert not bundle.has(split, "knn_sqdist_zs")
            continue
        zs = np.asarray(bundle.array(split, "knn_sqdist_zs"))
        assert zs.dtype == np.float32 and zs.shape == stored.shape
        np.testing.assert_allclose(zs, brute_sqdist(feats_zs[split], np.asarray(train_zs)[zsf], bundle.k_max),
                                   atol=2e-5)
        assert not np.allclose(zs, bundle.array(split, "knn_sqdist"), atol=1e-3)  # another feature space


def synthetic_splits(seed: int = 0, n_train: int | None = None):
    world = World(5, 16, TOY, np.random.default_rng(seed))
    specs = [SetSpec("train", "id_train", n_train, 0.0) if n_train and s.role == "id_train" else s for s in SPLITS]
    splits = {s.name: make_split(world, s)[0] for s in specs}
    for ex in splits.values():  # as a bundle stores them
        ex.features_ft, ex.features_zs = ex.features_ft.astype(np.float16), ex.features_zs.astype(np.float16)
    return splits.pop("train"), splits


def of(evals: dict, model: str) -> dict[str, np.ndarray]:
    return {split: getattr(ex, f"features_{model}") for split, ex in evals.items()}


def knn_status(cache: StageCache) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in cache.record if r["stage"].startswith("knn/")}


def test_synthetic_assemble_writes_both_arrays_and_caches_them(tmp_path):
    train, evals = synthetic_splits()
    cache = StageCache(tmp_path / "cache")
    bundle = assemble(tmp_path / "a", "ablations", train, evals, SETTINGS, EXTRA, cache=cache)
    open_bundle(bundle.path, verify=True)  # the schema knows both arrays
    feats = of(evals, "ft")
    assert_ablation_arrays(bundle, train.features_ft, train.features_zs, feats, of(evals, "zs"))
    assert set(knn_status(cache).values()) == {"computed"} and len(knn_status(cache)) == 1 + len(EVAL)

    again = StageCache(tmp_path / "cache")
    second = assemble(tmp_path / "b", "ablations", train, evals, SETTINGS, EXTRA, cache=again)
    assert set(knn_status(again).values()) == {"reused"}
    for split in EVAL:
        for name in ("knn_sqdist_train", "knn_sqdist_zs", "score_knn"):
            np.testing.assert_array_equal(second.array(split, name), bundle.array(split, name))

    other_train, _ = synthetic_splits(seed=1)  # another training set: other ZSF set, other training base
    changed = StageCache(tmp_path / "cache")
    third = assemble(tmp_path / "c", "ablations", other_train, evals, SETTINGS, EXTRA, cache=changed)
    assert set(knn_status(changed).values()) == {"computed"}
    assert_ablation_arrays(third, other_train.features_ft, other_train.features_zs, feats, of(evals, "zs"))


def test_a_larger_training_set_is_searched_through_its_seeded_sample(tmp_path):
    train, evals = synthetic_splits(n_train=400)
    settings = AssembleSettings(k_max=K_MAX, wse_alphas=None, umap=False, knn_train_base=150, train_sample=1000)
    bundle = assemble(tmp_path / "b", "sampled", train, evals, settings, EXTRA)
    base = np.sort(np.random.default_rng(settings.seed).choice(400, 150, replace=False))  # assemble's draw
    assert_ablation_arrays(bundle, train.features_ft[base], train.features_zs,
                           of(evals, "ft"), of(evals, "zs"))
    full = brute_sqdist(evals["test"].features_ft, train.features_ft, K_MAX)
    assert (bundle.array("test", "knn_sqdist_train") >= full - 2e-5).all()  # a subset's neighbours are farther


def test_without_training_zero_shot_features_the_zero_shot_array_is_left_out(tmp_path, capsys):
    train, evals = synthetic_splits()
    train.features_zs = None
    bundle = assemble(tmp_path / "b", "no-zs", train, evals, SETTINGS, EXTRA)
    assert "VRF ablation 'distance in zero-shot features' unavailable" in capsys.readouterr().err
    assert_ablation_arrays(open_bundle(bundle.path, verify=True), train.features_ft, None,
                           of(evals, "ft"), None)
    assert bundle.manifest["results"]["validation"]["rows"]["VRF"]


def test_the_large_writer_draws_both_arrays_like_knn_sqdist(tmp_path):
    spec = LargeSpec(classes=20, dim=16, zsf=300, train_size=3000, train_sample=200, k_max=8, wse_alphas=None,
                     sets=(SetSpec("val", "id_val", 200, 0.0), SetSpec("test", "id_test", 300, 0.0),
                           SetSpec("far", "ood", 300, 1.0)))
    bundle = open_bundle(write_large_bundle(tmp_path / "large", spec, "large", {}).path, verify=True)
    near = {}
    for split in ("val", "test", "far"):
        for name in ("knn_sqdist", "knn_sqdist_train", "knn_sqdist_zs"):
            d = np.asarray(bundle.array(split, name))
            assert d.dtype == np.float32 and d.shape == (bundle.splits[split]["n"], 8)
            assert (np.diff(d, axis=1) >= 0).all() and ((d >= 0) & (d <= 4)).all()
            near[split, name] = float(d[:, 0].mean())
        np.testing.assert_array_equal(bundle.array(split, "score_knn"),
                                      -np.sqrt(bundle.array(split, "knn_sqdist_train")[:, 7]))
    for name in ("knn_sqdist", "knn_sqdist_train", "knn_sqdist_zs"):
        assert near["far", name] > near["test", name] + 0.1  # distances grow with the shift
    assert near["test", "knn_sqdist_train"] < near["test", "knn_sqdist"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A reference bundle's arrays exported in the import format, the training split with both features."""
    tmp = tmp_path_factory.mktemp("export")
    train, evals = synthetic_splits()
    reference = assemble(tmp / "reference", "ablations", train, evals, SETTINGS, EXTRA)
    export_arrays(reference.path, tmp / "export", {"labels": train.labels, "features_ft": train.features_ft,
                                                   "features_zs": train.features_zs, "logits_zs": train.logits_zs,
                                                   "logits_ft": train.logits_ft})
    return reference, tmp / "export", train


def test_import_with_zero_shot_features_gets_knn_sqdist_zs(exported, tmp_path):
    reference, folder, train = exported
    work = shutil.copytree(folder, tmp_path / "work")
    bundle = import_bundle(load_import_config(work / "import.toml"))
    feats = {s: np.asarray(bundle.array(s, "features_ft")) for s in EVAL}
    zs = {s: np.asarray(bundle.array(s, "features_zs")) for s in EVAL}
    assert_ablation_arrays(bundle, train.features_ft, train.features_zs, feats, zs)
    for split in EVAL:
        np.testing.assert_array_equal(bundle.array(split, "knn_sqdist_zs"), reference.array(split, "knn_sqdist_zs"))


def test_import_without_zero_shot_features_leaves_the_array_out(exported, tmp_path, capsys):
    _, folder, train = exported
    work = shutil.copytree(folder, tmp_path / "work")
    with np.load(work / "train.npz") as z:
        np.savez(work / "train.npz", **{k: z[k] for k in z.files if k != "features_zs"})
    bundle = import_bundle(load_import_config(work / "import.toml"))
    assert "no zero-shot image features for split(s) train" in capsys.readouterr().err
    assert_ablation_arrays(open_bundle(bundle.path, verify=True), train.features_ft, None,
                           {s: np.asarray(bundle.array(s, "features_ft")) for s in EVAL}, None)


@pytest.mark.parametrize("bad, message", [
    ("dim", r"train\.npz: features_zs has shape \(240, 8\), expected \(240, 16\) .*D = 16 feature dimensions"),
    ("nan", r"train\.npz: features_zs holds 1 NaN or infinite value\(s\) .*first in row 3 of split train"),
    ("norm", r"train\.npz: features_zs row 0 of split train has L2 norm 2; .*normalize_features = true"),
    ("dtype", r"train\.npz: features_zs has dtype int64, expected a floating-point dtype"),
])
def test_bad_training_zero_shot_features_are_one_clear_line(exported, tmp_path, bad, message):
    _, folder, _ = exported
    work = shutil.copytree(folder, tmp_path / "work")
    with np.load(work / "train.npz") as z:
        arrays = {k: z[k] for k in z.files}
    f = arrays["features_zs"].astype(np.float32)
    arrays["features_zs"] = {"dim": f[:, :8], "nan": np.where(np.arange(f.size).reshape(f.shape) == 3 * f.shape[1],
                                                               np.nan, f),
                             "norm": f * 2, "dtype": np.ones(f.shape, np.int64)}[bad]
    np.savez(work / "train.npz", **arrays)
    with pytest.raises(ArrayImportError, match=message):
        import_bundle(load_import_config(work / "import.toml"))
    assert not (work / "bundle" / "manifest.json").exists()


# ---- a tiny real run -------------------------------------------------------------------------

def stages(out: Path, what: str = "status") -> dict[str, str]:
    return {s["stage"]: s[what] for s in json.loads((out / "stages.json").read_text())["stages"]}


def cached(out: Path, split: str, part: str, name: str) -> np.ndarray:
    """An array of the extraction stage that the last run in `out` used."""
    stage = f"extract/{split}/{part}"
    return np.load(out / "cache" / f"{stage}-{stages(out, 'key')[stage]}" / f"{name}.npy")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tmp, tiny_local_dir(tmp / "model"))
    return tmp, cfg, run(load_config(cfg))


def test_a_real_run_stores_both_arrays_equal_to_a_brute_force_search(tiny_run):
    tmp, _, bundle = tiny_run
    out = bundle.path
    train_ft, train_zs = cached(out, "train", "ft", "features_ft"), cached(out, "train", "zs", "features_zs")
    assert train_zs.shape == train_ft.shape and train_zs.dtype == np.float16
    assert len(cached(out, "train", "zs", "preds_zs")) == len(train_zs)
    assert not np.array_equal(train_zs, train_ft)
    splits = bundle.split_names("id_val", "id_test", "ood")
    assert_ablation_arrays(bundle, train_ft, train_zs, {s: cached(out, s, "ft", "features_ft") for s in splits},
                           {s: cached(out, s, "zs", "features_zs") for s in splits})
    for split in splits:  # the bundle's zero-shot features are the extracted ones
        np.testing.assert_array_equal(bundle.array(split, "features_zs"), cached(out, split, "zs", "features_zs"))
        # the ZSF set is part of the training set, searched whole here: its neighbours are never nearer
        assert (bundle.array(split, "knn_sqdist_train") <= bundle.array(split, "knn_sqdist") + 1e-6).all()


def test_a_rerun_reuses_the_stages_and_a_changed_training_set_recomputes_them(tiny_run):
    tmp, cfg, bundle = tiny_run
    run(load_config(cfg))
    assert {s for s, status in stages(bundle.path).items() if status != "reused"} == set()

    train2 = shutil.copytree(tmp / "data/train", tmp / "train2")
    img = Image.open(next((train2 / "red_square").iterdir()))
    Image.fromarray(255 - np.asarray(img)).save(train2 / "red_square" / "extra.png")
    cfg2 = tmp / "run2.toml"
    cfg2.write_text(cfg.read_text().replace('path = "data/train"', f'path = "{train2}"'))
    changed = run(load_config(cfg2))
    status = stages(changed.path)
    splits = changed.split_names("id_val", "id_test", "ood")
    assert all(status[s] == "computed" for s in ["extract/train/zs", "knn/zsf", *(f"knn/{s}" for s in splits)])
    assert_ablation_arrays(changed, cached(changed.path, "train", "ft", "features_ft"),
                           cached(changed.path, "train", "zs", "features_zs"),
                           {s: cached(changed.path, s, "ft", "features_ft") for s in splits},
                           {s: cached(changed.path, s, "zs", "features_zs") for s in splits})


def test_keeping_the_training_split_s_zero_shot_features_costs_no_forward_pass(tmp_path):
    """The training split's extraction runs each model once per batch, whether or not it keeps its features."""
    clip = load_clip(f"local-dir:{tiny_local_dir(tmp_path / 'model')}")
    folders = [c.replace(" ", "_") for c in CLASSES]
    data = image_folder("train", str(image_folder_tree(tmp_path / "train", 5, 0)), CLASSES, folders)
    torch.manual_seed(0)
    models = {m: ImageClassifier(clip.model.visual, torch.randn(4, 32)) for m in ("zs", "ft")}
    calls = {m: 0 for m in models}
    for m, model in models.items():
        model.register_forward_hook(lambda *_, m=m: calls.__setitem__(m, calls[m] + 1))
    outputs = {}
    for kept in [("ft",), ("zs", "ft")]:
        calls.update(zs=0, ft=0)
        outputs[kept] = extract(models, data, clip.preprocess_eval, features_of=kept, preds_only=True,
                                batch_size=6, workers=0)
        assert calls == {"zs": 4, "ft": 4}  # 20 images in batches of 6
    assert "features_zs" not in outputs[("ft",)] and outputs[("zs", "ft")]["features_zs"].shape == (20, 32)
    np.testing.assert_array_equal(outputs[("ft",)]["preds_zs"], outputs[("zs", "ft")]["preds_zs"])
