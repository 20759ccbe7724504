"""Every config value is checked when the config is parsed, and the command line never shows a traceback
for a user error: one line `error: ...`, exit status 2. An internal error is one line naming it and the
file holding its traceback, exit status 1.

The configs here name a model that would be slow to fail (a hub download, offline) and data folders that
do not exist: an error that names the key, in seconds, shows the check came before either was opened.
"""

import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import draw

from precompute.__main__ import main as cli
from precompute.config import ConfigError, DatasetSection
from precompute.sources import folder_dataset, resolve_classnames
from vrf_core.filesafe import DiskFullError

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "run": {"name": "checks", "out": "out"},
    "model": {"name": "ViT-B-16", "pretrained": "openai"},
    "classes": {"names": ["cat", "dog"], "templates": ["a photo of a {}."]},
    "data": {"train": {"type": "folder", "path": "absent/train", "val_holdout": 2},
             "test": {"type": "folder", "path": "absent/test"},
             "ood": {"shift": {"type": "folder", "path": "absent/shift"}}},
    "finetune": {"epochs": 1},
    "ensemble": {"k_max": 100},
    "bundle": {"umap": False},
}


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # strings, numbers, booleans and lists of them are written alike


def toml_text(tables: dict, prefix: str = "") -> str:
    scalars = {k: v for k, v in tables.items() if not isinstance(v, dict) or k == "options"}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [f"{k} = {toml_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        if k not in scalars:
            lines.append(toml_text(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(lines) + "\n"


def write_config(folder: Path, key: str | None = None, value=None) -> Path:
    """BASE with `key` (dotted, e.g. 'ensemble.weight_rule') set to `value`."""
    raw = copy.deepcopy(BASE)
    if key is not None:
        *tables, name = key.split(".")
        section = raw
        for t in tables:
            section = section[t]
        section[name] = value
    path = folder / "config.toml"
    path.write_text(toml_text(raw))
    return path


def run_cli(config: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """The command's result, its wall-clock seconds and its CPU seconds."""
    cpu0, t0 = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "precompute", "run", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return done, time.perf_counter() - t0, children_cpu_seconds() - cpu0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def assert_one_line_error(config: Path, *fragments: str) -> str:
    done, wall, cpu = run_cli(config)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    # Under 5 s of work (mostly importing torch). Wall-clock time on the 2 shared cores where the suite runs
    # also counts the other jobs', so it gets a looser bound that still catches a hub lookup's retries.
    assert cpu < 5 and wall < 20, f"{cpu:.1f} s CPU, {wall:.1f} s: the check came after something slow"
    return lines[0]


FIXES = {  # what the message says to do, for some of BAD_VALUES
    ("ensemble.weight_rule", "sigmod"): ['is not one of sigmoid, linear, binary; did you mean "sigmoid"?'],
    ("ensemble.distance", "l3"): ["is not one of squared, l2"],
    ("ensemble.calibration", "nl"): ['is not one of confidence, nll, none; did you mean "nll"?'],
    ("ensemble.k_rule", "papr"): ["paper, reference or an integer in [1, ensemble.k_max = 100]", '"paper"?'],
    ("ensemble.k_rule", 101): ["an integer in [1, ensemble.k_max = 100]"],
    ("ensemble.knn_backend", "fais"): ['auto, faiss, torch; did you mean "faiss"?'],
    ("finetune.epochs", True): ["must be an integer >= 1"],
    ("finetune.label_smoothing", 1.0): ["must be a number in [0, 1)"],
    ("finetune.lr", 0): ["must be a number > 0"],
    ("finetune.mode", "lpf"): ['e2e, lpft, flyp, none; did you mean "lpft"?'],
    ("run.device", "gpu"): ["auto, cpu, cuda, mps, cuda:<index>"],
    ("data.train.type", "folders"): ['did you mean "folder"?', "csv", "imagenet"],
    ("model.precision", "fp16"): ["auto, bf16, fp32"],
    ("bundle.thumb_size", -1): ["must be an integer >= 0"],
    ("classes.names", "imagenett"): ["cifar10, entity30, imagenet", 'did you mean "imagenet"?'],
    ("classes.templates", "openai_imagnet"): ['did you mean "openai_imagenet"?'],
}
BAD_VALUES = [
    ("run.device", "gpu"), ("run.device", "cuda:x"), ("run.batch_size", 0), ("run.workers", -1), ("run.seed", -1),
    ("run.out", 3),
    ("model.precision", "fp16"), ("model.name", ["ViT-B-16"]),
    ("finetune.mode", "lpf"), ("finetune.epochs", -1), ("finetune.epochs", 0), ("finetune.epochs", True),
    ("finetune.epochs", 2.5), ("finetune.lr", 0), ("finetune.lr", -1e-5), ("finetune.lr", "fast"),
    ("finetune.lp_lr", 0), ("finetune.lp_epochs", -1), ("finetune.batch_size", 0), ("finetune.weight_decay", -0.1),
    ("finetune.warmup_steps", -1), ("finetune.grad_clip", -1.0), ("finetune.label_smoothing", 1.0),
    ("finetune.label_smoothing", -0.1), ("finetune.workers", -1), ("finetune.seed", -2),
    ("finetune.precision", "half"), ("finetune.max_steps_per_epoch", -1),
    ("ensemble.weight_rule", "sigmod"), ("ensemble.weight_rule", 3), ("ensemble.distance", "l3"),
    ("ensemble.calibration", "nl"), ("ensemble.knn_backend", "fais"), ("ensemble.k_rule", "papr"),
    ("ensemble.k_rule", 0), ("ensemble.k_rule", 101), ("ensemble.k_rule", True), ("ensemble.k_max", 0),
    ("ensemble.wse_alphas", []), ("ensemble.wse_alphas", [0.5, 1.5]), ("ensemble.ose_alphas", ["a"]),
    ("ensemble.ose_alphas", 0.5), ("ensemble.wse_alphas", [True]),
    ("bundle.train_sample", 0), ("bundle.thumb_size", -1), ("bundle.umap_max_points", 1),
    ("bundle.umap_neighbors", 1), ("bundle.umap", "yes"),
    ("data.train.type", "folders"), ("data.train.val_holdout", -1), ("data.test.crop_border", -1),
    ("data.test.skip_unreadable", 1), ("data.ood.shift.type", "imagenet_b"),
    ("classes.names", "imagenett"), ("classes.names", []), ("classes.names", ["cat", "cat"]),
    ("classes.names", ["cat", ""]), ("classes.names", 7), ("classes.templates", "openai_imagnet"),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_key_value_and_fix_before_any_work(tmp_path, key, value):
    fixes = next((f for (k, v), f in FIXES.items() if k == key and v == value and type(v) is type(value)), [])
    assert_one_line_error(write_config(tmp_path, key, value), f"{key} = {json.dumps(value)}", *fixes)


def test_every_fix_is_tried():
    assert all(case in [(k, v) for k, v in BAD_VALUES] for case in FIXES)


def test_structural_errors_name_the_key(tmp_path):
    assert_one_line_error(write_config(tmp_path, "data.train.options", {"foldrs": ["a"]}),
                          "data.train.options.foldrs", "did you mean 'folders'?")
    assert_one_line_error(write_config(tmp_path, "data.ood.shift.path", ""), "data.ood.shift.path is required")
    assert_one_line_error(write_config(tmp_path, "model.name", ""), "model.name is required")
    assert_one_line_error(write_config(tmp_path, "finetune.checkpoint", "ft.safetensors"),
                          'finetune.checkpoint = "ft.safetensors" does not exist', str(tmp_path / "ft.safetensors"))
    assert_one_line_error(write_config(tmp_path, "ensemble.wse_alphas", [0.0, 1.5]), "(1.5 is not)", "[0, 1]")


@pytest.mark.parametrize("key,name,content,fragments", [
    ("classes.templates", "t.txt", "a photo of a {}.\na photo of a\n",
     ['classes.templates = "t.txt"', "template 2 of", 't.txt, "a photo of a", needs one {}']),
    ("classes.templates", "t.txt", "", ["holds no templates"]),
    ("classes.templates", "t.txt", "a {} of a {}\n", ['"a {} of a {}"']),
    ("classes.names", "n.txt", "cat\ndog\ncat\n", ["n.txt lists 'cat' twice (entries 1 and 3)"]),
    ("classes.names", "n.txt", "\n\n", ["n.txt lists no class names"]),
    ("classes.names", "n.json", '["cat", "dog", "cat"]', ["n.json lists 'cat' twice"]),
    ("classes.names", "n.json", '{"cat": 0}', ["n.json holds a JSON dict"]),
    ("classes.names", "n.json", '["cat", 3]', ["entry 2 of", "n.json (3) is not a class name"]),
    ("classes.names", "n.json", "[cat]", ["n.json is not valid JSON"]),
    ("classes.names", "n.csv", "name\ncat\ndog\ncat\n", ["n.csv lists 'cat' twice"]),
    ("classes.names", "n.csv", "cat,1\ndog,2\n", ["n.csv has rows of several columns", "name or classname or class"]),
])
def test_files_named_by_the_config_are_read_and_checked_at_parse_time(tmp_path, key, name, content, fragments):
    (tmp_path / name).write_text(content)
    line = assert_one_line_error(write_config(tmp_path, key, name), *fragments)
    assert str(tmp_path / name) in line


def test_an_inline_template_without_braces(tmp_path):
    assert_one_line_error(write_config(tmp_path, "classes.templates", ["a photo of a {}.", "a photo"]),
                          "classes.templates: template 2 of the inline list", '"a photo"', "needs one {}")


# ---- class-name files -----------------------------------------------------------------

@pytest.mark.parametrize("name,content", [
    ("names.txt", "cat\n\n  dog  \nbig bird\n"),
    ("names.json", '["cat", "dog", "big bird"]'),
    ("names.json", '[\n  "cat",\n  "dog",\n  "big bird"\n]\n'),
    ("names.csv", "cat\ndog\nbig bird\n"),
    ("names.csv", "index,name\n0,cat\n1,dog\n2,big bird\n"),
    ("names.csv", "Class,wnid\ncat,n1\ndog,n2\n\"big bird\",n3\n"),
    ("names.csv", "classname\ncat\ndog\nbig bird\n"),
])
def test_class_name_files(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    assert resolve_classnames(name, tmp_path) == ["cat", "dog", "big bird"]


def test_registered_and_inline_class_lists(tmp_path):
    assert len(resolve_classnames("imagenet", tmp_path)) == 1000
    assert resolve_classnames("cifar10", tmp_path)[:2] == ["airplane", "automobile"]
    assert resolve_classnames([" cat", "dog "], tmp_path) == ["cat", "dog"]
    with pytest.raises(ConfigError, match=r"run.toml: classes.names = \"missing.txt\" is neither a registered "
                                          r"class list \(cifar10, entity30, imagenet\) nor an existing file"):
        resolve_classnames("missing.txt", tmp_path, "run.toml")


def test_a_folder_mismatch_shows_the_names_read_and_the_closest(tmp_path):
    (tmp_path / "names.json").write_text(json.dumps(["red square", "green circle", "blue triangle", "yellow cross"]))
    classnames = resolve_classnames("names.json", tmp_path)
    for folder in ("red_square", "green_circle", "blue_triangel", "yellow_cross", "zebra"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        draw(0, np.random.default_rng(0)).save(tmp_path / "data" / folder / "0.png")
    with pytest.raises(Exception) as info:
        folder_dataset("test", tmp_path / "data", classnames, DatasetSection(), str(tmp_path / "names.json"))
    msg = str(info.value)
    assert "\n" not in msg
    assert "2 of the 5 folders" in msg
    assert "'blue_triangel' (closest: 'blue triangle')" in msg and "'zebra' (no class name is close)" in msg
    assert (f"the 4 class names read from {tmp_path / 'names.json'}: 'red square', 'green circle', "
            "'blue triangle', 'yellow cross'") in msg


def test_a_folder_mismatch_through_the_command_line(tmp_path, capsys):
    """The whole path: a JSON class file that a line reader would have taken as one name now matches."""
    (tmp_path / "names.json").write_text(json.dumps(["cat", "dog"]))
    for split in ("train", "test", "shift"):
        for folder in ("cat", "dgo"):
            (tmp_path / "absent" / split / folder).mkdir(parents=True)
            draw(0, np.random.default_rng(0)).save(tmp_path / "absent" / split / folder / "0.png")
    config = write_config(tmp_path, "classes.names", "names.json")
    capsys.readouterr()
    assert cli(["run", "--config", str(config)]) == 2
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert err.startswith("error: train: 1 of the 2 folders") and "'dgo' (closest: 'dog')" in err
    assert f"the 2 class names read from {tmp_path / 'names.json'}: 'cat', 'dog'" in err


# ---- the command line's two kinds of failure -------------------------------------------

def test_an_internal_error_writes_its_traceback_to_a_file(tmp_path, monkeypatch, capsys):
    import precompute.config

    def broken(path):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(precompute.config, "load_config", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    capsys.readouterr()
    assert cli(["run", "--config", "whatever.toml"]) == 1
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert line.startswith("internal error: RuntimeError: something inside broke (full traceback in ")
    [crash] = tmp_path.glob("vrf-lab-crash-*.txt")
    assert str(crash) in line
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "second line" in text and "def broken" not in err


@pytest.mark.parametrize("exc,expected", [
    (FileNotFoundError(2, "No such file or directory", "/data/x.png"), "error: /data/x.png: No such file or directory"),
    (PermissionError(13, "Permission denied", "/data/y"), "error: /data/y: Permission denied"),
    (DiskFullError(28, "/out/a.npy: no space left on device while writing it"),
     "error: /out/a.npy: no space left on device while writing it"),
])
def test_missing_files_and_a_full_disk_are_user_errors(monkeypatch, capsys, exc, expected):
    import precompute.config

    def failing(path):
        raise exc

    monkeypatch.setattr(precompute.config, "load_config", failing)
    capsys.readouterr()
    assert cli(["run", "--config", "c.toml"]) == 2
    assert capsys.readouterr().err.strip() == expected


def test_a_missing_config_file(tmp_path):
    done, _, _ = run_cli(tmp_path / "nope.toml")
    assert done.returncode == 2 and done.stderr.strip() == f"error: config file {tmp_path / 'nope.toml'} does not exist"


def test_check_verifies_a_bundle(tmp_path, capsys):
    from precompute.assemble import AssembleSettings
    from precompute.synthetic import SyntheticSpec, write_synthetic_bundle

    spec = SyntheticSpec(num_classes=4, dim=8, n_train=300, n_val=40, n_test=40, ood=(("shift", 40, 0.8, 0),))
    write_synthetic_bundle(tmp_path / "b", spec, AssembleSettings(k_max=5, wse_alphas=[0.0, 1.0], umap=False))
    capsys.readouterr()
    assert cli(["check", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{tmp_path / 'b'}: schema ") and out.endswith(" files verified")
    labels = tmp_path / "b" / "splits" / "test" / "labels.npy"
    labels.write_bytes(labels.read_bytes()[:-1] + bytes([labels.read_bytes()[-1] ^ 1]))  # same size, other bytes
    assert cli(["check", str(tmp_path / "b")]) == 2
    assert "labels.npy" in capsys.readouterr().err
