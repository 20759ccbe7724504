"""open_clip loading, the zero-shot head, fine-tuning with resume, extraction under torchrun."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from tiny import CLASSES, image_folder_tree, tiny_local_dir

from vrf_core.data import image_folder
from vrf_core.extract import extract
from vrf_core.finetune import FinetuneConfig, finetune
from vrf_core.models import ImageClassifier, ModelError, load_classifier_weights, load_clip, save_weights
from vrf_core.zeroshot import resolve_templates, zero_shot_head

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    model_dir = tiny_local_dir(tmp / "model")
    train = image_folder(
        "train", image_folder_tree(tmp / "train", 12, 0), CLASSES, [c.replace(" ", "_") for c in CLASSES]
    )
    return tmp, model_dir, train


def test_checkpoint_file_round_trip(tiny, tmp_path):
    """A state dict saved to a file loads back through `pretrained=<path>` with identical weights."""
    _, model_dir, _ = tiny
    clip = load_clip(f"local-dir:{model_dir}")
    path = tmp_path / "weights.safetensors"
    save_weights(clip.model, path)
    arch = tmp_path / "tinyarch.json"
    arch.write_text(json.dumps(json.loads((model_dir / "open_clip_config.json").read_text())["model_cfg"]))
    open_clip.add_model_config(arch)
    loaded = load_clip("tinyarch", str(path))
    for k, v in clip.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert loaded.weights_sha256 != load_clip("tinyarch", None).weights_sha256
    with pytest.raises(ModelError, match="does not exist"):
        load_clip("tinyarch", str(tmp_path / "missing.pt"))


def test_zero_shot_head_is_normalised_and_scaled(tiny):
    _, model_dir, _ = tiny
    clip = load_clip(f"local-dir:{model_dir}")
    templates = resolve_templates(["a photo of a {}.", "art of a {}."])
    head = zero_shot_head(clip.model, clip.tokenizer, CLASSES, templates)
    assert head.shape == (len(CLASSES), 32)
    norms = head.norm(dim=1)
    assert torch.allclose(norms, clip.model.logit_scale.exp().detach().expand_as(norms), rtol=1e-5)
    assert len(resolve_templates("openai_imagenet")) == 80
    with pytest.raises(ValueError, match="'{}'"):
        resolve_templates(["no placeholder"])


def _classifier(model_dir):
    clip = load_clip(f"local-dir:{model_dir}")
    head = zero_shot_head(clip.model, clip.tokenizer, CLASSES, ["a photo of a {}."])
    return clip, ImageClassifier(clip.model.visual, head)


def test_finetuning_reduces_loss_and_resumes_exactly(tiny, tmp_path):
    _, model_dir, train = tiny
    clip, model = _classifier(model_dir)
    start = copy.deepcopy(model.state_dict())
    cfg = FinetuneConfig(epochs=3, batch_size=16, lr=1e-3, warmup_steps=1, workers=0)
    hist = finetune(
        model, train, None, clip.preprocess_train, clip.preprocess_eval, cfg, tmp_path / "a", torch.device("cpu")
    )
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]

    # Interrupt a second run during its last epoch, then resume: the result equals the uninterrupted run.
    model.load_state_dict(start)
    calls = {"n": 0}
    original = train.load_fn

    def flaky(i):
        calls["n"] += 1
        if calls["n"] > 2 * len(train) - len(train) % 16 + 5:
            raise RuntimeError("simulated crash")
        return original(i)

    train.load_fn = flaky
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(
            model, train, None, clip.preprocess_train, clip.preprocess_eval, cfg, tmp_path / "b", torch.device("cpu")
        )
    train.load_fn = original
    assert (tmp_path / "b" / "train_state.pt").is_file() and not (tmp_path / "b" / "final.safetensors").exists()
    fresh = _classifier(model_dir)[1]
    finetune(fresh, train, None, clip.preprocess_train, clip.preprocess_eval, cfg, tmp_path / "b", torch.device("cpu"))
    done = _classifier(model_dir)[1]
    load_classifier_weights(done, tmp_path / "a" / "final.safetensors")
    for k, v in done.state_dict().items():
        assert torch.allclose(v, fresh.state_dict()[k], atol=1e-6), k


def test_lpft_keeps_the_encoder_in_the_linear_probe_phase(tiny, tmp_path):
    _, model_dir, train = tiny
    clip, model = _classifier(model_dir)
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    cfg = FinetuneConfig(
        mode="lpft", lp_epochs=1, epochs=0, batch_size=16, lr=1e-3, lp_lr=1e-2, workers=0, warmup_steps=1
    )
    finetune(model, train, None, clip.preprocess_train, clip.preprocess_eval, cfg, tmp_path, torch.device("cpu"))
    assert all(torch.equal(v, model.visual.state_dict()[k]) for k, v in before.items())


def test_wrong_checkpoint_is_a_clear_error(tiny, tmp_path):
    _, model_dir, _ = tiny
    _, model = _classifier(model_dir)
    save_weights({"head.weight": torch.zeros(3, 3)}, tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match="not a fine-tuned checkpoint of this model"):
        load_classifier_weights(model, tmp_path / "bad.safetensors")


TORCHRUN_SCRIPT = """
import sys, numpy as np, torch
sys.path[:0] = [{root!r}, {tests!r}]
from pathlib import Path
from tiny import CLASSES
from vrf_core.data import image_folder
from vrf_core.distributed import init_distributed, is_main
from vrf_core.extract import extract
from vrf_core.models import ImageClassifier, load_clip
init_distributed()
clip = load_clip("local-dir:{model}")
torch.manual_seed(0)
m = ImageClassifier(clip.model.visual, torch.randn(4, 32))
data = image_folder("t", {data!r}, CLASSES, [c.replace(" ", "_") for c in CLASSES])
out = extract({{"zs": m}}, data, clip.preprocess_eval, features_of=("zs",), batch_size=7, workers=0,
              thumb_size=16, shard_dir=Path({shards!r}))
if is_main():
    np.savez({out!r}, feats=out["features_zs"], logits=out["logits_zs"], labels=out["labels"],
             thumbs=np.array([len(t) for t in out["thumbs"]]))
"""


def test_extraction_with_torchrun_equals_one_process(tiny, tmp_path):
    _, model_dir, train = tiny
    script = tmp_path / "ddp.py"
    script.write_text(
        TORCHRUN_SCRIPT.format(
            root=str(ROOT),
            tests=str(ROOT / "tests"),
            model=model_dir,
            data=train.root,
            shards=str(tmp_path / "shards"),
            out=str(tmp_path / "ddp.npz"),
        )
    )
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(script)],
        check=True,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    clip = load_clip(f"local-dir:{model_dir}")
    torch.manual_seed(0)
    m = ImageClassifier(clip.model.visual, torch.randn(4, 32))
    single = extract(
        {"zs": m}, train, clip.preprocess_eval, features_of=("zs",), batch_size=5, workers=0, thumb_size=16
    )
    ddp = np.load(tmp_path / "ddp.npz")
    assert ddp["labels"].tolist() == single["labels"].tolist()
    np.testing.assert_allclose(ddp["feats"].astype(np.float32), single["features_zs"].astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(ddp["logits"], single["logits_zs"], atol=1e-4)
    assert ddp["thumbs"].tolist() == [len(t) for t in single["thumbs"]]
