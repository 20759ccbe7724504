"""Content-keyed caching, both directions: unchanged inputs recompute nothing, and each changed input
(checkpoint bytes, class names, templates, preprocessing, the dataset's files, a setting) recomputes
exactly the stages that read it. Evidence: `<out>/stages.json` (what a run computed and what it reused)
and the cache folders on disk."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import CLASSES, draw, tiny_config, tiny_local_dir

from precompute.config import load_config
from precompute.pipeline import run
from vrf_core.models import load_weights, save_weights, weights_key

SPLITS = ("train", "val", "test", "sketch", "subset")
EVAL = SPLITS[1:]


def variant(tmp: Path, out: Path, **replace: tuple[str, str]) -> Path:
    """tests/tiny.py's run config (written once into `tmp`) with `out` and the given text replacements."""
    text = (tmp / "run.toml").read_text().replace('out = "bundle"', f'out = "{out}"')
    for old, new in replace.values():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / f"{out.name}.toml"
    path.write_text(text)
    return path


def stages(out: Path) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in json.loads((out / "stages.json").read_text())["stages"]}


def computed(out: Path) -> set[str]:
    return {stage for stage, status in stages(out).items() if status != "reused"}


def extraction(splits=SPLITS, parts=("zs", "ft", "wse_0.5")) -> set[str]:
    return {f"extract/{s}/{p}" for s in splits for p in parts if not (s == "train" and p == "wse_0.5")}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One complete run; each test copies its output folder and changes one input."""
    tmp = tmp_path_factory.mktemp("cache")
    model_dir = tiny_local_dir(tmp / "model")
    tiny_config(tmp, model_dir, epochs=2, batch_size=16)
    out = tmp / "base"
    run(load_config(variant(tmp, out)))
    return tmp, model_dir, out


def rerun(base, name: str, **replace: tuple[str, str]) -> Path:
    """Run with text replacements in the base config, in a copy of the base output folder."""
    tmp, _, out = base
    shutil.copytree(out, tmp / name)
    run(load_config(variant(tmp, tmp / name, **replace)))
    return tmp / name


def test_unchanged_inputs_recompute_nothing(base):
    tmp, _, out = base
    stamp = (out / "manifest.json").stat().st_mtime_ns
    caches = sorted(p.relative_to(out) for p in (out / "cache").rglob("done.json"))
    run(load_config(variant(tmp, out)))
    assert computed(out) == set()
    assert stages(out)["assemble"] == "reused" and stages(out)["finetune"] == "reused"
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    assert sorted(p.relative_to(out) for p in (out / "cache").rglob("done.json")) == caches


def test_templates_and_class_names_recompute_the_head_and_everything_it_feeds(base):
    downstream = {"zs_head", "finetune", *extraction(), "knn/zsf", *(f"knn/{s}" for s in EVAL), "assemble"}
    out = rerun(base, "templates", templates=('"a drawing of a {}."', '"a sketch of a {}."'))
    assert downstream <= computed(out)
    assert not any(s.startswith("scan/") or s.endswith("/thumbs") for s in computed(out))
    # New class names (folders still match: "Red Square" ~ red_square) recompute the head and what reads it.
    # CLIP's tokenizer lowercases, so the head comes out bit-identical: the stages keyed by array bytes
    # (kNN) find their inputs unchanged and are reused.
    out = rerun(base, "classnames", classes=(json.dumps(CLASSES), json.dumps([c.title() for c in CLASSES])))
    assert {"zs_head", "finetune", *extraction(), "assemble"} <= computed(out)
    assert not any(s.startswith(("scan/", "knn/")) or s.endswith("/thumbs") for s in computed(out))


def test_preprocessing_recomputes_training_and_extraction_not_the_head(base):
    tmp, model_dir, _ = base
    changed = tmp / "model-preprocess"
    shutil.copytree(model_dir, changed)
    cfg = json.loads((changed / "open_clip_config.json").read_text())
    cfg["preprocess_cfg"] = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    (changed / "open_clip_config.json").write_text(json.dumps(cfg))
    out = rerun(base, "preprocess", model=(str(model_dir), str(changed)))
    assert {"finetune", *extraction(), "assemble"} <= computed(out)
    assert stages(out)["zs_head"] == "reused"
    assert not any(s.startswith("scan/") or s.endswith("/thumbs") for s in computed(out))


@pytest.mark.parametrize("change", ["add", "remove", "modify"])
def test_a_changed_test_file_recomputes_only_that_split(base, change):
    tmp, _, _ = base
    test_dir = tmp / f"test-{change}"
    shutil.copytree(tmp / "data/test", test_dir)
    victim = sorted((test_dir / "red_square").iterdir())[0]
    if change == "add":
        draw(0, np.random.default_rng(9)).save(test_dir / "red_square" / "new.png")
    elif change == "remove":
        victim.unlink()
    else:
        Image.fromarray(255 - np.asarray(Image.open(victim))).save(victim)
    out = rerun(base, f"file-{change}", data=('path = "data/test"', f'path = "{test_dir}"'))
    assert computed(out) == {"scan/test", *extraction(["test"]), "extract/test/thumbs", "knn/test", "assemble"}


def test_a_setting_recomputes_only_its_stages(base):
    out = rerun(base, "k-max", k=("k_max = 8", "k_max = 6"))
    assert computed(out) == {"knn/zsf", *(f"knn/{s}" for s in EVAL), "assemble"}
    out = rerun(base, "alphas", alphas=("wse_alphas = [0.0, 0.5, 1.0]", "wse_alphas = [0.0, 0.25, 0.5, 1.0]"))
    assert computed(out) == {*extraction(EVAL, ["wse_0.25"]), "assemble"}
    out = rerun(base, "thumbs", thumbs=("thumb_size = 32", "thumb_size = 24"))
    assert computed(out) == {f"extract/{s}/thumbs" for s in EVAL} | {"thumbs/zsf", "assemble"}


def test_checkpoint_bytes_decide_what_is_reused(base):
    tmp, _, out = base
    ckpt = tmp / "ft.safetensors"
    shutil.copy(next((out / "checkpoints").glob("ft-*/final.safetensors")), ckpt)
    # The same weights given as a checkpoint file: nothing is recomputed.
    same = rerun(base, "ckpt-same", ckpt=("[finetune]", f'[finetune]\ncheckpoint = "{ckpt}"'))
    assert computed(same) == set()
    sd = load_weights(ckpt)
    sd["head.weight"] = sd["head.weight"] * 1.5
    save_weights(sd, ckpt)
    out = rerun(base, "ckpt-changed", ckpt=("[finetune]", f'[finetune]\ncheckpoint = "{ckpt}"'))
    # A rescaled head changes the fine-tuned logits but neither its features nor its predictions: the kNN
    # stages, keyed by the feature bytes, are reused.
    assert computed(out) == {*extraction(parts=("ft", "wse_0.5")), "assemble"}


def test_weights_key_is_the_content(base, tmp_path):
    _, model_dir, _ = base
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    assert weights_key(f"local-dir:{moved}", None) == weights_key(f"local-dir:{model_dir}", None)
    cfg = json.loads((moved / "open_clip_config.json").read_text())
    cfg["preprocess_cfg"] = {"interpolation": "bilinear"}
    (moved / "open_clip_config.json").write_text(json.dumps(cfg))
    assert weights_key(f"local-dir:{moved}", None) == weights_key(f"local-dir:{model_dir}", None)
    sd = load_weights(moved / "open_clip_model.safetensors")
    sd["logit_scale"] = sd["logit_scale"] + torch.tensor(0.01)
    save_weights(sd, moved / "open_clip_model.safetensors")
    assert weights_key(f"local-dir:{moved}", None) != weights_key(f"local-dir:{model_dir}", None)


def test_gc_removes_what_the_last_run_did_not_use_and_a_rerun_recomputes_nothing(base, capsys):
    """After a setting changes, the old kNN stages are stale: `precompute gc` lists them (dry run),
    removes exactly them, frees their bytes, and the same config then recomputes nothing."""
    from precompute.__main__ import main as cli
    from precompute.gc import GcError, collect

    tmp, _, _ = base
    out = rerun(base, "gc", k=("k_max = 8", "k_max = 6"))
    stale = {p for p in (out / "cache" / "knn").iterdir()} - \
        {out / "cache" / f"{s}-{k}" for s, k in ((r["stage"], r["key"]) for r in
                                                  json.loads((out / "stages.json").read_text())["stages"])}
    assert len(stale) == len(EVAL) + 1  # the k_max = 8 searches of the ZSF set and each evaluation split
    before = sorted(p for p in out.rglob("*") if p.is_file())
    dry = collect(out, dry_run=True)
    assert set(dry.removed) == stale and dry.freed_bytes > 0
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before
    assert cli(["gc", str(out)]) == 0
    assert f"removed {len(stale)} folder(s)" in capsys.readouterr().err
    assert not any(p.exists() for p in stale)
    run(load_config(variant(tmp, out, k=("k_max = 8", "k_max = 6"))))
    assert computed(out) == set()
    # A run that did not finish keeps everything: its stages are what it resumes from.
    record = json.loads((out / "stages.json").read_text())
    record["stages"] = [r for r in record["stages"] if r["stage"] != "assemble"]
    (out / "stages.json").write_text(json.dumps(record))
    with pytest.raises(GcError, match=r"stages.json: the last run did not finish"):
        collect(out)
    assert cli(["gc", str(tmp / "nowhere")]) == 2
