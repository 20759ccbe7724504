"""Extraction: each image decoded once for the zero-shot and fine-tuned models against one pass per
model (`vrf_core.extract`), and the same under torchrun with 1 and 2 processes. Each figure runs
in a fresh worker process with one torch thread: `python -m benchmarks.extract FOLDER
[--clip tiny|small] [--compare N]` prints one JSON line (under torchrun, rank 0 does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import Row, ratio

ROOT = Path(__file__).resolve().parents[1]


# Small open_clip image towers (random weights): "tiny" is tests/tiny.py's model, whose forward pass is
# cheap next to decoding a photo (as on a GPU); "small" costs about a third of the decode on one core.
CLIPS = {
    "tiny": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
    "small": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 3, "width": 128, "patch_size": 8},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
}


def image_tree(root: Path, n: int, seed: int = 0) -> Path:
    """n photo-sized JPEGs (500 x 375, ImageNet's typical size) in 4 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((500, 375), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def small_models(clip: str, n_classes: int = 1000):
    """Two open_clip image classifiers of architecture CLIPS[clip] with different random weights,
    and the evaluation transform."""
    import open_clip
    import torch

    from vrf_core.models import ImageClassifier

    name = f"bench-{clip}-clip"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{name}.json").write_text(json.dumps(CLIPS[clip]))
        open_clip.add_model_config(Path(tmp) / f"{name}.json")
    models = {}
    for seed, role in enumerate(("zs", "ft")):
        torch.manual_seed(seed)
        model, _, transform = open_clip.create_model_and_transforms(name)
        head = torch.nn.functional.normalize(torch.randn(n_classes, CLIPS[clip]["embed_dim"]), dim=-1) * 100
        models[role] = ImageClassifier(model.visual, head)
    return models, transform


def extract_seconds(models: dict, transform, images, separate: bool) -> float:
    """Seconds to extract features and logits of every image (this process's shard under torchrun)
    for both models: in one pass, or one pass per model (`separate`)."""
    from vrf_core.distributed import barrier
    from vrf_core.extract import extract

    barrier()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        groups = [{m: mod} for m, mod in models.items()] if separate else [models]
        for i, group in enumerate(groups):
            shard_dir = Path(os.environ.get("BENCH_SHARDS", tmp)) / str(i)
            extract(group, images, transform, batch_size=32, workers=0, shard_dir=shard_dir, desc="bench")
    barrier()
    return time.perf_counter() - t0


def extract_worker(folder: Path, clip: str, compare: int) -> None:
    """Prints JSON: with `compare` > 0, {"once": [...], "apart": [...]} seconds of that many
    interleaved runs of each; otherwise (under torchrun) rank 0 prints {"seconds"} of one run."""
    import torch

    from vrf_core.data import image_folder
    from vrf_core.distributed import init_distributed, is_main

    init_distributed()
    models, transform = small_models(clip)
    images = image_folder("bench", folder)
    with torch.no_grad():  # first calls initialise kernels: not part of the figure
        for model in models.values():
            model.eval()(transform(images.load(0))[None])
    if compare:
        runs = {"once": [], "apart": []}
        for _ in range(compare):  # interleaved, so that both see the same machine load
            for mode in runs:
                runs[mode].append(extract_seconds(models, transform, images, mode == "apart"))
        print(json.dumps(runs))
    else:
        seconds = extract_seconds(models, transform, images, False)
        if is_main():
            print(json.dumps({"seconds": seconds}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def bench_extract(n_images: int, repeats: int, work: Path) -> list[Row]:
    """Each figure in a fresh process with one torch thread per process: on a shared 2-core
    machine two OpenMP threads spin against each other's load (several times slower here)."""
    folder = image_tree(work / "images", n_images)

    def worker(*extra: str, procs: int = 0) -> dict:
        launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_port=29533"] if procs else []
        cmd = [sys.executable, *launcher, "-m", "benchmarks.extract", str(folder), *extra]
        env = {**os.environ, "BENCH_SHARDS": str(work / "shards"), "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    n, rows = n_images, []
    for clip in ("tiny", "small") if n >= 64 else ("tiny",):
        runs = worker("--clip", clip, "--compare", str(repeats))
        once, apart = float(np.median(runs["once"])), float(np.median(runs["apart"]))
        v = CLIPS[clip]["vision_cfg"]
        rows.append(Row(f"extraction, zero-shot + fine-tuned: one decode vs a pass per model; {n} JPEGs 500x375, "
                        f"{clip} CLIP ({v['image_size']} px, {v['layers']} layers, width {v['width']})",
                        f"{n / once:.1f} img/s", f"{n / apart:.1f} img/s", ratio(apart, once),
                        ">= 1.8x" if clip == "tiny" else "report",
                        ("yes" if apart / once >= 1.8 else "no") if clip == "tiny" else "-",
                        f"1 process, 1 torch thread, median of {repeats} interleaved"))
    if n >= 64:
        t1 = float(np.median([worker(procs=1)["seconds"] for _ in range(max(1, repeats // 2))]))
        t2 = float(np.median([worker(procs=2)["seconds"] for _ in range(max(1, repeats // 2))]))
        rows.append(Row("extraction under torchrun (tiny CLIP, one decode): 2 processes vs 1", f"{n / t2:.1f} img/s",
                        f"{n / t1:.1f} img/s", ratio(t1, t2), "report", "-",
                        f"{os.cpu_count()} cores, 1 thread per process; shards written and gathered by rank 0"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--clip", choices=list(CLIPS), default="tiny")
    parser.add_argument("--compare", type=int, default=0, help="interleaved runs of each way (0: one run)")
    args = parser.parse_args()
    extract_worker(Path(args.folder), args.clip, args.compare)
