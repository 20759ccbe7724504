"""`precompute import`: a bundle from arrays a user already has (docs/import.md).

The round trip: one synthetic world's arrays are written through `precompute.assemble.assemble` (the
reference) and through `export_arrays` + `import_bundle`; both bundles give the same report. Then each
kind of bad input gets one line naming the file and the array, before any work, and an earlier bundle
at run.out is left as it was.
"""

import argparse
import io
import shutil
import time
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from precompute.assemble import AssembleSettings, assemble
from precompute.config import ConfigError
from precompute.import_command import register, run
from precompute.importer import ArrayImportError, export_arrays, import_bundle, write_import_config
from precompute.importer_config import load_import_config
from precompute.report import report
from precompute.synthetic.splits import SetSpec, make_split
from precompute.synthetic.world import TOY, World
from vrf_core.bundle import open_bundle

ALPHAS = [0.0, 0.5, 1.0]
SETTINGS = AssembleSettings(k_max=5, wse_alphas=ALPHAS, umap=True, umap_max_points=500, umap_neighbors=5)
SPLITS = [SetSpec("train", "id_train", 300, 0.0), SetSpec("val", "id_val", 40, 0.0),
          SetSpec("test", "id_test", 40, 0.0), SetSpec("shift", "ood", 40, 0.8), SetSpec("hard", "ood", 40, 1.0, 3)]
