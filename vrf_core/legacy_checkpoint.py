"""WiSE-FT's released checkpoints (zeroshot.pt, finetuned.pt: whole pickled `ImageClassifier` modules) as
tensors for vrf_core.models.ImageClassifier; the file is read by vrf_core/torch_pickle.py, which runs nothing
from it."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vrf_core.models import ModelError, save_weights
from vrf_core.torch_pickle import WISEFT_MODULE, module_state_dict, read_module_tree


@dataclass
class WiseftCheckpoint:
    visual: dict[str, torch.Tensor]   # the CLIP image tower, open_clip's `visual.*` names without the prefix
    head_weight: torch.Tensor         # (C, D): zero-shot weights x logit scale, or fine-tuned
    head_bias: torch.Tensor           # (C,): zeros for a zero-shot head
    normalize: bool                   # the head L2-normalises its input features


def read_wiseft(path: str | Path) -> WiseftCheckpoint:
    """A WiSE-FT ImageClassifier file as tensors (float ones as float32)."""
    tree = read_module_tree(path)
    if getattr(tree, "origin", None) != f"{WISEFT_MODULE}.ImageClassifier":
        raise ModelError(f"{path}: holds a {getattr(tree, 'origin', type(tree).__name__)}, not WiSE-FT's "
                         f"{WISEFT_MODULE}.ImageClassifier")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in module_state_dict(tree).items()}
    tower = "image_encoder.model.visual."
    visual = {k.removeprefix(tower): v for k, v in sd.items() if k.startswith(tower)}
    head = tree.state.get("_modules", {}).get("classification_head")
    if not visual or "classification_head.weight" not in sd:
        raise ModelError(f"{path}: a WiSE-FT ImageClassifier without image_encoder.model.visual or "
                         "classification_head.weight")
    weight = sd["classification_head.weight"]
    bias = sd.get("classification_head.bias", torch.zeros(weight.shape[0]))
    return WiseftCheckpoint(visual, weight, bias, bool(getattr(head, "state", {}).get("normalize", True)))


def _normalising(path: str | Path) -> WiseftCheckpoint:
    ckpt = read_wiseft(path)
    if not ckpt.normalize:
        raise ModelError(f"{path}: its head does not normalise features, unlike vrf_core.models.ImageClassifier")
    return ckpt


def load_wiseft_classifier(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(visual state dict, head weight (C, D)) of a WiSE-FT zero-shot file: a zero-shot head is a bare
    (C, D) matrix, so a non-zero bias (a fine-tuned file given as [model] pretrained) is refused."""
    ckpt = _normalising(path)
    if ckpt.head_bias.abs().max().item() > 0:
        raise ModelError(f"{path}: its head has a non-zero bias (max |b| = {ckpt.head_bias.abs().max().item():.3g}): "
                         "a fine-tuned file, not a zero-shot one; give it as [finetune] checkpoint")
    return ckpt.visual, ckpt.head_weight


def classifier_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A WiSE-FT file as a state dict of vrf_core.models.ImageClassifier (`visual.*`, `head.weight`, and
    `head.bias` when WiSE-FT's fine-tuning trained one)."""
    ckpt = _normalising(path)
    sd = {**{f"visual.{k}": v for k, v in ckpt.visual.items()}, "head.weight": ckpt.head_weight}
    if ckpt.head_bias.abs().max().item() > 0:
        sd["head.bias"] = ckpt.head_bias
    return sd


def is_wiseft_checkpoint(path: str | Path) -> bool:
    """A zip whose data.pkl, or a plain pickle whose first bytes, name WiSE-FT's module (read, never unpickled)."""
    path, marker = Path(path), WISEFT_MODULE.encode()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
                return len(pickles) == 1 and marker in archive.open(pickles[0]).read(1 << 16)
        with path.open("rb") as file:
            head = file.read(1 << 12)
        return head.startswith(b"\x80") and marker in head
    except (OSError, zipfile.BadZipFile):
        return False


def convert_to_safetensors(src: str | Path, dst: str | Path) -> dict[str, torch.Tensor]:
    """Write a WiSE-FT file as a safetensors state dict of vrf_core.models.ImageClassifier; returns it."""
    sd = classifier_state_dict(src)
    save_weights(sd, Path(dst), {"converted_from": Path(src).name, "format": "wiseft"})
    return sd
