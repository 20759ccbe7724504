"""precompute's extraction stage: every model's features and logits of one split, and its
thumbnails, each cached as a content-keyed stage; all the missing ones in one pass over the
images (each image decoded once).

The training split keeps each model's predictions instead of its logits, and the features of both
models: the fine-tuned ones for the ZSF set's kNN, the zero-shot ones for the VRF ablation in
zero-shot features (precompute/assemble.py). Both models run over the training set for their
predictions anyway, so keeping the zero-shot features costs no forward pass."""

from __future__ import annotations

import shutil
import time

import numpy as np

from precompute.config import Config
from precompute.stage_cache import StageCache, content_key
from vrf_core.data import ImageSet
from vrf_core.distributed import barrier, is_main
from vrf_core.extract import extract
from vrf_core.filesafe import kill_point
from vrf_core.models import ImageClassifier, ModelError, preprocess_description


def pack_thumbs(thumbs: list[bytes]) -> dict[str, np.ndarray]:
    return {"thumb_lengths": np.array([len(t) for t in thumbs], np.int64),
            "thumb_bytes": np.frombuffer(b"".join(thumbs), np.uint8)}


def unpack_thumbs(arrays: dict) -> list[bytes]:
    blob, ends = np.asarray(arrays["thumb_bytes"]).tobytes(), np.cumsum(arrays["thumb_lengths"])
    return [blob[s:e] for s, e in zip(np.concatenate([[0], ends[:-1]]).astype(int), ends)]


def check_outputs(split: str, images: ImageSet, model: str, arrays: dict[str, np.ndarray]) -> None:
    """NaN or infinite outputs are a broken model (or an fp16 overflow), never data to cache."""
    for what, arr in arrays.items():
        if what.startswith("preds_"):
            rows, what = np.flatnonzero(arr < 0), "logits"  # extract marks non-finite logits with -1
        else:
            rows = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))
        if len(rows):
            examples = ", ".join(images.refs[i] for i in rows[:3])
            raise ModelError(
                f"model {model!r} gave NaN or infinite {what.split('_')[0]} for {len(rows)} of {len(arr)} images "
                f"of split {split!r} (e.g. {examples}); its weights may be corrupt (check [model] and "
                "finetune.checkpoint) or half precision overflowed (set model.precision = \"fp32\")")


def extract_split(name: str, role: str, images: ImageSet, models: dict[str, tuple[ImageClassifier, str]],
                   cfg: Config, clip, device, stages: StageCache) -> tuple[dict, dict]:
    """Cached extraction of one split, one stage per model (and one for thumbnails), all missing ones
    in a single pass over the images. Returns the arrays (memory-mapped from the cache) and the keys."""
    is_train = role == "id_train"
    data_key = content_key(images.fingerprint(), preprocess_description(clip.preprocess_eval), cfg.model.precision)
    keys = {m: content_key("extract", data_key, model_key, is_train) for m, (_, model_key) in models.items()}
    if is_train and "zs" in keys:  # it stores features_zs too (before assemble format 4: predictions only)
        keys["zs"] = content_key("extract", data_key, models["zs"][1], is_train, "features_zs")
    thumb_size = 0 if is_train else cfg.bundle.thumb_size
    if thumb_size:
        keys["thumbs"] = content_key("thumbs", images.files_key(), thumb_size)
    stage = {part: f"extract/{name}/{part}" for part in keys}
    missing = [part for part in keys if not stages.has(stage[part], keys[part])]
    for part in keys:
        if part not in missing:
            stages.note(stage[part], keys[part], "reused")
    if missing:
        todo = {m: models[m][0] for m in missing if m != "thumbs"}
        shards = stages.root / "extract" / name / ".shards"
        t0 = time.perf_counter()
        arrays = extract(todo, images, clip.preprocess_eval, features_of=("zs", "ft"),
                         preds_only=is_train, batch_size=cfg.run.batch_size, workers=cfg.run.workers,
                         thumb_size=thumb_size if "thumbs" in missing else 0, device=device,
                         precision=cfg.model.precision, desc=f"extract {name} ({', '.join(missing)})",
                         shard_dir=shards)
        if is_main():
            seconds = (time.perf_counter() - t0) / len(missing)
            for part in missing:
                if part == "thumbs":
                    out = pack_thumbs(arrays["thumbs"])
                else:
                    out = {k: arrays[k] for k in (f"features_{part}", f"logits_{part}", f"preds_{part}")
                           if k in arrays}
                    check_outputs(name, images, part, out)
                stages.put(stage[part], keys[part], out)
                stages.note(stage[part], keys[part], "computed", seconds)
                kill_point(f"extract-publish:{name}")
            shutil.rmtree(shards, ignore_errors=True)
        barrier()
    out: dict = {"labels": images.labels}
    for part in keys:
        loaded = stages.load(stage[part], keys[part])
        if part == "thumbs":
            out["thumbs"] = unpack_thumbs(loaded)
        else:
            out.update(loaded)
    return out, keys
