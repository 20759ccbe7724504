"""open_clip models as image classifiers: loading, content hashes, saving.

`ImageClassifier` is the CLIP image encoder plus a linear head on L2-normalised
features; the zero-shot classifier and every fine-tuned or interpolated copy share
this one module type, so their state dicts interpolate key by key.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from vrf_core.filesafe import atomic_write_bytes


class ModelError(ValueError):
    """A model or checkpoint cannot be loaded; the message names the file and the fix."""


class ImageClassifier(nn.Module):
    """CLIP image encoder + head. forward(x) -> (normalised features (B, D), logits (B, C))."""

    def __init__(self, visual: nn.Module, head: torch.Tensor):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(head.shape[1], head.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(head)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = F.normalize(self.visual(images), dim=-1)
        return feats, self.head(feats)

    def add_head_bias(self) -> None:
        """A zero bias on the head (same logits): for fine-tuned checkpoints that trained one (WiSE-FT's
        fine-tuning does), and for the zero-shot model they are interpolated with."""
        if self.head.bias is None:
            w = self.head.weight
            self.head.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))


@dataclass
class LoadedCLIP:
    model: nn.Module            # the full open_clip model (image and text towers)
    preprocess_train: Callable
    preprocess_eval: Callable
    tokenizer: Callable
    name: str
    pretrained: str | None
    weights_sha256: str
    zero_shot_head: torch.Tensor | None = None  # (C, D), stored in the pretrained file (WiSE-FT's zeroshot.pt)


def is_checkpoint_path(pretrained: str | None) -> bool:
    return bool(pretrained) and (Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
                                 or Path(pretrained).is_file())


def weights_key(name: str, pretrained: str | None) -> str:
    """Content key of the base weights: file bytes for local checkpoints and local-dir models (of a
    local-dir's open_clip_config.json only `model_cfg`: its preprocessing is keyed where it is used), the
    (name, tag) pair for registry tags (their weights are immutable)."""
    h = hashlib.sha256()
    h.update(("local-dir" if name.startswith("local-dir:") else name).encode())  # a folder is its content
    if name.startswith("local-dir:"):
        folder = Path(name.split(":", 1)[1])
        for f in sorted(folder.glob("*")):
            if f.name == "open_clip_config.json":
                h.update(f.name.encode())
                h.update(json.dumps(json.loads(f.read_text()).get("model_cfg"), sort_keys=True).encode())
            elif f.is_file():
                h.update(f.name.encode())
                h.update(file_sha256(f).encode())
    if is_checkpoint_path(pretrained):
        h.update(file_sha256(Path(pretrained)).encode())
    else:
        h.update(str(pretrained).encode())
    return h.hexdigest()


def checkpoint_error(path: str | Path, exc: BaseException) -> ModelError:
    """The clear error for a checkpoint file that cannot be loaded safely."""
    if isinstance(exc, pickle.UnpicklingError):
        return ModelError(
            f"{path}: refused: the file holds pickled Python objects besides tensors, and loading it would run "
            "code from it (checkpoints are loaded with weights_only=True; WiSE-FT's pickled classifiers are read "
            "through an allow-list, and this is not one of them). Use a plain state dict (safetensors, or "
            "torch.save(model.state_dict()) where the model was trained)")
    return ModelError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {str(exc)[:300]}); "
                      "is the file complete and a torch or safetensors state dict?")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def load_clip(name: str, pretrained: str | None = None, device: torch.device | str = "cpu") -> LoadedCLIP:
    """Any open_clip model: `name` is an architecture ('ViT-B-16') or 'local-dir:/folder';
    `pretrained` a registry tag ('openai'), a checkpoint file (.pt/.bin/.pth state dict,
    loaded with weights_only=True, or .safetensors), a WiSE-FT ImageClassifier file (its image tower and
    zero-shot head; vrf_core/legacy_checkpoint.py), or None (random init / local-dir)."""
    import open_clip

    from vrf_core.legacy_checkpoint import is_wiseft_checkpoint  # imports this module

    if is_checkpoint_path(pretrained) and not Path(pretrained).is_file():
        raise ModelError(f"checkpoint {pretrained} does not exist; fix [model].pretrained in the config")
    if name.startswith("local-dir:") and not Path(name.split(":", 1)[1]).is_dir():
        raise ModelError(f"model folder {name.split(':', 1)[1]} does not exist; fix [model].name in the config")
    if name.startswith(("local-dir:", "hf-hub:")) and pretrained:
        raise ModelError(f"[model].pretrained = {pretrained!r} would be ignored: a {name.split(':')[0]!r} model "
                         "carries its own weights. Remove [model].pretrained, or name an architecture in [model].name")
    wiseft = is_checkpoint_path(pretrained) and is_wiseft_checkpoint(pretrained)
    try:
        model, pre_train, pre_eval = open_clip.create_model_and_transforms(
            name, pretrained=None if wiseft else pretrained or None, device=device, weights_only=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if any(m in text for m in ("size mismatch", "Missing key", "Unexpected key")):
            raise ModelError(f"checkpoint {pretrained} does not match model {name!r}: {text[:300].rstrip('.')}. "
                             "Check [model].name against the checkpoint's architecture") from exc
        if is_checkpoint_path(pretrained):
            raise checkpoint_error(pretrained, exc) from exc
        if pretrained:
            raise ModelError(
                f"cannot load open_clip model {name!r} with pretrained tag {pretrained!r}: {exc}. Offline? "
                "Download the weights once and set [model].pretrained to the local file") from exc
        raise
    head = load_wiseft_visual(model, pretrained, name) if wiseft else None
    tokenizer = open_clip.get_tokenizer(name)
    return LoadedCLIP(model, pre_train, pre_eval, tokenizer, name, pretrained, weights_key(name, pretrained), head)


def load_wiseft_visual(model: nn.Module, path: str | Path, name: str) -> torch.Tensor:
    """Load a WiSE-FT file's image tower into `model.visual`; returns the file's head weight (C, D)."""
    from vrf_core.legacy_checkpoint import load_wiseft_classifier  # imports this module

    visual, head = load_wiseft_classifier(path)
    mismatch = state_dict_mismatch(model.visual.state_dict(), visual)
    if mismatch:
        raise ModelError(f"{path}: its image tower does not match model {name!r} ({mismatch}). Check [model].name "
                         "against the checkpoint's architecture")
    model.visual.load_state_dict(visual)
    return head


def state_dict_mismatch(own: dict, sd: dict) -> str | None:
    """How `sd` fails to fit a model whose state dict is `own` (missing, unexpected, misshapen keys), or None."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape_bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shape_bad):
        return None
    return (f"{len(missing)} missing keys e.g. {missing[:2]}, {len(unexpected)} unexpected e.g. {unexpected[:2]}, "
            f"shape mismatches {shape_bad[:2]}")


def preprocess_description(preprocess: Callable) -> dict:
    """A JSON-able description of a torchvision transform pipeline (part of cache keys; memory addresses
    in the reprs of plain functions are dropped so the key is the same in every process)."""
    return {"transforms": [re.sub(r" at 0x[0-9a-fA-F]+", "", repr(t))
                           for t in getattr(preprocess, "transforms", [preprocess])]}


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
        h.update(k.encode())
        h.update(f"{t.dtype}{tuple(sd[k].shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(module_or_sd: nn.Module | dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors, written atomically."""
    sd = module_or_sd.state_dict() if isinstance(module_or_sd, nn.Module) else module_or_sd
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    meta = {"json": json.dumps(metadata)} if metadata else None
    atomic_write_bytes(Path(path), save(sd, metadata=meta))


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file, never unpickling objects (weights_only=True); a WiSE-FT
    ImageClassifier file becomes a state dict of ImageClassifier (vrf_core/legacy_checkpoint.py)."""
    from vrf_core.legacy_checkpoint import classifier_state_dict, is_wiseft_checkpoint  # imports this module

    path = Path(path)
    if path.suffix != ".safetensors" and is_wiseft_checkpoint(path):
        return {k: v.to(device) for k, v in classifier_state_dict(path).items()}
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device=str(device))
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise checkpoint_error(path, exc) from exc


def load_classifier_weights(classifier: ImageClassifier, path: Path) -> None:
    """Load an ImageClassifier state dict (safetensors or weights-only torch file), with a clear
    error when it does not match the model."""
    sd = load_weights(path)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"{path}: holds a {type(sd).__name__}, not a state dict of vrf_core.models.ImageClassifier")
    if "head.bias" in sd:
        classifier.add_head_bias()
    mismatch = state_dict_mismatch(classifier.state_dict(), sd)
    if mismatch:
        raise ModelError(f"{path}: not a fine-tuned checkpoint of this model ({mismatch}). It must be a state dict "
                         "of vrf_core.models.ImageClassifier for the configured [model]")
    classifier.load_state_dict(sd)



def load_clip_weights(model: nn.Module, path: Path) -> None:
    """Load a whole open_clip model's state dict (both towers, e.g. a FLYP checkpoint) into `model`, with a
    clear error when it does not match."""
    sd = load_weights(path)
    if not isinstance(sd, dict):
        raise ModelError(f"{path}: holds a {type(sd).__name__}, not a state dict of the open_clip model")
    mismatch = state_dict_mismatch(model.state_dict(), sd)
    if mismatch:
        raise ModelError(f"{path}: not a fine-tuned checkpoint of this CLIP model ({mismatch}). With finetune.mode "
                         "= \"flyp\" it must be a state dict of the whole open_clip model (image and text towers) "
                         "for the configured [model]")
    model.load_state_dict(sd)
