"""precompute's model stages: the zero-shot head (built from class names and templates, or the one a
WiSE-FT `zeroshot.pt` stores) and the fine-tuned model (E2E / LP-FT, or FLYP over both towers, or a given
checkpoint), each content-keyed so that a rerun reuses them."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from precompute.config import Config
from precompute.stage_cache import StageCache, content_key
from vrf_core.data import ImageSet
from vrf_core.distributed import barrier, is_main, world_size
from vrf_core.finetune import finetune
from vrf_core.flyp import ContrastiveObjective, interpolated_clip
from vrf_core.models import (
    ImageClassifier,
    ModelError,
    load_classifier_weights,
    load_clip_weights,
    load_weights,
    preprocess_description,
    state_dict_sha256,
)
from vrf_core.progress import log
from vrf_core.zeroshot import zero_shot_head


def zs_head(clip, classnames, templates, device, stages: StageCache) -> tuple[torch.Tensor, str]:
    if clip.zero_shot_head is not None:  # WiSE-FT's zeroshot.pt: the head it stores (its text tower is absent)
        if clip.zero_shot_head.shape[0] != len(classnames):
            raise ModelError(f"[model] pretrained: the file's zero-shot head has {clip.zero_shot_head.shape[0]} "
                             f"classes but [classes] names {len(classnames)}; give its class names, in its order")
        return clip.zero_shot_head, content_key("zs_head", clip.weights_sha256, "stored", classnames)
    key = content_key("zs_head", clip.weights_sha256, classnames, templates)

    def compute() -> dict[str, np.ndarray]:
        log(f"zero-shot head: {len(classnames)} classes x {len(templates)} templates")
        return {"head": zero_shot_head(clip.model, clip.tokenizer, classnames, templates, device).numpy()}

    if is_main():
        stages.get("zs_head", key, compute)
    barrier()
    return torch.from_numpy(np.array(stages.load("zs_head", key)["head"])), key


def finetuned(cfg: Config, zs: ImageClassifier, head_key: str, train: ImageSet, val: ImageSet, clip,
               device, out: Path, stages: StageCache) -> tuple[ImageClassifier, dict]:
    ft = copy.deepcopy(zs)
    if cfg.finetune.checkpoint:
        path = cfg.resolve(cfg.finetune.checkpoint)
        if not path.is_file():
            raise ModelError(f"finetune.checkpoint {path} does not exist; fix the path in [finetune]")
        load_classifier_weights(ft, path)
        return ft, {"checkpoint": str(path)}
    final, info = _trained(cfg, ft, head_key, train, val, clip, device, out, stages)
    ft.load_state_dict(load_weights(final))
    return ft, info


def _trained(cfg: Config, task, head_key: str, train: ImageSet, val: ImageSet, clip, device, out: Path,
             stages: StageCache) -> tuple[Path, dict]:
    """`finetune(task)` unless its content-keyed final checkpoint exists: (that checkpoint, the manifest's info)."""
    unused = ("checkpoint", "workers") + (() if cfg.finetune.mode == "flyp" else ("flyp_targets",))
    settings = {k: v for k, v in dataclasses.asdict(cfg.finetune).items() if k not in unused}
    key = content_key("finetune", head_key, train.fingerprint(), val.fingerprint(), settings,
                      preprocess_description(clip.preprocess_train), preprocess_description(clip.preprocess_eval),
                      world_size())
    ckpt_dir = out / "checkpoints" / f"ft-{key[:16]}"
    final = ckpt_dir / "final.safetensors"
    if final.is_file():
        log(f"fine-tuned weights up to date: {final}")
        stages.note("finetune", key, "reused")
    else:
        resuming = (ckpt_dir / "train_state.pt").is_file()
        log(f"fine-tuning ({cfg.finetune.mode}) on {len(train)} images, validating on {len(val)}")
        t0 = time.perf_counter()
        finetune(task, train, val, clip.preprocess_train, clip.preprocess_eval, cfg.finetune, ckpt_dir, device)
        stages.note("finetune", key, "resumed" if resuming else "computed", time.perf_counter() - t0)
    history = json.loads(_metadata(final).get("json", "{}")).get("history", [])
    return final, {"settings": settings, "checkpoint": str(final.relative_to(out)), "history": history}


def flyp_finetuned(cfg: Config, clip, head_key: str, classnames: list[str], templates: list[str], train: ImageSet,
                    val: ImageSet, device, out: Path, stages: StageCache):
    """FLYP (vrf_core/flyp.py): both towers fine-tuned (or `finetune.checkpoint`, a whole-CLIP state dict); the
    classifier's head rebuilt from the fine-tuned text tower. Returns (classifier, info, wse) where `wse(alpha)`
    is (classifier, content key) of both towers and the logit scale interpolated, its head rebuilt from them."""
    ft_clip = copy.deepcopy(clip.model)
    if cfg.finetune.checkpoint:
        info = {"checkpoint": str(cfg.resolve(cfg.finetune.checkpoint))}
        load_clip_weights(ft_clip, cfg.resolve(cfg.finetune.checkpoint))
    else:
        objective = ContrastiveObjective(ft_clip, clip.tokenizer, classnames, templates, cfg.finetune.flyp_targets)
        final, info = _trained(cfg, objective, head_key, train, val, clip, device, out, stages)
        ft_clip.load_state_dict(load_weights(final))
    # head_key covers the zero-shot weights, the class names and the templates the heads are built from
    ft_clip_key = content_key("flyp", head_key, state_dict_sha256(ft_clip.state_dict()))

    def classifier(model, key: str) -> ImageClassifier:
        own = dataclasses.replace(clip, model=model, weights_sha256=key, zero_shot_head=None)
        return ImageClassifier(model.visual, zs_head(own, classnames, templates, device, stages)[0]).to(device)

    def wse(alpha: float) -> tuple[ImageClassifier, str]:
        key = content_key("flyp-wse", ft_clip_key, alpha)
        return classifier(interpolated_clip(clip.model, ft_clip, alpha), key), key

    return classifier(ft_clip, ft_clip_key), info, wse


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}
