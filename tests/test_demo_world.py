"""The demo world: deterministic rendering, dataset layout, pretraining round trip and its cache."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute.demo_world import pretrain as pretrain_module
from precompute.demo_world.corpus import CorpusSpec, make_corpus
from precompute.demo_world.pretrain import (
    CONFIG_FILE,
    RECIPE_FILE,
    WEIGHTS_FILE,
    PretrainRecipe,
    build_pretrained_clip,
    pretrain,
)
from precompute.demo_world.render import CLASSNAMES, EVAL_DOMAINS, IMAGE_SIZE, STYLES, render
from precompute.demo_world.world import HARD_CLASSES, SHIFTS, sample_split, write_demo_datasets

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = PretrainRecipe(corpus=CorpusSpec(size=256), steps=16, batch_size=32, warmup=2, lr=2e-3)


def test_render_is_deterministic_per_seed_and_styles_differ():
    for style in STYLES:
        a = render(3, style, np.random.default_rng(7))
        b = render(3, style, np.random.default_rng(7))
        assert a.dtype == np.uint8 and a.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        np.testing.assert_array_equal(a, b)
    images = [render(3, d, np.random.default_rng(7)).astype(float) for d in EVAL_DOMAINS]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 5, (EVAL_DOMAINS[i], EVAL_DOMAINS[j])
    sketch = render(3, "sketch", np.random.default_rng(0)).astype(int)
    assert (sketch.max(-1) - sketch.min(-1)).max() == 0  # greyscale


def test_splits_and_corpus_are_deterministic():
    a_img, a_lab = sample_split("hard", 21, seed=3)
    b_img, b_lab = sample_split("hard", 21, seed=3)
    np.testing.assert_array_equal(a_img, b_img)
    assert set(a_lab) == set(HARD_CLASSES) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, sample_split("hard", 21, seed=4)[0])
    imgs, caps = make_corpus(CorpusSpec(size=40), seed=1)
    imgs2, caps2 = make_corpus(CorpusSpec(size=40), seed=1)
    np.testing.assert_array_equal(imgs, imgs2)
    assert caps == caps2 and any(name in " ".join(caps) for name in CLASSNAMES)


def test_dataset_folders_layout_counts_and_reuse(tmp_path: Path):
    sizes = {"train": 30, "test": 20, "v2": 10, "sketch": 10, "rendition": 10, "hard": 14, "clutter": 10}
    meta = write_demo_datasets(tmp_path, seed=0, sizes=sizes)
    assert meta["classnames"] == list(CLASSNAMES) and all("{}" in t for t in meta["templates"])
    assert set(meta["splits"]) == {"train", "test", *SHIFTS}
    assert meta["class_subsets"]["hard"] == list(HARD_CLASSES)
    for split, folder in meta["splits"].items():
        classes = HARD_CLASSES if split == "hard" else range(len(CLASSNAMES))
        assert sorted(p.name for p in Path(folder).iterdir()) == sorted(CLASSNAMES[c] for c in classes)
        files = list(Path(folder).glob("*/*.png"))
        assert len(files) == sizes[split]
        counts = [len(list((Path(folder) / CLASSNAMES[c]).glob("*.png"))) for c in classes]
        assert max(counts) - min(counts) <= 1  # balanced
    probe = next(Path(meta["splits"]["test"]).glob("*/*.png"))
    stamp = probe.stat().st_mtime_ns
    assert write_demo_datasets(tmp_path, seed=0, sizes=sizes) == meta
    assert probe.stat().st_mtime_ns == stamp  # reused, not rewritten
    write_demo_datasets(tmp_path, seed=1, sizes=sizes)
    assert not probe.exists() or probe.stat().st_mtime_ns != stamp


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pretrained_clip(tmp_path_factory.mktemp("clip"), seed=0, recipe=TINY)


def test_pretraining_is_deterministic_and_open_clip_loads_it_back(tiny_clip: Path):
    import open_clip

    model, losses = pretrain(TINY, seed=0)  # a second run with the same seed: the same weights
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    marker = json.loads((tiny_clip / RECIPE_FILE).read_text())
    assert marker["loss_last"] < marker["loss_first"]
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip}")
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert torch.equal(mine[k], theirs[k]), k
    cfg = json.loads((tiny_clip / CONFIG_FILE).read_text())
    assert cfg["model_cfg"] == TINY.model_cfg
    assert tuple(preprocess.transforms[-1].mean) == tuple(TINY.preprocess_cfg["mean"])
    tokens = open_clip.get_tokenizer(f"local-dir:{tiny_clip}")(["a sketch of a star"])
    with torch.no_grad():
        assert loaded.encode_text(tokens).shape == (1, TINY.model_cfg["embed_dim"])


def test_cache_is_reused_when_unchanged_and_rebuilt_when_the_recipe_changes(
        tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from safetensors.torch import load_file

    folder = tmp_path / "clip"
    folder.mkdir()
    for name in (WEIGHTS_FILE, CONFIG_FILE, RECIPE_FILE):
        (folder / name).write_bytes((tiny_clip / name).read_bytes())
    before = load_file(folder / WEIGHTS_FILE)

    def no_training(*args, **kwargs):
        raise AssertionError("an unchanged recipe must reuse the cached model")

    with monkeypatch.context() as m:
        m.setattr(pretrain_module, "pretrain", no_training)
        assert build_pretrained_clip(folder, seed=0, recipe=TINY) == folder
    changed = replace(TINY, steps=TINY.steps + 1)
    assert changed.key(0) != TINY.key(0) != TINY.key(1)
    build_pretrained_clip(folder, seed=0, recipe=changed)
    assert json.loads((folder / RECIPE_FILE).read_text())["key"] == changed.key(0)
    after = load_file(folder / WEIGHTS_FILE)
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_the_shipped_weights_match_the_committed_world(tmp_path: Path):
    """`make demo` uses the committed float16 weights only when their recipe key matches the committed
    renderer, corpus and pretraining code; a change to that code without `python -m
    precompute.demo_world.ship` would silently make every demo pretrain (4 more minutes) and give a
    different table than the README's."""
    from precompute.demo_world.ship import SHIPPED, install_shipped

    shipped = json.loads((SHIPPED / RECIPE_FILE).read_text())
    assert shipped["key"] == PretrainRecipe().key(0), \
        "the demo world's code changed after its weights were shipped: run python -m precompute.demo_world.ship"
    assert install_shipped(tmp_path / "clip", 0, PretrainRecipe())
    assert json.loads((tmp_path / "clip" / RECIPE_FILE).read_text())["key"] == shipped["key"]
