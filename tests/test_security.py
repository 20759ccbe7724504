"""Nothing is unpickled except through an allow-list of globals, and no path read from a bundle leaves the bundle.

The malicious files below would create a marker file if anything unpickled them.
"""

import codecs
import io
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute.assemble import AssembleSettings
from precompute.synthetic import SyntheticSpec, write_synthetic_bundle
from vrf_core.bundle import MANIFEST, BundleError, open_bundle, resolve_inside
from vrf_core.datasets.cifar_stl import CIFAR_PICKLE_GLOBALS
from vrf_core.filesafe import atomic_save_npy, sha256_file
from vrf_core.models import ImageClassifier, ModelError, load_classifier_weights, load_weights
from vrf_core.safe_unpickle import SafeUnpickleError, load_allowlisted

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
    with pytest.raises(TypeError, match="would need pickle"):
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


class RunsWhenRebuilt:
    """A class no allow-list names: unpickling an instance calls __setstate__, which touches the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state: dict):
        Path(state["marker"]).touch()


class Reduces:
    """Pickles as func(*args), then BUILD with `state` if given: misuses of globals that are allowed."""

    def __init__(self, func, args: tuple, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def hand_written_payloads(marker: Path) -> dict[str, bytes]:
    """Protocol-0 pickles that would touch `marker`, written by hand so that e.g. nt.system need not exist here."""
    touch = f"touch {marker}"
    return {name: text.encode() for name, text in {
        "posix.system": f"cposix\nsystem\n(V{touch}\ntR.",
        "nt.system": f"cnt\nsystem\n(V{touch}\ntR.",
        "builtins.getattr": f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V{touch}\ntR.",
        "builtins.eval": f"cbuiltins\neval\n(V__import__('os').system({touch!r})\ntR.",
        "subprocess.run": f"csubprocess\nrun\n((Vtouch\nV{marker}\nltR.",
    }.items()}


@pytest.mark.parametrize("name", ["posix.system", "builtins.getattr", "builtins.eval", "subprocess.run"])
def test_the_hand_written_payloads_work_when_unpickled(tmp_path, name):
    """Check of the check (nt.system aside, which needs Windows)."""
    pickle.loads(hand_written_payloads(tmp_path / "ran")[name])
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["posix.system", "nt.system", "builtins.getattr", "builtins.eval", "subprocess.run"])
@pytest.mark.parametrize("allowed", [{}, CIFAR_PICKLE_GLOBALS], ids=["nothing", "cifar"])
def test_an_allowlist_refuses_code_execution_payloads(tmp_path, name, allowed):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(hand_written_payloads(marker)[name])
    with pytest.raises(SafeUnpickleError, match=f"^{re.escape(str(path))}: refusing global {re.escape(name)},"):
        load_allowlisted(path, allowed)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_an_unknown_class_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    blob = pickle.dumps(RunsWhenRebuilt(marker), protocol=protocol)
    pickle.loads(blob)  # check of the check
    assert marker.exists()
    marker.unlink()
    name = re.escape(f"{RunsWhenRebuilt.__module__}.RunsWhenRebuilt")
    for allowed in ({}, CIFAR_PICKLE_GLOBALS):
        with pytest.raises(SafeUnpickleError, match=f"unknown.pkl: refusing global {name}.*Nothing was imported"):
            load_allowlisted(blob, allowed, "unknown.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2])
def test_a_persistent_id_is_refused(protocol):
    class StoresOutside(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage/0" if obj == "tensor" else None

    buffer = io.BytesIO()
    StoresOutside(buffer, protocol=protocol).dump({"weight": "tensor"})
    with pytest.raises(SafeUnpickleError, match="refs.pkl: refusing persistent id storage/0"):
        load_allowlisted(buffer.getvalue(), CIFAR_PICKLE_GLOBALS, "refs.pkl")


@pytest.mark.parametrize("misuse, error", [
    (Reduces(np.ndarray, ((1000,), "O")), "numpy.ndarray is allowed only as the first argument"),
    (Reduces(np.dtype, ("O8", False, True)), "not a plain numeric type"),
    (Reduces(np.dtype, ("i4,i4", False, True)), "not a plain numeric type"),
    (Reduces(np._core.multiarray._reconstruct, (np.ndarray, (1000,), "O")), "_reconstruct with unexpected arguments"),
    (Reduces(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (1000,), np.dtype("u1"), False, b"x")),
     "1 data bytes do not fill an array of shape \\(1000,\\)"),
    (Reduces(codecs.encode, ("x", "rot13")), "_codecs.encode with arguments other than"),
    (Reduces(bytes, (10**9,)), "bytes\\(\\) with arguments"),
])
def test_allowed_globals_check_their_arguments(misuse, error):
    with pytest.raises(SafeUnpickleError, match=f"misuse.pkl: .*{error}"):
        load_allowlisted(pickle.dumps(misuse, protocol=2), CIFAR_PICKLE_GLOBALS, "misuse.pkl")


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
