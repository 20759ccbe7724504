"""FLYP fine-tuning (vrf_core/flyp.py, finetune.mode = "flyp"): the loss, a training step, the head rebuilt from
the fine-tuned text tower, WSE over both towers, resume after a real kill, two-process DDP, config errors, and
a `precompute run` end to end."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import CLASSES, image_folder_tree, tiny_config, tiny_local_dir

from precompute.__main__ import main as cli
from precompute.config import ConfigError, load_config
from vrf_core.bundle import open_bundle
from vrf_core.data import image_folder
from vrf_core.filesafe import KILL_ENV
from vrf_core.flyp import (
    MAX_LOGIT_SCALE,
    ContrastiveObjective,
    contrastive_loss,
    flyp_classifier,
    interpolated_clip,
)
from vrf_core.models import ImageClassifier, load_clip, load_weights, save_weights
from vrf_core.zeroshot import zero_shot_head

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flyp")
    model_dir = tiny_local_dir(tmp / "model")
    folders = [c.replace(" ", "_") for c in CLASSES]
    train = image_folder("train", image_folder_tree(tmp / "train", 8, 0), CLASSES, folders)
    return tmp, model_dir, train


def plain_contrastive_loss(img, txt, scale, labels=None):
    """CLIP's loss written out sample by sample: -log of the softmax mass on each row's targets."""
    n = len(img)
    sim = [[scale * float(img[i] @ txt[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for rows in (sim, [list(col) for col in zip(*sim)]):  # image -> captions, caption -> images
        for i, row in enumerate(rows):
            log_norm = math.log(sum(math.exp(s) for s in row))
            targets = [j for j in range(n) if (labels[j] == labels[i] if labels is not None else j == i)]
            total += sum(log_norm - row[j] for j in targets) / len(targets) / n
    return total / 2


def test_loss_equals_a_plain_reimplementation():
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    scale = torch.tensor(7.5, dtype=torch.float64)
    assert contrastive_loss(img, txt, scale).item() == pytest.approx(plain_contrastive_loss(img, txt, 7.5), rel=1e-12)
    assert contrastive_loss(img, txt, scale, labels).item() == pytest.approx(
        plain_contrastive_loss(img, txt, 7.5, labels.tolist()), rel=1e-12)
    # Distinct classes: the class targets are the pair targets.
    distinct = torch.arange(6)
    assert contrastive_loss(img, txt, scale, distinct).item() == pytest.approx(contrastive_loss(img, txt, scale).item())


def test_a_training_step_lowers_the_loss_and_the_logit_scale_stays_clamped(tiny):
    _, model_dir, train = tiny
    clip = load_clip(f"local-dir:{model_dir}")
    objective = ContrastiveObjective(clip.model, clip.tokenizer, CLASSES, TEMPLATES)
    objective.begin_epoch(0, len(train))
    index = torch.arange(16)
    x = torch.stack([clip.preprocess_eval(train.load(int(i))) for i in index])
    y = torch.tensor(train.labels[:16])
    opt = torch.optim.AdamW(clip.model.parameters(), lr=1e-4)
    clip.model.train()
    before, _ = objective.loss(clip.model, x, y, index)
    before.backward()
    opt.step()
    objective.after_step()
    with torch.no_grad():
        after, _ = objective.loss(clip.model, x, y, index)
    assert after.item() < before.item()
    with torch.no_grad():
        clip.model.logit_scale.fill_(6.0)
    objective.after_step()
    assert clip.model.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    # Each sample's caption is its class name in the template drawn for it this epoch.
    captions = objective.captions(y, index)
    drawn = objective.template_of[index]
    expected = clip.tokenizer([TEMPLATES[t].format(CLASSES[c]) for c, t in zip(y.tolist(), drawn.tolist())])
    assert torch.equal(captions, expected) and len(set(drawn.tolist())) == 2


def test_wse_at_alpha_0_and_1_are_the_zero_shot_and_flyp_models(tiny):
    _, model_dir, train = tiny
    zs_clip = load_clip(f"local-dir:{model_dir}")
    ft_clip = load_clip(f"local-dir:{model_dir}")
    with torch.no_grad():  # a "fine-tuned" model that differs from zero-shot in both towers and the logit scale
        for p in ft_clip.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.stack([zs_clip.preprocess_eval(train.load(i)) for i in range(8)])

    def logits(clip_model):
        with torch.no_grad():
            return flyp_classifier(clip_model, zs_clip.tokenizer, CLASSES, TEMPLATES)(x)[1]

    zs = ImageClassifier(zs_clip.model.visual, zero_shot_head(zs_clip.model, zs_clip.tokenizer, CLASSES, TEMPLATES))
    with torch.no_grad():
        zs_logits = zs.eval()(x)[1]
    assert torch.equal(logits(interpolated_clip(zs_clip.model, ft_clip.model, 0.0)), zs_logits)
    assert torch.equal(logits(interpolated_clip(zs_clip.model, ft_clip.model, 1.0)), logits(ft_clip.model))
    half = interpolated_clip(zs_clip.model, ft_clip.model, 0.5)
    mean_scale = 0.5 * (zs_clip.model.logit_scale + ft_clip.model.logit_scale).item()
    assert half.logit_scale.item() == pytest.approx(mean_scale)
    assert not torch.allclose(logits(half), zs_logits) and not torch.allclose(logits(half), logits(ft_clip.model))


TRAIN_SCRIPT = """
import sys, json, torch
sys.path[:0] = [{root!r}, {tests!r}]
from tiny import CLASSES
from vrf_core.data import image_folder
from vrf_core.finetune import FinetuneConfig, finetune
from vrf_core.flyp import ContrastiveObjective
from vrf_core.models import load_clip
clip = load_clip("local-dir:{model}")
data = image_folder("t", {data!r}, CLASSES, [c.replace(" ", "_") for c in CLASSES])
objective = ContrastiveObjective(clip.model, clip.tokenizer, CLASSES, {templates!r})
cfg = FinetuneConfig(mode="flyp", epochs=3, batch_size=8, lr=1e-3, warmup_steps=2, workers=0)
train_transform = clip.preprocess_train if {augment} else clip.preprocess_eval
finetune(objective, data, data, train_transform, clip.preprocess_eval, cfg, {ckpt!r}, torch.device("cpu"))
"""


def train_script(tmp: Path, model_dir: Path, train, ckpt: Path, augment: bool) -> Path:
    script = tmp / f"train-{ckpt.name}.py"
    script.write_text(TRAIN_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), model=str(model_dir),
                                          data=train.root, templates=TEMPLATES, ckpt=str(ckpt), augment=augment))
    return script


def run_script(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def final_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_weights(ckpt / "final.safetensors")


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tiny):
    tmp, model_dir, train = tiny
    done = run_script([sys.executable, str(train_script(tmp, model_dir, train, tmp / "whole", True))])
    assert done.returncode == 0, done.stderr[-3000:]
    killed_script = train_script(tmp, model_dir, train, tmp / "killed", True)
    for point in ("finetune-step#6", "finetune-epoch#2"):  # inside epoch 2, then after its checkpoint
        killed = run_script([sys.executable, str(killed_script)], kill_at=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert not (tmp / "killed" / "final.safetensors").exists()
    resumed = run_script([sys.executable, str(killed_script)])
    assert resumed.returncode == 0 and "resuming fine-tuning" in resumed.stderr, resumed.stderr[-3000:]
    whole, again = final_weights(tmp / "whole"), final_weights(tmp / "killed")
    assert whole.keys() == again.keys() and any(k.startswith("transformer.") for k in whole)  # both towers
    assert [k for k in whole if not torch.equal(whole[k], again[k])] == []


GRADIENT_SCRIPT = """
import sys, torch
sys.path[:0] = [{root!r}, {tests!r}]
from safetensors.torch import save_file
from tiny import CLASSES
from vrf_core.data import image_folder
from vrf_core.distributed import init_distributed, is_main, rank, world_size
from vrf_core.flyp import ContrastiveObjective
from vrf_core.models import load_clip
distributed = init_distributed()
clip = load_clip("local-dir:{model}")
data = image_folder("t", {data!r}, CLASSES, [c.replace(" ", "_") for c in CLASSES])
objective = ContrastiveObjective(clip.model, clip.tokenizer, CLASSES, {templates!r})
objective.begin_epoch(0, len(data))
index = torch.arange(16).chunk(world_size())[rank()]  # this process's share of one global batch of 16
x = torch.stack([clip.preprocess_eval(data.load(int(i))) for i in index])
y = torch.as_tensor(data.labels)[index]
net = torch.nn.parallel.DistributedDataParallel(clip.model) if distributed else clip.model
loss, _ = objective.loss(net, x, y, index)
loss.backward()
if is_main():
    grads = {{k: p.grad for k, p in clip.model.named_parameters() if p.grad is not None}}
    save_file({{**grads, "loss": loss.detach().reshape(1)}}, {out!r})
