"""FLYP, "Finetune like you pretrain" (Goyal et al., CVPR 2023): fine-tune both CLIP towers with CLIP's
contrastive loss on (image, caption) pairs, where an image's caption is a prompt template, drawn per sample
and epoch, filled with its class name; the classifier's head is then rebuilt from the fine-tuned text tower
exactly as the zero-shot head is built (vrf_core/zeroshot.py).

Same-class pairs in a batch. FLYP's released code scores each image against its own caption only (the
diagonal, `targets = "pair"`): another image's caption of the same class, often the very same sentence, is
then a negative. With few classes per batch that is most of the batch, so the default (`targets = "class"`)
makes every same-class caption a target, with equal weight (soft cross-entropy targets); a batch of distinct
classes gives the same loss either way. The logit scale is learned as in CLIP pretraining: no weight decay
(it is 0-dimensional; vrf_core/finetune.py decays only matrices) and clamped to at most 100 after each step.

Under torchrun each process encodes its share of the batch and the features are gathered, so the negatives
are the whole global batch and the loss (and its gradient) is that of one process with the global batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vrf_core.distributed import gather_rows
from vrf_core.models import ImageClassifier
from vrf_core.wse import interpolate_state_dicts
from vrf_core.zeroshot import zero_shot_head

FLYP_LR = 1e-5                    # FLYP's ImageNet recipe (E2E's is 3e-5)
TARGETS = ("class", "pair")
MAX_LOGIT_SCALE = math.log(100)   # CLIP pretraining's clamp of the learned temperature


def caption_ids(tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(C, T, context) token ids of every class name in every template, tokenised once."""
    captions = [t.format(c) for c in classnames for t in templates]
    ids = tokenizer(captions)
    return ids.reshape(len(classnames), len(templates), -1)


def draw_templates(n_samples: int, n_templates: int, seed: int) -> torch.Tensor:
    """(n_samples,) template index of each training sample for one epoch: a function of (seed, sample index)
    only, so a resumed run and a run over any number of processes caption every sample alike."""
    return torch.randint(n_templates, (n_samples,), generator=torch.Generator().manual_seed(seed))


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over one batch of pairs.

    image_features, text_features: (B, D), L2-normalised; logit_scale: exp(t), a scalar. labels: (B,) class
    of each pair; given, every pair of the same class is a target (uniform soft targets per row), otherwise
    only the pair itself (the diagonal)."""
    logits = logit_scale * image_features @ text_features.T  # (B, B): image i against caption j
    if labels is None:
        targets = torch.arange(len(logits), device=logits.device)
    else:
        same = (labels[:, None] == labels[None, :]).to(logits.dtype)
        targets = same / same.sum(1, keepdim=True)  # symmetric: the text-to-image targets are the same
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def flyp_classifier(clip_model: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                    device: torch.device | str = "cpu") -> ImageClassifier:
    """The image tower with the head rebuilt from the model's own text tower (shares `clip_model.visual`)."""
    clip_model.eval()
    return ImageClassifier(clip_model.visual, zero_shot_head(clip_model, tokenizer, classnames, templates,
                                                             device).to(device))


def _encode(net: nn.Module, images: torch.Tensor, texts: torch.Tensor):
    """open_clip's CLIP.forward (through DDP when distributed): normalised features and exp(logit scale)."""
    out = net(images, texts)
    if isinstance(out, dict):
        return out["image_features"], out["text_features"], out["logit_scale"]
    return out[0], out[1], out[2]


class ContrastiveObjective:
    """FLYP as a training objective of vrf_core.finetune.finetune: it trains and checkpoints `module`, the
    whole open_clip model (both towers and the logit scale)."""

    def __init__(self, clip_model: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                 targets: str = "class"):
        if targets not in TARGETS:
            raise ValueError(f"FLYP targets must be one of {TARGETS}, got {targets!r}")
        if getattr(clip_model, "logit_bias", None) is not None:
            raise ValueError("FLYP fine-tunes with CLIP's softmax contrastive loss; this model has a logit bias "
                             "(a SigLIP-style sigmoid loss), which this objective does not train")
        self.module, self.tokenizer = clip_model, tokenizer
        self.classnames, self.templates, self.targets = list(classnames), list(templates), targets
        self.ids = caption_ids(tokenizer, classnames, templates)
        self.template_of = torch.zeros(0, dtype=torch.long)

    def begin_epoch(self, seed: int, n_samples: int) -> None:
        self.template_of = draw_templates(n_samples, len(self.templates), seed)

    def captions(self, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, context) token ids of the samples' captions this epoch."""
        return self.ids[labels.cpu(), self.template_of[index.cpu()]]

    def loss(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             index: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(the global batch's contrastive loss, the share of its images whose best caption names their class)."""
        img, txt, scale = _encode(net, images, self.captions(labels, index).to(images.device))
        img, txt, labels = gather_rows(img.float()), gather_rows(txt.float()), gather_rows(labels)
        with torch.autocast(images.device.type, enabled=False):  # (B, B) logits up to 100: float32
            loss = contrastive_loss(img, txt, scale.float(), labels if self.targets == "class" else None)
        with torch.no_grad():
            acc = (labels[(img @ txt.T).argmax(1)] == labels).float().mean().item()
        return loss, acc

    @torch.no_grad()
    def after_step(self) -> None:
        self.module.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def classifier(self) -> ImageClassifier:
        device = next(self.module.parameters()).device
        return flyp_classifier(self.module, self.tokenizer, self.classnames, self.templates, device)


def interpolated_clip(zs_clip: nn.Module, ft_clip: nn.Module, alpha: float) -> nn.Module:
    """WSE over both towers and the logit scale: a copy of the model with (1 - alpha) * zs + alpha * ft."""
    model = copy.deepcopy(ft_clip)
    model.load_state_dict(interpolate_state_dicts(zs_clip.state_dict(), ft_clip.state_dict(), alpha))
    return model
