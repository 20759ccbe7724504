"""Nothing is ever unpickled, and no path read from a bundle leaves the bundle.

The malicious files below would create a marker file if anything unpickled them.
"""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute.assemble import AssembleSettings
from precompute.synthetic import SyntheticSpec, write_synthetic_bundle
from vrf_core.bundle import MANIFEST, BundleError, atomic_save_npy, open_bundle, resolve_inside, sha256_file
from vrf_core.models import ImageClassifier, ModelError, load_classifier_weights, load_weights

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs Path(marker).touch()."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("sec") / "bundle"
    spec = SyntheticSpec(num_classes=4, dim=8, n_train=300, n_val=40, n_test=40, ood=(("shift", 40, 0.8, 0),))
    write_synthetic_bundle(out, spec, AssembleSettings(k_max=5, wse_alphas=[0.0, 1.0], umap=False))
    return out


def test_the_payload_works_when_unpickled(tmp_path):
    """Check of the check: the payload really runs when unpickled."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("update_manifest", [False, True])
def test_an_object_array_in_a_bundle_is_refused_unread(bundle, tmp_path, update_manifest):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    marker = tmp_path / "pwned"
    rel = "splits/test/labels.npy"
    np.save(copy / rel, np.array([Payload(marker)] * 40, dtype=object), allow_pickle=True)
    if update_manifest:  # a consistent-looking manifest does not help
        m = json.loads((copy / MANIFEST).read_text())
        m["files"][rel].update(dtype="object", bytes=(copy / rel).stat().st_size, sha256=sha256_file(copy / rel))
        (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="labels.npy"):
        open_bundle(copy)
    with pytest.raises(BundleError):
        open_bundle(copy, verify=True)
    assert not marker.exists()
    if update_manifest:
        with pytest.raises(BundleError, match="holds Python objects"):
            open_bundle(copy)


def test_object_arrays_are_never_written(tmp_path):
    with pytest.raises(BundleError, match="would need pickle"):
        atomic_save_npy(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object))
    assert not list(tmp_path.iterdir())


def test_a_manifest_is_json_only(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    marker = tmp_path / "pwned"
    (copy / MANIFEST).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(copy)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"head.weight": torch.zeros(2, 2), "extra": Payload(marker)}, path)
    with pytest.raises(ModelError, match="refused: the file holds pickled Python objects"):
        load_weights(path)
    model = ImageClassifier(torch.nn.Linear(2, 2), torch.zeros(3, 2))
    with pytest.raises(ModelError, match="weights_only=True"):
        load_classifier_weights(model, path)
    assert not marker.exists()
    # The same file as the training state a resumed fine-tuning would read.
    from vrf_core.finetune import FinetuneConfig, finetune

    shutil.copy(path, tmp_path / "train_state.pt")
    with pytest.raises(ModelError, match="train_state.pt: refused"):
        finetune(model, None, None, None, None, FinetuneConfig(), tmp_path, torch.device("cpu"))
    assert not marker.exists()


def test_a_pickled_open_clip_checkpoint_is_refused(tmp_path):
    import open_clip
    from tiny import TINY_CFG

    from vrf_core.models import load_clip

    marker = tmp_path / "pwned"
    cfg = tmp_path / "secarch.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg)
    torch.save({"state_dict": {"x": Payload(marker)}}, tmp_path / "clip.pt")
    with pytest.raises(ModelError, match="clip.pt: refused"):
        load_clip("secarch", str(tmp_path / "clip.pt"))
    assert not marker.exists()


@pytest.mark.parametrize("rel", ["../outside.npy", "splits/../../outside.npy", "/etc/passwd", "~/x",
                                 "C:\\Windows\\x", "..\\x", "splits/a\x00b", ""])
def test_resolve_inside_refuses_escapes(tmp_path, rel):
    with pytest.raises(BundleError, match="refused"):
        resolve_inside(tmp_path, rel)


def test_resolve_inside_follows_links_only_within(tmp_path):
    root = tmp_path / "root"
    (root / "splits").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("x")
    (root / "leak").symlink_to(tmp_path / "secret.txt")
    (root / "inner").symlink_to(root / "splits")
    with pytest.raises(BundleError, match="outside"):
        resolve_inside(root, "leak")
    assert resolve_inside(root, "inner/a.npy") == (root / "splits" / "a.npy").resolve()
    assert resolve_inside(root, "splits/test/labels.npy") == (root / "splits/test/labels.npy").resolve()


@pytest.mark.parametrize("rel", ["../../secret.npy", "/tmp/secret.npy"])
def test_a_manifest_cannot_point_outside_the_bundle(bundle, tmp_path, rel):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    np.save(tmp_path / "secret.npy", np.arange(3))
    m = json.loads((copy / MANIFEST).read_text())
    m["files"][rel] = {"shape": [3], "dtype": "int64", "sha256": sha256_file(tmp_path / "secret.npy")}
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="refused"):
        open_bundle(copy)


def test_split_names_cannot_escape(bundle, tmp_path):
    from vrf_core.bundle import BundleWriter

    writer = BundleWriter(tmp_path / "w")
    with pytest.raises(BundleError, match="refused"):
        writer.put("../../evil", "labels", np.arange(3))
    b = open_bundle(bundle)
    with pytest.raises(BundleError, match="lists no file"):
        b.array("../test", "labels")


def test_the_dashboard_listens_on_loopback_by_default():
    make = (ROOT / "Makefile").read_text()
    assert "--server.address 127.0.0.1" in make