"""


def test_two_process_ddp_equals_one_process_with_the_global_batch(tiny):
    """Features are gathered across processes, so the negatives are the global batch: one global batch split
    between two processes gives the loss and the (averaged) gradients of one process with the whole batch,
    the logit scale's included. A whole run then follows the same global batches (the DistributedSampler
    splits each between the processes) to the same weights up to float rounding, which Adam's normalised
    steps amplify where gradients are tiny. That run trains on the eval transform: random augmentation draws
    from each process's own random stream, so with it the processes would crop their images differently."""
    tmp, model_dir, train = tiny
    gradient_script = tmp / "gradients.py"
    args = dict(root=str(ROOT), tests=str(ROOT / "tests"), model=str(model_dir), data=train.root, templates=TEMPLATES)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547"]
    for name, launcher in (("one", [sys.executable]), ("two", torchrun)):
        gradient_script.write_text(GRADIENT_SCRIPT.format(**args, out=str(tmp / f"grads-{name}.safetensors")))
        done = run_script([*launcher, str(gradient_script)])
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = load_weights(tmp / "grads-one.safetensors"), load_weights(tmp / "grads-two.safetensors")
    assert one.keys() == two.keys() and "logit_scale" in one and len(one) == len(dict(
        load_clip(f"local-dir:{model_dir}").model.named_parameters())) + 1
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-7, msg=k)

    single = run_script([sys.executable, str(train_script(tmp, model_dir, train, tmp / "one", False))])
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_script([*torchrun, str(train_script(tmp, model_dir, train, tmp / "two", False))])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    weights, weights_ddp = final_weights(tmp / "one"), final_weights(tmp / "two")
    start = load_clip(f"local-dir:{model_dir}").model.state_dict()
    moved = max((weights[k] - start[k]).abs().max().item() for k in weights)
    worst = max((weights[k] - weights_ddp[k]).abs().max().item() for k in weights)
    assert worst < 0.05 * moved, (worst, moved)

    def epoch_losses(log: str) -> list[float]:
        return [float(line.split("train loss ")[1].split(",")[0]) for line in log.splitlines() if "train loss" in line]

    assert len(epoch_losses(single.stderr)) == 3
    assert epoch_losses(ddp.stderr)[:3] == pytest.approx(epoch_losses(single.stderr), abs=1e-3)