MODELS = {"zs": {"name": "my CLIP ViT-B/16", "pretrained": "openai"}, "ft": {"name": "my fine-tuned copy"}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(reference bundle, folder of exported arrays with import.toml)."""
    tmp = tmp_path_factory.mktemp("import")
    world = World(4, 8, TOY, np.random.default_rng(0))
    splits = {s.name: make_split(world, s, ALPHAS if s.role != "id_train" else None)[0] for s in SPLITS}
    for ex in splits.values():  # the values a bundle stores, so that both paths compute on the same numbers
        ex.features_ft, ex.features_zs = ex.features_ft.astype(np.float16), ex.features_zs.astype(np.float16)
    train = splits.pop("train")
    extra = {"classnames": world.classnames, "templates": ["a photo of a {}."], "models": MODELS,
             "config": {"run": {"seed": 0}}}
    reference = assemble(tmp / "reference", "roundtrip", train, splits, SETTINGS, extra)
    train_arrays = {"labels": train.labels, "paths": train.refs, "features_ft": train.features_ft,
                    "features_zs": train.features_zs, "logits_zs": train.logits_zs, "logits_ft": train.logits_ft}
    export_arrays(reference.path, tmp / "export", train_arrays)
    return reference, tmp / "export"


def imported(config: Path):
    t0 = time.perf_counter()
    bundle = import_bundle(load_import_config(config))
    return bundle, time.perf_counter() - t0


def test_round_trip_gives_the_reference_report(exported, tmp_path):
    reference, folder = exported
    work = shutil.copytree(folder, tmp_path / "work")
    bundle, seconds = imported(work / "import.toml")
    print(f"import of the round-trip arrays: {seconds:.2f} s")
    for mode in ("validation", "oracle"):
        ours, theirs = report(bundle, mode), report(reference, mode)
        assert ours["rows"] == theirs["rows"] and ours["hyperparameters"] == theirs["hyperparameters"]
    for split in reference.split_names("zsf", "id_val", "id_test", "ood"):
        for name in ("knn_sqdist", "knn_index", "knn_sqdist_train", "knn_sqdist_zs", "score_mahalanobis", "umap"):
            if reference.has(split, name):
                np.testing.assert_array_equal(bundle.array(split, name), reference.array(split, name))
    assert open_bundle(bundle.path, verify=True).manifest["models"] == MODELS
    assert bundle.manifest["config"]["data"]["ood.hard"]["projection"] == \
        [g[0] for g in reference.splits["hard"]["projection"]["groups"]]
    assert bundle.splits["hard"]["classnames"] == reference.splits["hard"]["classnames"]


def to_parquet(folder: Path, split: str) -> None:
    with np.load(folder / f"{split}.npz") as z:
        columns = {}
        for name in z.files:
            arr = z[name].T if name == "preds_wse" else z[name]
            columns[name] = pa.array(list(arr)) if arr.ndim == 2 else pa.array(arr.tolist())
    pq.write_table(pa.table(columns), folder / f"{split}.parquet")


def to_npy(folder: Path, split: str) -> dict:
    with np.load(folder / f"{split}.npz") as z:
        for name in z.files:
            np.save(folder / f"{split}_{name}.npy", z[name])
        return {name: f"{split}_{name}.npy" for name in z.files}


@pytest.mark.parametrize("form", ["parquet", "npy"])
def test_parquet_and_single_npy_files_import_the_same(exported, tmp_path, form, capsys):
    reference, folder = exported
    work = shutil.copytree(folder, tmp_path / "work")
    raw = tomllib.loads((work / "import.toml").read_text())
    sections = [raw["data"][r] for r in ("train", "val", "test")] + list(raw["data"]["ood"].values())
    for section in sections:
        split = section["arrays"].removesuffix(".npz")
        if form == "parquet":
            to_parquet(work, split)
            section["arrays"] = f"{split}.parquet"
        else:
            section["files"] = to_npy(work, split)
            del section["arrays"]
    write_import_config(work / "import.toml", raw)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert run(parser.parse_args(["import", "--config", str(work / "import.toml")])) == 0
    assert "VRF" in capsys.readouterr().out
    assert report(open_bundle(work / "bundle"))["rows"] == report(reference)["rows"]


def test_a_training_split_with_predictions_instead_of_logits(exported, tmp_path):
    reference, folder = exported
    work = shutil.copytree(folder, tmp_path / "work")
    edit_npz(work, "train", preds_zs=lambda a: a["logits_zs"].argmax(1), preds_ft=lambda a: a["logits_ft"].argmax(1),
             logits_zs=None, logits_ft=None)
    bundle, _ = imported(work / "import.toml")
    assert report(bundle)["rows"] == report(reference)["rows"]


def test_thumbnails_come_from_the_images(exported, tmp_path):
    reference, folder = exported
    work = shutil.copytree(folder, tmp_path / "work")
    raw = tomllib.loads((work / "import.toml").read_text())
    for split in ("train", "val"):
        with np.load(work / f"{split}.npz") as z:
            for rel in z["paths"]:
                (work / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 30), (200, 10, 10)).save(work / "images" / rel, "PNG")
        raw["data"][split]["images"] = "images"
    raw["bundle"] |= {"thumb_size": 16, "umap": False}
    write_import_config(work / "import.toml", raw)
    bundle, _ = imported(work / "import.toml")
    for split in ("val", "zsf"):
        with Image.open(io.BytesIO(bundle.thumbnail(split, 0))) as thumb:
            assert thumb.size == (16, 12)
    assert not bundle.has("test", "thumbs_offsets")


# ---- bad input: one line naming the file and the array; the bundle at run.out untouched ---------

@pytest.fixture
def work(exported, tmp_path):
    """A copy of the exported arrays whose run.out holds an earlier bundle (a copy of the reference)."""
    reference, folder = exported
    work = shutil.copytree(folder, tmp_path / "work")
    shutil.copytree(reference.path, work / "bundle")
    return work


def edit_npz(work: Path, split: str, **changes) -> None:
    """Replaces (an array), adds, or with None removes arrays of `<split>.npz`."""
    with np.load(work / f"{split}.npz") as z:
        arrays = {name: z[name] for name in z.files}
    for name, arr in changes.items():
        if arr is None:
            del arrays[name]
        else:
            arrays[name] = arr(arrays) if callable(arr) else arr
    np.savez(work / f"{split}.npz", **arrays)


def edit_config(work: Path, edit) -> None:
    raw = tomllib.loads((work / "import.toml").read_text())
    edit(raw)
    write_import_config(work / "import.toml", raw)


def fails(work: Path) -> str:
    manifest = (work / "bundle" / "manifest.json").read_bytes()
    with pytest.raises((ArrayImportError, ConfigError)) as caught:
        import_bundle(load_import_config(work / "import.toml"))
    message = str(caught.value)
    assert "\n" not in message
    assert (work / "bundle" / "manifest.json").read_bytes() == manifest
    assert open_bundle(work / "bundle", verify=True).name == "roundtrip"
    assert not (work / "bundle" / ".staging").exists()
    return message


def test_wrong_shape(work):
    edit_npz(work, "val", logits_ft=lambda a: a["logits_ft"][:, :3])
    assert fails(work) == ("val.npz: logits_ft has shape (40, 3), expected (40, 4) "
                           "(N = 40 samples of split val, C = 4 classes)")


def test_feature_dimension_differs_from_the_training_split(work):
    edit_npz(work, "test", features_ft=lambda a: a["features_ft"][:, :7])
    assert fails(work).startswith("test.npz: features_ft has shape (40, 7), expected (40, 8) (N = 40 samples of "
                                  "split test, D = 8 feature dimensions")


def test_wrong_dtype(work):
    edit_npz(work, "val", labels=lambda a: a["labels"].astype(np.float32))
    assert fails(work).startswith("val.npz: labels has dtype float32, expected an integer dtype")


def test_nan(work):
    def with_nan(a):
        x = a["features_ft"].copy()
        x[3, 0] = np.nan
        return x
    edit_npz(work, "test", features_ft=with_nan)
    assert fails(work).startswith("test.npz: features_ft holds 1 NaN or infinite value(s) (in float32), first in "
                                  "row 3 of split test")


def test_label_out_of_range(work):
    def bad(a):
        y = a["labels"].copy()
        y[5] = 4
        return y
    edit_npz(work, "shift", labels=bad)
    assert fails(work) == ("shift.npz: labels holds 1 value(s) outside 0..3, e.g. 4 at position 5 (split shift "
                           "has C = 4 classes, classes.names)")


def test_label_outside_a_projected_split(work):
    edit_npz(work, "hard", labels=lambda a: np.full_like(a["labels"], 3))
    assert fails(work).startswith("hard.npz: labels holds 40 value(s) outside 0..2, e.g. 3 at position 0 (split "
                                  "hard has C' = 3 classes through data.ood.hard.projection)")


def test_missing_file(work):
    edit_config(work, lambda raw: raw["data"]["val"].update(files={"logits_ft": "nope.npy"}))
    assert fails(work).startswith("nope.npy: no such file (")


def test_missing_array(work):
    edit_npz(work, "test", features_ft=None)
    assert fails(work).startswith("test.npz: split test has no features_ft; add it there or give "
                                  "data.test.files.features_ft")


def test_unknown_config_key(work):
    edit_config(work, lambda raw: raw["data"]["val"].update(arrrays=raw["data"]["val"].pop("arrays")))
    message = fails(work)
    assert message.endswith("unknown key data.val.arrrays; did you mean 'arrays'?") and "import.toml" in message


def test_unknown_array_name(work):
    edit_npz(work, "val", logit_ft=lambda a: a["logits_ft"], logits_ft=None)
    assert fails(work) == "val.npz: unknown array 'logit_ft'; did you mean 'logits_ft'?"


def test_object_arrays_are_never_unpickled(work):
    edit_npz(work, "val", paths=lambda a: np.array(list(a["paths"]), dtype=object))
    assert fails(work).startswith("val.npz: paths is an array of Python objects, which would need unpickling")


def test_features_that_are_not_unit_norm(work):
    edit_npz(work, "val", features_ft=lambda a: a["features_ft"] * 2)
    assert "val.npz: features_ft row 0 of split val has L2 norm 2" in fails(work)


def test_wse_predictions_of_other_alphas(work):
    edit_config(work, lambda raw: raw["ensemble"].update(wse_alphas=[0.0, 1.0]))
    assert fails(work).startswith("val.npz: preds_wse has shape (3, 40), expected (2, 40) (A = 2 alphas of "
                                  "ensemble.wse_alphas")


def test_images_that_do_not_exist(work):
    (work / "images").mkdir()
    edit_config(work, lambda raw: raw["data"]["val"].update(images="images"))
    assert fails(work).startswith("val.npz: paths: 40 of 40 images of split val do not exist under ")


def test_ragged_parquet_lists(work):
    with np.load(work / "val.npz") as z:
        rows = [list(r) for r in z["logits_ft"]]
        rows[7] = rows[7][:2]
        columns = {"labels": pa.array(z["labels"].tolist()), "logits_ft": pa.array(rows)}
    pq.write_table(pa.table(columns), work / "val.parquet")
    edit_config(work, lambda raw: raw["data"]["val"].update(arrays="val.parquet"))
    assert fails(work) == ("val.parquet: column logits_ft holds lists of different lengths (4 at row 0, 2 at "
                           "row 7); every row needs the same length")
