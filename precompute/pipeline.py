"""`precompute run`: model -> zero-shot head -> fine-tuning -> extraction -> bundle.

Each stage is keyed by the content of its inputs (weights, class names, templates,
preprocessing, the dataset's sample list, the settings) and cached under
`<out>/cache/`; re-running with unchanged inputs recomputes nothing, and a changed
input recomputes exactly the stages downstream of it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from precompute.assemble import AssembleSettings, Extracted, assemble
from precompute.config import Config
from precompute.sources import build_datasets, resolve_classnames
from vrf_core.bundle import MANIFEST, Bundle, atomic_save_npy, atomic_write_json, open_bundle
from vrf_core.data import ImageSet
from vrf_core.devices import pick_device
from vrf_core.distributed import barrier, init_distributed, is_main, world_size
from vrf_core.extract import extract, jpeg_thumbnail
from vrf_core.finetune import finetune
from vrf_core.models import (
    ImageClassifier,
    load_classifier_weights,
    load_clip,
    load_weights,
    preprocess_description,
    save_weights,
    state_dict_sha256,
)
from vrf_core.progress import log
from vrf_core.wse import interpolate_state_dicts
from vrf_core.zeroshot import resolve_templates, zero_shot_head


def content_key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def _zs_head(cfg: Config, clip, classnames, templates, device, cache: Path) -> tuple[torch.Tensor, str]:
    key = content_key("zs_head", clip.weights_sha256, classnames, templates)
    path = cache / f"zs_head-{key[:16]}.safetensors"
    if path.is_file():
        return load_weights(path)["head"], key
    log(f"zero-shot head: {len(classnames)} classes x {len(templates)} templates")
    head = zero_shot_head(clip.model, clip.tokenizer, classnames, templates, device)
    if is_main():
        save_weights({"head": head}, path)
    barrier()
    return head, key


def _finetuned(cfg: Config, zs: ImageClassifier, head_key: str, train: ImageSet, val: ImageSet, clip,
               device, out: Path) -> tuple[ImageClassifier, dict]:
    ft = copy.deepcopy(zs)
    if cfg.finetune.checkpoint:
        path = cfg.resolve(cfg.finetune.checkpoint)
        load_classifier_weights(ft, path)
        return ft, {"checkpoint": str(path)}
    settings = {k: v for k, v in dataclasses.asdict(cfg.finetune).items() if k not in ("checkpoint", "workers")}
    key = content_key("finetune", head_key, train.fingerprint(), val.fingerprint(), settings,
                      preprocess_description(clip.preprocess_train), world_size())
    ckpt_dir = out / "checkpoints" / f"ft-{key[:16]}"
    final = ckpt_dir / "final.safetensors"
    if final.is_file():
        log(f"fine-tuned weights up to date: {final}")
        ft.load_state_dict(load_weights(final))
        history = json.loads(_metadata(final).get("json", "{}")).get("history", [])
    else:
        log(f"fine-tuning ({cfg.finetune.mode}) on {len(train)} images, validating on {len(val)}")
        history = finetune(ft, train, val, clip.preprocess_train, clip.preprocess_eval, cfg.finetune, ckpt_dir,
                           device)
        ft.load_state_dict(load_weights(final))
    return ft, {"settings": settings, "checkpoint": str(final.relative_to(out)), "history": history}


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def _extract_split(name: str, role: str, images: ImageSet, models: dict, cfg: Config, clip, device,
                   cache: Path, model_key: str) -> dict:
    """Cached extraction of one split; returns its arrays (memory-mapped from the cache)."""
    is_train = role == "id_train"
    key = content_key("extract", model_key, images.fingerprint(), preprocess_description(clip.preprocess_eval),
                      0 if is_train else cfg.bundle.thumb_size, is_train, cfg.model.precision)
    folder = cache / "extract" / f"{name}-{key[:16]}"
    done = folder / "done.json"
    if not done.is_file():
        use = {"zs": models["zs"], "ft": models["ft"]} if is_train else models
        arrays = extract(use, images, clip.preprocess_eval, features_of=("ft",) if is_train else ("zs", "ft"),
                         preds_only=is_train, batch_size=cfg.run.batch_size, workers=cfg.run.workers,
                         thumb_size=0 if is_train else cfg.bundle.thumb_size, device=device,
                         precision=cfg.model.precision, desc=f"extract {name} ({len(use)} models)",
                         shard_dir=folder / "shards")
        if is_main():
            for k, v in arrays.items():
                if k == "thumbs":
                    if v:
                        atomic_save_npy(folder / "thumb_lengths.npy", np.array([len(t) for t in v], np.int64))
                        atomic_save_npy(folder / "thumb_bytes.npy", np.frombuffer(b"".join(v), np.uint8))
                else:
                    atomic_save_npy(folder / f"{k}.npy", v)
            shutil.rmtree(folder / "shards", ignore_errors=True)
            atomic_write_json(done, {"key": key, "n": len(images)})
        barrier()
    out = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in folder.glob("*.npy")}
    if "thumb_bytes" in out:
        blob, ends = out.pop("thumb_bytes").tobytes(), np.cumsum(out.pop("thumb_lengths"))
        out["thumbs"] = [blob[s:e] for s, e in zip(np.concatenate([[0], ends[:-1]]), ends)]
    out["key"] = key
    return out


def run(cfg: Config) -> Bundle | None:
    """The whole pipeline; returns the bundle on rank 0 (None on other torchrun ranks)."""
    init_distributed()
    device = pick_device(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    out = cfg.resolve(cfg.run.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    log(f"run {cfg.run.name!r} -> {out} on {device} ({world_size()} process(es))")

    classnames = resolve_classnames(cfg.classes.names, cfg.base_dir)
    templates = resolve_templates(cfg.classes.templates, cfg.base_dir)
    train, val, evals = build_datasets(cfg, classnames)
    for split, (_, images) in evals.items():
        if images.projection is not None:
            images.projection.check(len(classnames), f"data {split}")
    log(f"data: train {len(train)}, " + ", ".join(f"{s} {len(d)}" for s, (_, d) in evals.items()))

    pretrained = str(cfg.resolve(cfg.model.pretrained)) if cfg.model.pretrained and (
        cfg.resolve(cfg.model.pretrained).exists()) else cfg.model.pretrained
    clip = load_clip(cfg.model.name, pretrained, device)
    head, head_key = _zs_head(cfg, clip, classnames, templates, device, cache)
    zs = ImageClassifier(clip.model.visual, head).to(device)
    zs_state = {k: v.detach().clone() for k, v in zs.state_dict().items()}
    ft, ft_info = _finetuned(cfg, zs, head_key, train, val, clip, device, out)
    ft_state = ft.state_dict()
    ft_sha = state_dict_sha256(ft_state)

    models: dict[str, ImageClassifier] = {"zs": zs, "ft": ft}
    alphas = [float(a) for a in cfg.ensemble.wse_alphas]
    for a in alphas:
        if 0.0 < a < 1.0:
            m = copy.deepcopy(zs)
            m.load_state_dict(interpolate_state_dicts(zs_state, ft_state, a))
            models[f"wse_{a}"] = m
    model_key = content_key(head_key, ft_sha, alphas)

    ex_train = _extract_split("train", "id_train", train, models, cfg, clip, device, cache, model_key)
    ex_evals = {s: _extract_split(s, role, images, models, cfg, clip, device, cache, model_key)
                for s, (role, images) in evals.items()}
    if not is_main():
        return None

    settings = AssembleSettings(
        k_max=cfg.ensemble.k_max, k_rule=cfg.ensemble.k_rule, distance=cfg.ensemble.distance,
        calibration=cfg.ensemble.calibration, wse_alphas=alphas, ose_alphas=[float(a) for a in cfg.ensemble.ose_alphas],
        weight_rule=cfg.ensemble.weight_rule, knn_backend=cfg.ensemble.knn_backend,
        train_sample=cfg.bundle.train_sample, umap=cfg.bundle.umap, umap_max_points=cfg.bundle.umap_max_points,
        umap_neighbors=cfg.bundle.umap_neighbors, seed=cfg.run.seed)
    assemble_key = content_key("assemble", ex_train["key"], {s: e["key"] for s, e in ex_evals.items()},
                               dataclasses.asdict(settings), cfg.run.name)
    if (out / MANIFEST).is_file():
        try:
            existing = open_bundle(out)
            if existing.manifest.get("assemble_key") == assemble_key:
                log(f"bundle up to date: {out}")
                return existing
        except ValueError:
            pass  # an unreadable old bundle is simply rebuilt

    def wse_logits(ex: dict) -> np.ndarray:
        per_alpha = [ex["logits_zs"] if a == 0.0 else ex["logits_ft"] if a == 1.0 else ex[f"logits_wse_{a}"]
                     for a in alphas]
        return np.stack([np.asarray(p, np.float16) for p in per_alpha])

    train_ex = Extracted(role="id_train", labels=ex_train["labels"], refs=np.array(train.refs),
                         features_ft=ex_train["features_ft"], preds_zs=ex_train["preds_zs"],
                         preds_ft=ex_train["preds_ft"], source={"type": cfg.train.type, "path": cfg.train.path})
    eval_ex = {}
    for s, ex in ex_evals.items():
        role, images = evals[s]
        eval_ex[s] = Extracted(
            role=role, labels=ex["labels"], refs=np.array(images.refs), features_ft=ex["features_ft"],
            features_zs=ex["features_zs"], logits_zs=ex["logits_zs"], logits_ft=ex["logits_ft"],
            logits_wse=wse_logits(ex) if alphas else None, thumbs=ex.get("thumbs"),
            classnames=images.classnames if images.projection is not None else None, projection=images.projection,
            source={"root": images.root, **images.notes})

    def zsf_thumbs(idx: np.ndarray) -> list[bytes]:
        return [jpeg_thumbnail(train.load(int(i)), cfg.bundle.thumb_size) for i in idx]

    extra = {
        "classnames": classnames,
        "templates": templates,
        "models": {
            "zs": {"name": cfg.model.name, "pretrained": cfg.model.pretrained, "sha256": clip.weights_sha256},
            "ft": {"name": cfg.model.name, "sha256": ft_sha, "finetune": ft_info},
        },
        "preprocessing": preprocess_description(clip.preprocess_eval),
        "config": cfg.to_json(),
        "assemble_key": assemble_key,
    }
    bundle = assemble(out, cfg.run.name, train_ex, eval_ex, settings, extra, zsf_thumbs)
    log(f"bundle written: {out}")
    return bundle