@pytest.mark.parametrize(("finetune", "message"), [
    ({"label_smoothing": 0.1}, 'finetune.label_smoothing = 0.1 does not apply to finetune.mode = "flyp"'),
    ({"batch_size": 1}, 'finetune.batch_size = 1 must be >= 2 with finetune.mode = "flyp"'),
    ({"flyp_targets": "classes"}, 'finetune.flyp_targets = "classes" is not one of class, pair; did you mean "class"?'),
    ({"mode": "flip"}, 'finetune.mode = "flip" is not one of e2e, lpft, flyp, none; did you mean "flyp"?'),
])
def test_config_errors_are_one_line(tiny, tmp_path, capsys, finetune, message):
    _, model_dir, _ = tiny
    config = tiny_config(tmp_path, model_dir, **{"mode": "flyp", **finetune})
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        load_config(config)
    capsys.readouterr()
    assert cli(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "bundle").exists()


def test_flyp_lr_default(tiny, tmp_path):
    _, model_dir, _ = tiny
    text = tiny_config(tmp_path, model_dir, mode="flyp").read_text().replace("lr = 0.001\n", "")
    (tmp_path / "run.toml").write_text(text)
    assert load_config(tmp_path / "run.toml").finetune.lr == 1e-5
    (tmp_path / "run.toml").write_text(text.replace('mode = "flyp"', 'mode = "e2e"'))
    assert load_config(tmp_path / "run.toml").finetune.lr == 3e-5


