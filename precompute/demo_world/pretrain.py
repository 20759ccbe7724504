"""Contrastive (CLIP InfoNCE) pretraining of the demo's tiny open_clip model on the world's corpus.

The result is an open_clip "local-dir" folder (`open_clip_config.json` + `open_clip_model.safetensors`)
that `open_clip.create_model_and_transforms("local-dir:<folder>")` loads like any released CLIP.
A `demo_recipe.json` beside them records the content key of the recipe that made the weights, so
`build_pretrained_clip` retrains exactly when the recipe (or the code that renders the corpus) changes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from precompute.demo_world.corpus import CorpusSpec, make_corpus
from precompute.demo_world.digest import source_digest
from precompute.demo_world.render import IMAGE_SIZE
from vrf_core.bundle import atomic_write_bytes, atomic_write_json
from vrf_core.progress import log, progress

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
RECIPE_FILE = "demo_recipe.json"
# A small ModifiedResNet (CLIP RN50's design): its convolutions learn shapes several times faster per
# step than a ViT of the same cost. vocab_size stays at 49408: open_clip's default tokenizer emits ids up to it.
DEMO_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
DEMO_PREPROCESS_CFG = {"size": IMAGE_SIZE, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                       "interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines the pretrained weights besides the seed."""

    corpus: CorpusSpec = CorpusSpec()
    model_cfg: dict = field(default_factory=lambda: DEMO_MODEL_CFG)
    preprocess_cfg: dict = field(default_factory=lambda: DEMO_PREPROCESS_CFG)
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1

    def key(self, seed: int) -> str:
        """Content key: the recipe, the seed and the source of the modules that render and train."""
        code = source_digest("render.py", "corpus.py", "pretrain.py")
        return hashlib.sha256(json.dumps({"recipe": asdict(self), "seed": seed, "code": code},
                                         sort_keys=True).encode()).hexdigest()


def images_to_tensor(images: np.ndarray, preprocess_cfg: dict) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float normalised as open_clip's eval transform does at native size."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess_cfg["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def _lr_at(step: int, recipe: PretrainRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * t))


def pretrain(recipe: PretrainRecipe, seed: int) -> tuple[torch.nn.Module, list[float]]:
    """Render the corpus and train a fresh open_clip model on it. Returns the model and the per-step losses.

    Deterministic for a seed on a given machine and torch thread count (the corpus is rendered in one thread).
    """
    import open_clip

    log(f"rendering the pretraining corpus ({recipe.corpus.size} image-caption pairs)")
    images, captions = make_corpus(recipe.corpus, seed, recipe.model_cfg["vision_cfg"]["image_size"])
    tokenizer = open_clip.SimpleTokenizer(context_length=recipe.model_cfg["text_cfg"]["context_length"])
    # Tokenise each distinct caption once: captions repeat a lot.
    distinct, inverse = np.unique(np.asarray(captions), return_inverse=True)
    caption_ids = torch.from_numpy(inverse.reshape(-1))
    tokens = tokenizer(list(distinct))[caption_ids]

    torch.manual_seed(seed)
    model = open_clip.CLIP(**recipe.model_cfg)
    # The 49408-word embedding holds most parameters but the corpus uses ~100 words: sparse gradients
    # and SparseAdam update only those rows, which cuts the cost of a step on a CPU by about 40%.
    embedding = model.token_embedding
    embedding.sparse = True
    dense = [p for p in model.parameters() if p is not embedding.weight]
    opt = torch.optim.AdamW([{"params": [p for p in dense if p.ndim >= 2], "weight_decay": recipe.weight_decay},
                             {"params": [p for p in dense if p.ndim < 2], "weight_decay": 0.0}], lr=recipe.lr)
    opt_embedding = torch.optim.SparseAdam([embedding.weight], lr=recipe.lr)
    order = torch.Generator().manual_seed(seed)
    n, perm, pos, losses = len(images), torch.randperm(len(images), generator=order), 0, []
    model.train()
    bar = progress(range(recipe.steps), desc="pretrain demo CLIP")
    for step in bar:
        if pos + recipe.batch_size > n:
            perm, pos = torch.randperm(n, generator=order), 0
        idx = perm[pos:pos + recipe.batch_size]
        pos += recipe.batch_size
        for group in opt.param_groups + opt_embedding.param_groups:
            group["lr"] = _lr_at(step, recipe)
        x = images_to_tensor(images[idx.numpy()], recipe.preprocess_cfg)
        # Mirror half the batch: every class is mirror-symmetric as a class, and the corpus is seen many times.
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=order) < 0.5, x.flip(-1), x)
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        # Pairs with the same caption are positives too: plain InfoNCE would push apart the many
        # images that share a short caption such as "a sketch of a star".
        same = (caption_ids[idx][:, None] == caption_ids[idx][None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        opt_embedding.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dense, 1.0)
        opt.step()
        opt_embedding.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    embedding.sparse = False
    model.eval()
    return model, losses


def save_local_dir(model: torch.nn.Module, recipe: PretrainRecipe, out_dir: Path) -> None:
    """Write the open_clip local-dir pair (weights first, config second), each atomically."""
    from safetensors.torch import save

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out_dir / WEIGHTS_FILE, save(sd))
    atomic_write_json(out_dir / CONFIG_FILE, {"model_cfg": recipe.model_cfg, "preprocess_cfg": recipe.preprocess_cfg})


def build_pretrained_clip(out_dir: Path, seed: int = 0, recipe: PretrainRecipe | None = None) -> Path:
    """The demo CLIP as an open_clip local-dir folder: `out_dir` itself, pretrained unless it already holds
    a complete model made by the same recipe and seed. Load it with `local-dir:<returned path>`."""
    out_dir = Path(out_dir)
    recipe = recipe or PretrainRecipe()
    key = recipe.key(seed)
    marker = out_dir / RECIPE_FILE
    if marker.is_file() and (out_dir / WEIGHTS_FILE).is_file() and (out_dir / CONFIG_FILE).is_file():
        if json.loads(marker.read_text()).get("key") == key:
            log(f"demo CLIP: reusing {out_dir} (recipe {key[:12]})")
            return out_dir
    # The marker goes first and comes back last, so an interrupted run never looks complete.
    marker.unlink(missing_ok=True)
    model, losses = pretrain(recipe, seed)
    save_local_dir(model, recipe, out_dir)
    window = max(1, min(20, len(losses) // 4))
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    atomic_write_json(marker, {"key": key, "seed": seed, "recipe": asdict(recipe), "loss_first": first,
                               "loss_last": last})
    log(f"demo CLIP: pretrained into {out_dir}, loss {first:.3f} -> {last:.3f}")
    return out_dir
