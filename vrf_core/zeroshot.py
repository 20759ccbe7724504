"""The zero-shot head: class names x prompt templates -> a linear classifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

TEMPLATE_SETS = ("openai_imagenet", "simple_imagenet")


def read_template_file(path: Path) -> list[str]:
    """One template per non-empty line."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_templates(spec: str | Sequence[str], base: Path | None = None) -> list[str]:
    """'openai_imagenet' (the 80 OpenAI templates), 'simple_imagenet', a text file with one
    template per line, or a list. Every template must contain '{}'."""
    import open_clip

    if isinstance(spec, str):
        if spec == "openai_imagenet":
            out = [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES]
        elif spec == "simple_imagenet":
            out = [t("{}") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES]
        else:
            path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
            if not path.is_file():
                raise ValueError(f"templates: {spec!r} is neither {TEMPLATE_SETS} nor an existing file")
            out = read_template_file(path)
    else:
        out = list(spec)
    bad = [t for t in out if "{}" not in t]
    if not out or bad:
        raise ValueError(f"templates: every template needs a '{{}}' for the class name; bad: {bad[:3]}")
    return out


@torch.no_grad()
def zero_shot_head(model: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """(C, D) head: per class, the mean of the L2-normalised text embeddings of the class name in
    every template, renormalised, times the logit scale exp(t) (WiSE-FT convention: logits of
    this head on normalised image features are CLIP's usual logits)."""
    import open_clip

    weights = open_clip.build_zero_shot_classifier(
        model, tokenizer=tokenizer, classnames=list(classnames), templates=list(templates),
        num_classes_per_batch=10, device=device)  # (D, C), unit-norm columns, no logit scale
    return (model.logit_scale.exp() * weights.T).float().cpu()