def test_precompute_run_with_flyp_end_to_end(tiny, tmp_path, capsys):
    """The bundle's fine-tuned logits are the fine-tuned checkpoint's image tower under the head rebuilt from its
    text tower; its WSE predictions at alpha 0.5 those of both towers interpolated, the head rebuilt from them."""
    _, model_dir, _ = tiny
    config = tiny_config(tmp_path, model_dir, mode="flyp")
    assert cli(["run", "--config", str(config)]) == 0
    bundle = open_bundle(tmp_path / "bundle", verify=True)
    ft_info = bundle.manifest["models"]["ft"]["finetune"]
    assert ft_info["settings"]["mode"] == "flyp" and ft_info["settings"]["lr"] == 1e-3
    assert len(ft_info["history"]) == 2

    zs_clip, ft_clip = load_clip(f"local-dir:{model_dir}"), load_clip(f"local-dir:{model_dir}")
    checkpoint = tmp_path / "bundle" / ft_info["checkpoint"]
    ft_clip.model.load_state_dict(load_weights(checkpoint))
    names = [c.replace(" ", "_") for c in CLASSES]
    test = image_folder("test", str(tmp_path / "data/test"), CLASSES, names)
    x = torch.stack([zs_clip.preprocess_eval(test.load(i)) for i in range(len(test))])
    with torch.no_grad():
        ft_logits = flyp_classifier(ft_clip.model, zs_clip.tokenizer, CLASSES, TEMPLATES)(x)[1].numpy()
        wse_logits = flyp_classifier(interpolated_clip(zs_clip.model, ft_clip.model, 0.5), zs_clip.tokenizer,
                                     CLASSES, TEMPLATES)(x)[1].numpy()
    position = {ref: i for i, ref in enumerate(test.refs)}
    order = [position[ref] for ref in np.asarray(bundle.array("test", "refs")).tolist()]  # bundle row -> ours
    assert np.asarray(bundle.array("test", "labels")).tolist() == test.labels[order].tolist()
    np.testing.assert_allclose(np.asarray(bundle.array("test", "logits_ft"), np.float32), ft_logits[order], atol=2e-3)
    assert bundle.wse_alphas == [0.0, 0.5, 1.0]
    preds_wse = np.asarray(bundle.array("test", "preds_wse"))
    assert (preds_wse[1] == wse_logits[order].argmax(1)).mean() >= 0.95
    # The fine-tuned checkpoint as finetune.checkpoint, in a new folder: no training, the same fine-tuned model.
    text = config.read_text().replace("[finetune]\n", f"[finetune]\ncheckpoint = {json.dumps(str(checkpoint))}\n")
    config.write_text(text.replace('out = "bundle"', 'out = "again"'))
    assert cli(["run", "--config", str(config)]) == 0
    again = open_bundle(tmp_path / "again", verify=True)
    assert again.manifest["models"]["ft"]["finetune"] == {"checkpoint": str(checkpoint)}
    np.testing.assert_array_equal(np.asarray(again.array("test", "logits_ft")),
                                  np.asarray(bundle.array("test", "logits_ft")))
    # An ImageClassifier state dict is not a FLYP checkpoint: one error line naming the file (when the model loads).
    classifier_file = tmp_path / "classifier.safetensors"
    save_weights(flyp_classifier(ft_clip.model, zs_clip.tokenizer, CLASSES, TEMPLATES), classifier_file)
    config.write_text(text.replace(str(checkpoint), str(classifier_file)))
    capsys.readouterr()
    assert cli(["run", "--config", str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "classifier.safetensors: not a fine-tuned checkpoint of this CLIP model" in errors[0]
