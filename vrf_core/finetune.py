"""End-to-end fine-tuning and LP-FT of an ImageClassifier (the WiSE-FT recipe), and FLYP.

AdamW, cosine schedule with linear warm-up, gradient clipping, optional label
smoothing, head initialised from the zero-shot head. A checkpoint is written at
the end of every epoch and training resumes from the last one. Runs on CPU, one
GPU, or several processes under torchrun (DistributedDataParallel).

The loop trains an objective: cross-entropy of an ImageClassifier (e2e, lpft; `CrossEntropyObjective`)
or FLYP's contrastive loss over both CLIP towers (flyp; vrf_core/flyp.py). An objective has `module` (what
is trained and checkpointed), `begin_epoch(seed, n)`, `loss(net, x, y, index) -> (loss, batch accuracy)`,
`after_step()` and `classifier()` (the ImageClassifier to validate).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vrf_core.data import ImageSet
from vrf_core.devices import autocast
from vrf_core.distributed import all_reduce_sum, barrier, init_distributed, is_main, rank, shard, world_size
from vrf_core.filesafe import atomic_write_bytes, kill_point
from vrf_core.flyp import FLYP_LR
from vrf_core.models import ImageClassifier, ModelError, checkpoint_error, load_weights, save_weights
from vrf_core.progress import log, progress


@dataclass
class FinetuneConfig:
    mode: str = "e2e"            # e2e | lpft | flyp
    epochs: int = 10
    batch_size: int = 512        # global batch, split across processes
    lr: float | None = None      # None: 3e-5 (e2e, lpft), FLYP_LR = 1e-5 (flyp)
    weight_decay: float = 0.1
    warmup_steps: int = 500
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    lp_epochs: int = 5           # LP-FT: linear-probe epochs before full fine-tuning
    lp_lr: float = 1e-3
    workers: int = 4
    seed: int = 0
    precision: str = "auto"
    max_steps_per_epoch: int = 0  # 0 = full epochs (a cap is for smoke tests)
    flyp_targets: str = "class"  # flyp: same-class captions are targets ("class") or only its own ("pair")

    def __post_init__(self):
        if self.lr is None:
            self.lr = FLYP_LR if self.mode == "flyp" else 3e-5


class CrossEntropyObjective:
    """E2E and LP-FT: (label-smoothed) cross-entropy of the classifier's logits."""

    def __init__(self, model: ImageClassifier, label_smoothing: float = 0.0):
        self.module, self.label_smoothing = model, label_smoothing

    def begin_epoch(self, seed: int, n_samples: int) -> None:
        pass

    def loss(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             index: torch.Tensor) -> tuple[torch.Tensor, float]:
        _, logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return loss, (logits.argmax(1) == y).float().mean().item()

    def after_step(self) -> None:
        pass

    def classifier(self) -> ImageClassifier:
        return self.module


class TorchImages(Dataset):
    def __init__(self, images: ImageSet, transform: Callable):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images.load(i)), int(self.images.labels[i]), i


def cosine_lr(step: int, total: int, base_lr: float, warmup: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress_)))


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, images: ImageSet, transform: Callable, batch_size: int,
                      workers: int, device: torch.device, precision: str = "auto") -> float:
    """Accuracy over `images`, each process taking a shard and the counts summed."""
    model.eval()
    part = images.subset(list(shard(len(images))))
    loader = DataLoader(TorchImages(part, transform), batch_size=batch_size, num_workers=workers)
    correct = total = 0
    for x, y, _ in loader:
        with autocast(device, precision):
            _, logits = model(x.to(device))
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    correct, total = all_reduce_sum([correct, total], device)
    return correct / max(total, 1)


def _phases(cfg: FinetuneConfig) -> list[tuple[str, int, float]]:
    if cfg.mode in ("e2e", "flyp"):
        return [("ft", cfg.epochs, cfg.lr)]
    if cfg.mode == "lpft":
        return [("lp", cfg.lp_epochs, cfg.lp_lr), ("ft", cfg.epochs, cfg.lr)]
    raise ValueError(f"finetune.mode must be 'e2e', 'lpft' or 'flyp', got {cfg.mode!r}")


def _save_state(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, phase: int, epoch: int,
                history: list) -> None:
    """Weights first, then the state that names them: a crash between the two leaves the
    previous, consistent pair."""
    weights = ckpt_dir / f"model-p{phase}-e{epoch}.safetensors"
    save_weights(model, weights)
    buf = io.BytesIO()
    torch.save({"phase": phase, "epoch": epoch, "weights": weights.name, "optimizer": opt.state_dict(),
                "history": history}, buf)
    atomic_write_bytes(ckpt_dir / "train_state.pt", buf.getvalue())
    for old in ckpt_dir.glob("model-p*-e*.safetensors"):
        if old.name != weights.name:
            old.unlink(missing_ok=True)


