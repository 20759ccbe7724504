"""Bad input gets one clear message naming the file or field and the fix, and loses nothing.

Each `precompute run` case goes through the command line (in-process: exit status 2, `error: ...` on
stderr) with an earlier bundle in the output folder, which must still open, checksums and all.
"""

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from tiny import CLASSES, draw, tiny_config, tiny_local_dir

from precompute.__main__ import main as cli
from precompute.assemble import AssembleError, AssembleSettings, Extracted, assemble
from precompute.config import ConfigError, DatasetSection
from precompute.sources import folder_dataset
from precompute.synthetic import SyntheticSpec, write_synthetic_bundle
from vrf_core.bundle import MANIFEST, BundleError, open_bundle
from vrf_core.filesafe import DiskFullError, sha256_file
from vrf_core.models import ImageClassifier, ModelError, load_classifier_weights, load_clip, save_weights
from vrf_core.zeroshot import zero_shot_head

SMALL = SyntheticSpec(num_classes=4, dim=8, n_train=300, n_val=40, n_test=40, ood=(("shift", 40, 0.8, 0),))
SMALL_SETTINGS = AssembleSettings(k_max=5, wse_alphas=[0.0, 0.5, 1.0], umap=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """tests/tiny.py's data and config; `out` holds an earlier (synthetic) bundle that must survive."""
    tmp = tmp_path_factory.mktemp("bad")
    model_dir = tiny_local_dir(tmp / "model")
    tiny_config(tmp, model_dir)
    write_synthetic_bundle(tmp / "bundle", SMALL, SMALL_SETTINGS)
    return tmp, model_dir


def config(world, name: str, *edits: tuple[str, str]) -> Path:
    tmp, _ = world
    text = (tmp / "run.toml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    (tmp / f"{name}.toml").write_text(text)
    return tmp / f"{name}.toml"


def fails(world, capsys, name: str, *edits: tuple[str, str]) -> str:
    """Runs the edited config: exit status 2, one `error:` message; the earlier bundle is intact."""
    capsys.readouterr()
    assert cli(["run", "--config", str(config(world, name, *edits))]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1, err
    out = world[0] / "bundle"
    assert open_bundle(out, verify=True).name == "synthetic"
    assert not (out / ".staging").exists() and not list(out.rglob("*.tmp")) and not list(out.rglob(".*.partial"))
    return err.split("error: ", 1)[1]


def copy_data(world, split: str, name: str) -> Path:
    tmp, _ = world
    shutil.copytree(tmp / "data" / split, tmp / name)
    return tmp / name


# ---- images and datasets ------------------------------------------------------------

def test_unreadable_files_stop_the_run_before_any_work_and_are_all_listed(world, capsys):
    test = copy_data(world, "test", "test-broken")
    sketch = copy_data(world, "sketch", "sketch-broken")
    good = (test / "red_square" / "000.png").read_bytes()
    (test / "red_square" / "truncated.png").write_bytes(good[: len(good) // 2])
    (test / "green_circle" / "empty.png").write_bytes(b"")
    (test / "blue_triangle" / "notes.jpg").write_text("not an image")
    (sketch / "yellow_cross" / "cut.png").write_bytes(good[:100])
    msg = fails(world, capsys, "unreadable", ('path = "data/test"', f'path = "{test}"'),
                ('path = "data/sketch"', f'path = "{sketch}"'))
    for part in ("[data.test]", "[data.ood.sketch]", "red_square/truncated.png", "green_circle/empty.png",
                 "blue_triangle/notes.jpg", "yellow_cross/cut.png", "skip_unreadable = true"):
        assert part in msg, part
    out = world[0] / "bundle"
    assert len((out / "unreadable.txt").read_text().splitlines()) == 4
    stages = {s["stage"] for s in json.loads((out / "stages.json").read_text())["stages"]}
    assert stages and all(s.startswith("scan/") for s in stages)  # nothing expensive started


def test_skip_unreadable_leaves_them_out_and_records_them(world, tmp_path):
    test = copy_data(world, "test", "test-skip")
    (test / "red_square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    path = config(world, "skip", ('path = "data/test"', f'path = "{test}"\nskip_unreadable = true'),
                  ('out = "bundle"', f'out = "{tmp_path / "skip"}"'))
    assert cli(["run", "--config", str(path)]) == 0
    bundle = open_bundle(tmp_path / "skip", verify=True)
    [skipped] = bundle.manifest["skipped_unreadable"]["test"]
    assert skipped["ref"] == "red_square/broken.png" and skipped["reason"]
    assert bundle.splits["test"]["n"] == 40 and "red_square/broken.png" not in bundle.array("test", "refs")


def test_an_empty_class_folder(world, capsys):
    sketch = copy_data(world, "sketch", "sketch-empty")
    for f in (sketch / "green_circle").iterdir():
        f.unlink()
    msg = fails(world, capsys, "empty", ('path = "data/sketch"', f'path = "{sketch}"'))
    assert "green_circle" in msg and "holds no images" in msg


def test_a_label_outside_the_class_list(world, capsys):
    tmp, _ = world
    csv = tmp / "labels.csv"
    csv.write_text("path,label\nred_square/000.png,0\ngreen_circle/000.png,7\n")
    csv_section = f'[data.test]\ntype = "csv"\npath = "{csv}"\noptions = {{root = "data/test"}}'
    msg = fails(world, capsys, "label", ('[data.test]\ntype = "folder"\npath = "data/test"', csv_section))
    assert f"{csv}:3" in msg and "label 7 is outside the class list (0..3)" in msg


def test_class_lists_that_disagree_need_a_declared_projection(world, capsys):
    sketch = copy_data(world, "sketch", "sketch-extra")
    (sketch / "purple_hexagon").mkdir()
    draw(0, np.random.default_rng(0)).save(sketch / "purple_hexagon" / "0.png")
    msg = fails(world, capsys, "disagree", ('path = "data/sketch"', f'path = "{sketch}"'))
    assert "'purple_hexagon'" in msg and "options.projection" in msg

    # Declared: dataset classes "warm" and "cool", each the max over two model classes.
    tmp, _ = world
    for folder, label in (("warm", 0), ("cool", 1)):
        (tmp / "grouped" / folder).mkdir(parents=True)
        draw(label, np.random.default_rng(label)).save(tmp / "grouped" / folder / "0.png")
    section = DatasetSection(options={"projection": {"warm": ["red square", "yellow cross"],
                                                     "cool": ["green circle", "blue triangle"]}})
    images = folder_dataset("grouped", tmp / "grouped", CLASSES, section)
    assert images.classnames == ["warm", "cool"] and images.projection.groups == ((0, 3), (1, 2))
    section.options["projection"]["cool"] = ["purple hexagon"]
    with pytest.raises(ConfigError, match=r"options\.projection\.cool names \['purple hexagon'\]"):
        folder_dataset("grouped", tmp / "grouped", CLASSES, section)


@pytest.mark.parametrize("edit,expected", [
    (("k_max = 8", "kmax = 8"), "unknown key ensemble.kmax; did you mean 'k_max'?"),
    (('path = "data/test"', 'path = "data/test"\nskip_unreadble = true'),
     "unknown key data.test.skip_unreadble; did you mean 'skip_unreadable'?"),
    (("[bundle]", "[bundel]"), "unknown section [bundel]; did you mean [bundle]?"),
    (("thumb_size = 32", 'thumb_size = "big"'), 'bundle.thumb_size = "big" must be an integer >= 0'),
])
def test_misspelled_config_keys_suggest_the_closest(world, capsys, edit, expected):
    assert expected in fails(world, capsys, "typo", edit)


# ---- models and checkpoints ---------------------------------------------------------

def zero_shot_classifier(model_dir: Path) -> ImageClassifier:
    clip = load_clip(f"local-dir:{model_dir}")
    templates = ["a photo of a {}.", "a drawing of a {}."]  # those of tests/tiny.py's config
    return ImageClassifier(clip.model.visual, zero_shot_head(clip.model, clip.tokenizer, CLASSES, templates))


def with_checkpoint(path: Path) -> tuple[str, str]:
    return "[finetune]", f'[finetune]\ncheckpoint = "{path}"'


def test_a_checkpoint_that_does_not_match_the_model(world, capsys, tmp_path):
    _, model_dir = world
    sd = zero_shot_classifier(model_dir).state_dict()
    sd["head.weight"] = torch.zeros(7, 32)
    save_weights(sd, tmp_path / "other.safetensors")
    msg = fails(world, capsys, "mismatch", with_checkpoint(tmp_path / "other.safetensors"))
    assert "other.safetensors: not a fine-tuned checkpoint of this model" in msg and "head.weight" in msg
    # A CLIP checkpoint for another architecture, and a `pretrained` that a local-dir model would ignore.
    cfg = json.loads((model_dir / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "badarch.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "badarch.json")
    clip_sd = load_clip(f"local-dir:{model_dir}").model.state_dict()
    clip_sd["visual.proj"] = torch.zeros(3, 3)
    save_weights(clip_sd, tmp_path / "clip.safetensors")
    with pytest.raises(ModelError, match=r"clip.safetensors does not match model 'badarch'.*visual.proj"):
        load_clip("badarch", str(tmp_path / "clip.safetensors"))
    with pytest.raises(ModelError, match="would be ignored"):
        load_clip(f"local-dir:{model_dir}", str(tmp_path / "clip.safetensors"))


@pytest.mark.parametrize("where,what", [("visual.proj", "features"), ("head.weight", "logits")])
def test_nan_or_infinite_outputs_name_the_split_and_the_model(world, capsys, tmp_path, where, what):
    _, model_dir = world
    sd = zero_shot_classifier(model_dir).state_dict()
    sd[where][0] = float("nan") if what == "features" else float("inf")
    save_weights(sd, tmp_path / "broken.safetensors")
    msg = fails(world, capsys, "nan", with_checkpoint(tmp_path / "broken.safetensors"))
    assert f"model 'ft' gave NaN or infinite {what}" in msg and "of split 'train'" in msg
    assert 'model.precision = "fp32"' in msg


def test_an_empty_zsf_set(world, capsys, tmp_path):
    _, model_dir = world
    save_weights(zero_shot_classifier(model_dir), tmp_path / "zs.safetensors")  # "fine-tuned" = zero-shot
    msg = fails(world, capsys, "zsf", with_checkpoint(tmp_path / "zs.safetensors"))
    assert "zero-shot failure set is empty" in msg and "finetune.checkpoint" in msg


def test_a_zsf_set_smaller_than_k(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 4
    preds_zs = labels.copy()
    preds_zs[:3] = (labels[:3] + 1) % 4  # three ZSF members
    feats = rng.normal(size=(40, 8)).astype(np.float32)
    train = Extracted("id_train", labels, np.array([f"t{i}" for i in range(40)]), feats, preds_zs=preds_zs,
                      preds_ft=labels)
    with pytest.raises(AssembleError, match=r"has 3 members, fewer than k \+ 1 = 6 \(ensemble.k_rule = 5"):
        assemble(tmp_path, "x", train, {}, AssembleSettings(k_rule=5, umap=False), {"classnames": CLASSES})
    assert not (tmp_path / MANIFEST).exists() and not (tmp_path / ".staging").exists()


# ---- bundles -------------------------------------------------------------------------

@pytest.fixture
def bundle_copy(world, tmp_path):
    shutil.copytree(world[0] / "bundle", tmp_path / "b")
    return tmp_path / "b"


def rewrite_manifest(path: Path, **changes) -> None:
    m = json.loads((path / MANIFEST).read_text())
    m.update(changes)
    (path / MANIFEST).write_text(json.dumps(m))


def test_feature_dimensions_that_differ_between_parts(bundle_copy, capsys):
    rel = "splits/test/features_ft.npy"
    np.save(bundle_copy / rel, np.zeros((40, 9), np.float16))  # a part of another run, manifest as it was
    with pytest.raises(BundleError, match=r"features_ft.npy: 848 bytes but the manifest records 768"):
        open_bundle(bundle_copy)
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["files"][rel].update(shape=[40, 9], bytes=(bundle_copy / rel).stat().st_size,
                           sha256=sha256_file(bundle_copy / rel))
    rewrite_manifest(bundle_copy, files=m["files"])
    with pytest.raises(BundleError, match=r"features_ft.npy: shape \(40, 9\), expected \(40, 8\) \(n = 40 for "
                                          r"split 'test'\)"):
        open_bundle(bundle_copy)
    assert cli(["report", str(bundle_copy)]) == 2
    assert "shape (40, 9), expected (40, 8)" in capsys.readouterr().err


def replace_array(bundle: Path, rel: str, arr: np.ndarray) -> None:
    """Swap an array of the bundle for `arr`, the manifest updated to match (as if written so)."""
    np.save(bundle / rel, arr)
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"][rel].update(shape=list(arr.shape), dtype=str(arr.dtype), bytes=(bundle / rel).stat().st_size,
                           sha256=sha256_file(bundle / rel))
    rewrite_manifest(bundle, files=m["files"])


def test_topm_tables_and_wse_predictions_that_do_not_fit(bundle_copy):
    """Stored top-m tables of another length or for another number of temperature pairs, WSE predictions
    for another number of alphas, or a missing required array: refused with the file and the shape named."""
    bundle = open_bundle(bundle_copy)
    pairs = len(bundle.manifest["topm"]["temperatures"])
    cand = np.asarray(bundle.array("test", "topm_cand"))
    replace_array(bundle_copy, "splits/test/topm_cand.npy", cand[..., :-1])
    with pytest.raises(BundleError, match=rf"topm_cand.npy: shape \({pairs}, 6, 39\), expected \({pairs}, 2m, 40\)"):
        open_bundle(bundle_copy)
    replace_array(bundle_copy, "splits/test/topm_cand.npy", cand[:1])
    with pytest.raises(BundleError, match=rf"topm_cand.npy: shape \(1, 6, 40\), expected \({pairs}, 2m, 40\)"):
        open_bundle(bundle_copy)
    replace_array(bundle_copy, "splits/test/topm_cand.npy", cand)
    replace_array(bundle_copy, "splits/test/preds_wse.npy", np.zeros((2, 40), np.int32))
    with pytest.raises(BundleError, match=r"preds_wse.npy: shape \(2, 40\), expected \(3, 40\)"):
        open_bundle(bundle_copy)
    m = json.loads((bundle_copy / MANIFEST).read_text())
    rewrite_manifest(bundle_copy, files={r: i for r, i in m["files"].items() if "/preds_wse" not in r})
    with pytest.raises(BundleError, match=r"split 'val' \(role id_val\) lacks the arrays \['preds_wse'\]"):
        open_bundle(bundle_copy)


def test_schema_1_arrays_are_named_and_refused(bundle_copy):
    replace_array(bundle_copy, "splits/test/knn_sqdist.npy", np.zeros((40, 5), np.float32))
    np.save(bundle_copy / "splits/test/logits_wse.npy", np.zeros((3, 40, 4), np.float16))
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["files"]["splits/test/logits_wse.npy"] = {"shape": [3, 40, 4], "dtype": "float16", "sha256": "",
                                                "bytes": (bundle_copy / "splits/test/logits_wse.npy").stat().st_size}
    rewrite_manifest(bundle_copy, files=m["files"])
    with pytest.raises(BundleError, match=r"logits_wse.npy: not part of schema 2 \(schema 2 stores the WSE "
                                          r"predictions \(preds_wse"):
        open_bundle(bundle_copy)


@pytest.mark.parametrize("version,fix", [(3, "this tool reads 2: upgrade the tool"),
                                         (1, r"this tool reads 2; rebuild it with `python -m precompute run "
                                             r"--config <the config that built it>` \(cached stages are reused\)")])
def test_a_bundle_of_another_schema_version(bundle_copy, version, fix, capsys):
    rewrite_manifest(bundle_copy, schema_version=version)
    with pytest.raises(BundleError, match=f"schema version {version}, {fix}"):
        open_bundle(bundle_copy)
    assert cli(["report", str(bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and f"schema version {version}" in err


def test_a_demo_bundle_of_schema_1_names_the_demo_command(bundle_copy):
    rewrite_manifest(bundle_copy, schema_version=1, name="demo")
    command = f"python -m precompute demo --out {bundle_copy}"
    with pytest.raises(BundleError, match=f"rebuild it with `{re.escape(command)}`"):
        open_bundle(bundle_copy)


def test_a_bundle_with_missing_or_truncated_files(bundle_copy, capsys):
    (bundle_copy / "splits/shift/knn_sqdist.npy").unlink()
    assert cli(["report", str(bundle_copy)]) == 2
    assert "1 file(s) listed in the manifest are missing (splits/shift/knn_sqdist.npy)" in capsys.readouterr().err
    shutil.rmtree(bundle_copy / "splits/shift")
    with pytest.raises(BundleError, match="file"):
        open_bundle(bundle_copy)
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["splits"].pop("shift")
    rewrite_manifest(bundle_copy, splits=m["splits"], files={r: i for r, i in m["files"].items() if "/shift/" not in r})
    thumbs = bundle_copy / "splits/test/thumbs.bin"
    thumbs.write_bytes(thumbs.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"thumbs.bin: \d+ bytes but the manifest records \d+"):
        open_bundle(bundle_copy)


# ---- a full disk ---------------------------------------------------------------------

class FullDisk:
    """os.fdopen whose files accept `budget` bytes in all, then fail as a full disk does (part written)."""

    def __init__(self, budget: int):
        self.left, self.fdopen = budget, os.fdopen

    def __call__(self, fd, mode="r", *args, **kwargs):
        f = self.fdopen(fd, mode, *args, **kwargs)
        return self.Limited(f, self) if "w" in mode else f

    class Limited:
        def __init__(self, f, disk):
            self.f, self.disk = f, disk

        def write(self, data) -> int:
            data = bytes(data)
            if len(data) > self.disk.left:
                self.f.write(data[: self.disk.left])
                self.disk.left = 0
                raise OSError(errno.ENOSPC, "No space left on device")
            self.disk.left -= len(data)
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

        def fileno(self) -> int:
            return self.f.fileno()

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()


def assert_untouched(bundle: Path, before: dict) -> None:
    again = open_bundle(bundle, verify=True)
    assert again.manifest["files"] == before["files"] and again.manifest["created"] == before["created"]
    assert not (bundle / ".staging").exists() and not list(bundle.rglob("*.tmp"))


def test_a_full_disk_while_writing_a_bundle(bundle_copy, monkeypatch):
    before = open_bundle(bundle_copy).manifest
    size = sum(i["bytes"] for i in before["files"].values())
    monkeypatch.setattr(os, "fdopen", FullDisk(size // 2))
    with pytest.raises(DiskFullError, match=r"splits/.*: no space left on device while writing it"):
        write_synthetic_bundle(bundle_copy, SMALL, AssembleSettings(k_max=4, wse_alphas=[0.0, 0.5, 1.0], umap=False))
    monkeypatch.undo()
    assert_untouched(bundle_copy, before)


def test_a_full_disk_during_a_run(world, capsys, monkeypatch):
    monkeypatch.setattr(os, "fdopen", FullDisk(3000))
    msg = fails(world, capsys, "full")
    assert "no space left on device" in msg and "run the same command again" in msg


def test_a_real_full_filesystem(tmp_path):
    """The same on a 1 MiB tmpfs, filled up for real (needs root; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        write_synthetic_bundle(mnt / "b", SMALL, SMALL_SETTINGS)
        before = open_bundle(mnt / "b").manifest
        with open(mnt / "filler", "wb") as f:  # fill the disk, then leave a little room
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        os.truncate(mnt / "filler", max(0, (mnt / "filler").stat().st_size - 100_000))
        with pytest.raises(DiskFullError, match="no space left on device"):
            write_synthetic_bundle(mnt / "b", SMALL, AssembleSettings(k_max=4, wse_alphas=[0.0, 0.5, 1.0],
                                                                      umap=False))
        assert_untouched(mnt / "b", before)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_leaves_no_partial_stage(world, tmp_path, monkeypatch):
    """Stage folders are written aside and renamed: a failure leaves none half-filled."""
    _, model_dir = world
    model = zero_shot_classifier(model_dir)
    save_weights(model, tmp_path / "w.safetensors")
    monkeypatch.setattr(os, "fdopen", FullDisk(100))
    with pytest.raises(DiskFullError):
        save_weights(model, tmp_path / "w.safetensors")
    monkeypatch.undo()
    load_classifier_weights(model, tmp_path / "w.safetensors")  # the earlier file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
