"""One pass over a dataset: each image is decoded once, and the same batch goes
through every model that needs it (zero-shot, fine-tuned, each WSE alpha).

Under torchrun each process takes a contiguous shard and writes it to a
temporary folder; rank 0 concatenates the shards in order, so the arrays equal
those of a single process.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vrf_core.data import ImageSet
from vrf_core.devices import autocast
from vrf_core.distributed import barrier, is_main, rank, shard, world_size
from vrf_core.filesafe import atomic_save_npy, kill_point
from vrf_core.models import ImageClassifier
from vrf_core.progress import progress


def jpeg_thumbnail(img: Image.Image, size: int) -> bytes:
    """Longest side `size` (small images are kept as they are), JPEG quality 85."""
    im = img.copy()
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class DecodedOnce(Dataset):
    """Yields (model input, label, index, thumbnail bytes) from a single decode of each image."""

    def __init__(self, images: ImageSet, transform: Callable, indices: range, thumb_size: int):
        self.images, self.transform, self.indices, self.thumb_size = images, transform, indices, thumb_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        img = self.images.load(i)
        thumb = jpeg_thumbnail(img, self.thumb_size) if self.thumb_size else b""
        return self.transform(img), int(self.images.labels[i]), i, thumb


def _collate(batch):
    xs, ys, idx, thumbs = zip(*batch)
    return torch.stack(xs), torch.tensor(ys), torch.tensor(idx), list(thumbs)


@torch.no_grad()
def extract(models: dict[str, ImageClassifier], images: ImageSet, transform: Callable,
            features_of: tuple[str, ...] = ("zs", "ft"), logits_of: tuple[str, ...] | None = None,
            preds_only: bool = False, batch_size: int = 256, workers: int = 2, thumb_size: int = 0,
            device: torch.device | str = "cpu", precision: str = "auto", desc: str = "extract",
            shard_dir: Path | None = None) -> dict[str, np.ndarray | list]:
    """Returns arrays keyed `features_<m>` (N, D) float16, `logits_<m>` (N, C) float32 (or
    `preds_<m>` (N,) int64 with preds_only: -1 where the logits are not finite), `labels` (N,), and
    `thumbs` (list of JPEG bytes).

    Several processes (torchrun): pass a `shard_dir` shared by all of them; the full arrays are
    returned on rank 0 and an empty dict elsewhere.
    """
    device = torch.device(device)
    logits_of = tuple(models) if logits_of is None else logits_of
    part = shard(len(images)) if world_size() > 1 else range(len(images))
    loader = DataLoader(DecodedOnce(images, transform, part, thumb_size), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    for m in models.values():
        m.eval().to(device)
    out: dict[str, list] = {"labels": [], "thumbs": []}
    for x, y, _, thumbs in progress(loader, desc=desc, total=len(loader)):
        x = x.to(device, non_blocking=True)
        out["labels"].append(y.numpy())
        out["thumbs"] += thumbs
        for name, model in models.items():
            with autocast(device, precision):
                feats, logits = model(x)
            if name in features_of:
                out.setdefault(f"features_{name}", []).append(feats.float().cpu().numpy().astype(np.float16))
            if name in logits_of:
                if preds_only:
                    preds = torch.where(torch.isfinite(logits).all(1), logits.argmax(1), -1)
                    out.setdefault(f"preds_{name}", []).append(preds.cpu().numpy())
                else:
                    out.setdefault(f"logits_{name}", []).append(logits.float().cpu().numpy())
        kill_point(f"extract-batch:{images.name}")
    arrays = {k: (v if k == "thumbs" else np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}
    if world_size() == 1:
        return arrays
    if shard_dir is None:
        raise ValueError("extraction under torchrun needs a shard_dir shared by all processes")
    return _gather_shards(arrays, Path(shard_dir))


def _gather_shards(arrays: dict, shard_dir: Path) -> dict:
    """Each rank saves its arrays; rank 0 concatenates them in rank order."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    for k, v in arrays.items():
        if k == "thumbs":
            lengths = np.array([len(t) for t in v], dtype=np.int64)
            atomic_save_npy(shard_dir / f"{rank()}-thumb_lengths.npy", lengths)
            atomic_save_npy(shard_dir / f"{rank()}-thumb_bytes.npy", np.frombuffer(b"".join(v), dtype=np.uint8))
        else:
            atomic_save_npy(shard_dir / f"{rank()}-{k}.npy", np.asarray(v))
    barrier()
    merged: dict = {}
    if is_main():
        for k in arrays:
            if k == "thumbs":
                thumbs = []
                for r in range(world_size()):
                    blob = np.load(shard_dir / f"{r}-thumb_bytes.npy").tobytes()
                    ends = np.cumsum(np.load(shard_dir / f"{r}-thumb_lengths.npy"))
                    thumbs += [blob[s:e] for s, e in zip(np.concatenate([[0], ends[:-1]]), ends)]
                merged[k] = thumbs
            else:
                merged[k] = np.concatenate([np.load(shard_dir / f"{r}-{k}.npy") for r in range(world_size())])
    barrier()
    return merged