def finetune(task, train: ImageSet, val: ImageSet | None, preprocess_train: Callable,
             preprocess_eval: Callable, cfg: FinetuneConfig, ckpt_dir: Path, device: torch.device) -> list[dict]:
    """Fine-tune in place: `task` is an ImageClassifier (e2e, lpft) or an objective (flyp:
    vrf_core.flyp.ContrastiveObjective). Writes the trained module's weights to `ckpt_dir/final.safetensors`
    and returns the per-epoch history.

    Resumes from `ckpt_dir/train_state.pt` when present (the same config is assumed: the
    pipeline keys `ckpt_dir` by the config's content)."""
    if isinstance(task, torch.nn.Module):
        if cfg.mode == "flyp":
            raise ValueError("finetune.mode = 'flyp' trains both CLIP towers: pass vrf_core.flyp.ContrastiveObjective")
        task = CrossEntropyObjective(task, cfg.label_smoothing)
    objective, model = task, task.module
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    distributed = init_distributed()
    model.to(device)
    state = None
    if (ckpt_dir / "train_state.pt").is_file():
        try:
            state = torch.load(ckpt_dir / "train_state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise checkpoint_error(ckpt_dir / "train_state.pt", exc) from exc
        model.load_state_dict(load_weights(ckpt_dir / state["weights"], device))
        log(f"resuming fine-tuning from {ckpt_dir} (phase {state['phase']}, epoch {state['epoch'] + 1} done)")
    history = state["history"] if state else []
    per_rank_batch = max(1, cfg.batch_size // world_size())
    dataset = TorchImages(train, preprocess_train)
    sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    # Workers are recreated every epoch, seeded from that epoch's seed: persistent workers would carry
    # their random state across epochs, and a resumed run would augment differently.
    loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True)
    steps_per_epoch = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"training set of {len(train)} samples is smaller than one batch of {cfg.batch_size}")

    for p_idx, (phase, epochs, lr) in enumerate(_phases(cfg)):
        if state and p_idx < state["phase"]:
            continue
        for p in model.visual.parameters():
            p.requires_grad_(phase == "ft")
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        start_epoch = 0
        if state and p_idx == state["phase"]:
            opt.load_state_dict(state["optimizer"])
            start_epoch = state["epoch"] + 1
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None) if distributed else model
        total = epochs * steps_per_epoch
        for epoch in range(start_epoch, epochs):
            net.train()
            # Seeded per epoch (data order and augmentation), so a resumed run equals an uninterrupted one.
            epoch_seed = cfg.seed * 100_003 + 1000 * p_idx + epoch
            torch.manual_seed(epoch_seed)
            objective.begin_epoch(epoch_seed, len(train))
            sampler.set_epoch(epoch + 1000 * p_idx)
            bar = progress(loader, desc=f"{phase} epoch {epoch + 1}/{epochs}", total=steps_per_epoch)
            run_loss = run_acc = 0.0
            for i, (x, y, index) in enumerate(bar):
                if i >= steps_per_epoch:
                    break
                step = epoch * steps_per_epoch + i
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(step, total, lr, cfg.warmup_steps)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast(device, cfg.precision):
                    loss, acc = objective.loss(net, x, y, index)
                if not torch.isfinite(loss):
                    raise ModelError(
                        f"fine-tuning diverged: loss {loss.item()} at {phase} epoch {epoch + 1}, step {i + 1}. "
                        f"Lower finetune.lr (now {lr}) or set precision = \"fp32\"; the last good epoch's "
                        f"checkpoint in {ckpt_dir} is kept, delete the folder to start over")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                objective.after_step()
                run_loss = 0.9 * run_loss + 0.1 * loss.item() if i else loss.item()
                run_acc = 0.9 * run_acc + 0.1 * acc if i else acc
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
                kill_point("finetune-step")
            val_acc = evaluate_accuracy(objective.classifier(), val, preprocess_eval, per_rank_batch, cfg.workers,
                                        device, cfg.precision) if val is not None else float("nan")
            history.append({"phase": phase, "epoch": epoch + 1, "train_loss": run_loss, "train_acc": run_acc,
                            "val_acc": val_acc})
            log(f"{phase} epoch {epoch + 1}/{epochs}: train loss {run_loss:.4f}, train acc {run_acc:.4f}, "
                f"val acc {val_acc:.4f}")
            if is_main():
                _save_state(ckpt_dir, model, opt, p_idx, epoch, history)
                kill_point("finetune-epoch")
            barrier()
        state = None
    if is_main():
        save_weights(model, ckpt_dir / "final.safetensors", {"history": history, "config": asdict(cfg)})
        for resume_file in [ckpt_dir / "train_state.pt", *ckpt_dir.glob("model-p*-e*.safetensors")]:
            resume_file.unlink(missing_ok=True)  # only needed to resume; final.safetensors supersedes them
    barrier()
    return history
