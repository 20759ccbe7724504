"""`precompute run`: model -> zero-shot head -> fine-tuning -> extraction -> bundle.

Each stage is keyed by the content of its inputs (weights, class names, templates,
preprocessing, the dataset's sample list, the settings) and cached under
`<out>/cache/` (fine-tuning under `<out>/checkpoints/`); re-running with unchanged
inputs recomputes nothing, a changed input recomputes exactly the stages that read
it, and a run killed at any point resumes where it stopped. `<out>/stages.json`
records what the last run computed and what it reused.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import fcntl
import os
import time
from pathlib import Path

import numpy as np
import torch

from precompute.assemble import ASSEMBLE_FORMAT, AssembleSettings, Extracted, assemble, wse_predictions
from precompute.config import Config
from precompute.extraction import extract_split, pack_thumbs, unpack_thumbs
from precompute.finetuning import finetuned, flyp_finetuned, zs_head
from precompute.sources import build_datasets, resolve_classnames
from precompute.stage_cache import StageCache, array_digest, content_key
from vrf_core.bundle import Bundle, BundleError, open_bundle
from vrf_core.data import ImageSet
from vrf_core.devices import pick_device
from vrf_core.distributed import barrier, init_distributed, is_main, world_size
from vrf_core.extract import jpeg_thumbnail
from vrf_core.filesafe import atomic_write_json
from vrf_core.image_scan import scan_images
from vrf_core.models import (
    ImageClassifier,
    load_clip,
    preprocess_description,
    state_dict_sha256,
)
from vrf_core.progress import log
from vrf_core.wse import interpolate_state_dicts
from vrf_core.zeroshot import resolve_templates


@contextlib.contextmanager
def exclusive(out: Path):
    """One run per output folder: a second one would interleave its writes with ours. A POSIX record lock
    belongs to the process alone (forked data-loader workers do not inherit it) and dies with it, even
    under SIGKILL, so a crashed run never blocks the next."""
    if not is_main():
        yield
        return
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            f.seek(0)
            raise BundleError(f"{out}: another precompute run (pid {f.read().strip() or '?'}) is using this folder; "
                              "wait for it to finish, or set run.out to another folder") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield


def _scan(stages: StageCache, workers: int):
    def scan(name: str, images: ImageSet) -> list[tuple[str, str]]:
        def compute() -> dict[str, np.ndarray]:
            bad = scan_images(images, workers)
            return {"refs": np.array([r for r, _ in bad], dtype=str), "reasons": np.array([w for _, w in bad], str)}

        key = content_key("scan", images.files_key())
        if is_main():
            stages.get(f"scan/{name}", key, compute)
        barrier()
        found = stages.load(f"scan/{name}", key)
        return list(zip(found["refs"].tolist(), found["reasons"].tolist()))

    return scan


def run(cfg: Config) -> Bundle | None:
    """The whole pipeline; returns the bundle on rank 0 (None on other torchrun ranks)."""
    init_distributed()
    out = cfg.resolve(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = StageCache(out / "cache")
    with exclusive(out):
        try:
            return _run(cfg, out, stages)
        finally:
            if is_main():
                with contextlib.suppress(OSError, BundleError):  # a record of the run: never mask its own error
                    atomic_write_json(out / "stages.json", {"run": cfg.run.name, "stages": stages.record})


def _run(cfg: Config, out: Path, stages: StageCache) -> Bundle | None:
    device = pick_device(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    log(f"run {cfg.run.name!r} -> {out} on {device} ({world_size()} process(es))")

    classnames = resolve_classnames(cfg.classes.names, cfg.base_dir)
    templates = resolve_templates(cfg.classes.templates, cfg.base_dir)
    train, val, evals, skipped = build_datasets(cfg, classnames, _scan(stages, cfg.run.workers),
                                                out / "unreadable.txt")
    for split, (_, images) in evals.items():
        if images.projection is not None:
            images.projection.check(len(classnames), f"data {split}")
    log(f"data: train {len(train)}, " + ", ".join(f"{s} {len(d)}" for s, (_, d) in evals.items()))

    pretrained = str(cfg.resolve(cfg.model.pretrained)) if cfg.model.pretrained and (
        cfg.resolve(cfg.model.pretrained).exists()) else cfg.model.pretrained
    clip = load_clip(cfg.model.name, pretrained, device)
    head, head_key = zs_head(clip, classnames, templates, device, stages)
    zs = ImageClassifier(clip.model.visual, head).to(device)
    zs_state = {k: v.detach().clone() for k, v in zs.state_dict().items()}
    flyp_wse = None
    if cfg.finetune.mode == "flyp":
        ft, ft_info, flyp_wse = flyp_finetuned(cfg, clip, head_key, classnames, templates, train, val, device, out,
                                                stages)
    else:
        ft, ft_info = finetuned(cfg, zs, head_key, train, val, clip, device, out, stages)
    if ft.head.bias is not None and zs.head.bias is None:  # a checkpoint that trained a head bias (WiSE-FT's)
        zs.add_head_bias()  # a zero bias: the same logits, and state dicts with the same keys to interpolate
        zs_state = {k: v.detach().clone() for k, v in zs.state_dict().items()}
    ft_state = ft.state_dict()
    ft_sha = state_dict_sha256(ft_state)

    # Each model's content key: what its extraction outputs depend on.
    models: dict[str, tuple[ImageClassifier, str]] = {"zs": (zs, head_key), "ft": (ft, ft_sha)}
    alphas = [float(a) for a in cfg.ensemble.wse_alphas]
    for a in alphas:
        if 0.0 < a < 1.0 and flyp_wse:
            models[f"wse_{a}"] = flyp_wse(a)
        elif 0.0 < a < 1.0:
            m = copy.deepcopy(zs)
            m.load_state_dict(interpolate_state_dicts(zs_state, ft_state, a))
            models[f"wse_{a}"] = (m, content_key("wse", head_key, ft_sha, a))

    ex_train, train_keys = extract_split("train", "id_train", train, {m: models[m] for m in ("zs", "ft")}, cfg,
                                          clip, device, stages)
    ex_evals, eval_keys = {}, {}
    for s, (role, images) in evals.items():
        ex_evals[s], eval_keys[s] = extract_split(s, role, images, models, cfg, clip, device, stages)
    if not is_main():
        return None

    settings = AssembleSettings(
        k_max=cfg.ensemble.k_max, k_rule=cfg.ensemble.k_rule, distance=cfg.ensemble.distance,
        calibration=cfg.ensemble.calibration, wse_alphas=alphas, ose_alphas=[float(a) for a in cfg.ensemble.ose_alphas],
        weight_rule=cfg.ensemble.weight_rule, knn_backend=cfg.ensemble.knn_backend,
        train_sample=cfg.bundle.train_sample, umap=cfg.bundle.umap, umap_max_points=cfg.bundle.umap_max_points,
        umap_neighbors=cfg.bundle.umap_neighbors, seed=cfg.run.seed)
    assemble_key = content_key("assemble", ASSEMBLE_FORMAT, train_keys, eval_keys, dataclasses.asdict(settings),
                               cfg.run.name, cfg.bundle.thumb_size, skipped,
                               {s: images.root for s, (_, images) in evals.items()})
    try:
        existing = open_bundle(out)
        if existing.manifest.get("assemble_key") == assemble_key:
            log(f"bundle up to date: {out}")
            stages.note("assemble", assemble_key, "reused")
            return existing
    except BundleError as exc:
        if (out / "manifest.json").exists():
            log(f"rebuilding the bundle: {exc}")

    def wse_preds(ex: dict, images: ImageSet) -> np.ndarray:
        per_alpha = [ex["logits_zs"] if a == 0.0 else ex["logits_ft"] if a == 1.0 else ex[f"logits_wse_{a}"]
                     for a in alphas]
        return wse_predictions(per_alpha, images.projection)

    train_ex = Extracted(role="id_train", labels=ex_train["labels"], refs=np.array(train.refs),
                         features_ft=ex_train["features_ft"], features_zs=ex_train["features_zs"],
                         preds_zs=ex_train["preds_zs"],
                         preds_ft=ex_train["preds_ft"], source={"type": cfg.train.type, "path": cfg.train.path})
    eval_ex = {}
    for s, ex in ex_evals.items():
        role, images = evals[s]
        eval_ex[s] = Extracted(
            role=role, labels=ex["labels"], refs=np.array(images.refs), features_ft=ex["features_ft"],
            features_zs=ex["features_zs"], logits_zs=ex["logits_zs"], logits_ft=ex["logits_ft"],
            preds_wse=wse_preds(ex, images) if alphas else None, thumbs=ex.get("thumbs"),
            classnames=images.classnames if images.projection is not None else None, projection=images.projection,
            source={"root": images.root, **images.notes})

    def zsf_thumbs(idx: np.ndarray) -> list[bytes]:
        def compute() -> dict[str, np.ndarray]:
            return pack_thumbs([jpeg_thumbnail(train.load(int(i)), cfg.bundle.thumb_size) for i in idx])

        key = content_key("zsf-thumbs", train.files_key(), array_digest(idx), cfg.bundle.thumb_size)
        return unpack_thumbs(stages.get("thumbs/zsf", key, compute))

    extra = {
        "classnames": classnames,
        "templates": templates,
        "models": {
            "zs": {"name": cfg.model.name, "pretrained": cfg.model.pretrained, "sha256": clip.weights_sha256},
            "ft": {"name": cfg.model.name, "sha256": ft_sha, "finetune": ft_info},
        },
        "preprocessing": preprocess_description(clip.preprocess_eval),
        "skipped_unreadable": skipped,
        "config": cfg.to_json(),
        "assemble_key": assemble_key,
    }
    t0 = time.perf_counter()
    bundle = assemble(out, cfg.run.name, train_ex, eval_ex, settings, extra,
                      zsf_thumbs if cfg.bundle.thumb_size else None, stages)
    stages.note("assemble", assemble_key, "computed", time.perf_counter() - t0)
    log(f"bundle written: {out}")
    return bundle
