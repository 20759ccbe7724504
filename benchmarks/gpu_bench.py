"""GPU benchmark (prepared; run it on a CUDA machine, about 5 minutes, at most 10):

    HF_HUB_OFFLINE=1 python benchmarks/gpu_bench.py [--quick]

Prints one markdown table for docs/benchmarks.md:
- extraction throughput of the CLIP ViT-B/16 image tower (random init, nothing downloaded),
  fp32 vs bf16 autocast, with the achieved matrix rate next to the hardware's;
- fine-tuning steps per second (AdamW, bf16 autocast, gradient clipping: the recipe's step);
- exact kNN of 166k evaluation features to a 128k ZSF set, k = 100: vrf_core.knn's torch path
  on the GPU vs faiss flat on the CPU (a sample of queries, extrapolated);
- device memory bandwidth (a large copy) next to the hardware's.

Reference limits for an H200 SXM: bf16 dense ~989 TFLOP/s, fp32 (no tensor cores) ~67 TFLOP/s,
HBM3e ~4.8 TB/s. Every section checks a deadline so the whole run stays under 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ViT-B/16 at 224 px: 197 tokens, width 768, 12 layers. Per layer 12 N D^2 (qkv, projection, MLP)
# + 2 N^2 D (attention) multiply-adds; plus the patch embedding. One forward, per image:
VIT_B16_FLOPS = 2 * (12 * (12 * 197 * 768**2 + 2 * 197**2 * 768) + 196 * 768 * 768)
LIMITS = {"bf16 TFLOP/s": 989.0, "fp32 TFLOP/s": 67.0, "HBM TB/s": 4.8}
DEADLINE = time.monotonic() + 9 * 60
DEVICE = "cuda"  # "cpu" only for --smoke, a check of this script on a machine without a GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def left() -> float:
    return DEADLINE - time.monotonic()


def cuda_time(fn, iters: int, warmup: int = 3) -> float:
    """Median seconds per call, synchronised."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def vit_b16():
    import open_clip

    from vrf_core.models import ImageClassifier

    clip = open_clip.create_model("ViT-B-16", pretrained=None)
    head = torch.nn.functional.normalize(torch.randn(1000, clip.visual.output_dim), dim=-1) * 100
    return ImageClassifier(clip.visual, head).to(DEVICE)


def bench_extract(batch: int, iters: int) -> list[str]:
    model = vit_b16().eval()
    x = torch.randn(batch, 3, 224, 224, device=DEVICE)
    rows = []
    for name, ctx, limit in (("fp32", None, LIMITS["fp32 TFLOP/s"]), ("bf16", torch.bfloat16, LIMITS["bf16 TFLOP/s"])):
        def step(ctx=ctx):
            with torch.inference_mode(), torch.autocast(DEVICE, dtype=ctx or torch.float32, enabled=ctx is not None):
                model(x)
        s = cuda_time(step, iters)
        tflops = VIT_B16_FLOPS * batch / s / 1e12
        rows.append(f"| extraction ViT-B/16 {name}, batch {batch} | {batch / s:,.0f} img/s | "
                    f"{tflops:.0f} TFLOP/s = {100 * tflops / limit:.0f}% of {limit:.0f} |")
    return rows


def bench_finetune(batch: int, iters: int) -> list[str]:
    model = vit_b16().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.1)
    x = torch.randn(batch, 3, 224, 224, device=DEVICE)
    y = torch.randint(0, 1000, (batch,), device=DEVICE)

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x)[1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    s = cuda_time(step, iters)
    tflops = 3 * VIT_B16_FLOPS * batch / s / 1e12  # forward + backward ~ 3 forwards
    epoch_min = 1_281_167 / batch * s / 60
    return [f"| fine-tuning ViT-B/16 bf16, AdamW, batch {batch} | {1 / s:.2f} steps/s ({batch / s:,.0f} img/s) | "
            f"{tflops:.0f} TFLOP/s = {100 * tflops / LIMITS['bf16 TFLOP/s']:.0f}% of bf16; "
            f"one ImageNet epoch ~{epoch_min:.1f} min (compute only) |"]


def bench_knn(n_queries: int, n_base: int, k: int, cpu_sample: int) -> list[str]:
    import faiss

    from vrf_core.knn import knn_sqdist

    rng = np.random.default_rng(0)
    base = rng.standard_normal((n_base, 512), dtype=np.float32)
    queries = rng.standard_normal((n_queries, 512), dtype=np.float32)
    knn_sqdist(queries[:256], base[:4096], k, backend="torch")  # CUDA context and cuBLAS set-up
    t0 = time.perf_counter()
    sq, _ = knn_sqdist(queries, base, k, backend="torch")
    gpu = time.perf_counter() - t0
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    sample = queries[:cpu_sample]
    t0 = time.perf_counter()
    sq_cpu, _ = knn_sqdist(sample, base, k, backend="faiss")
    cpu = (time.perf_counter() - t0) * n_queries / cpu_sample
    diff = float(np.abs(sq[:cpu_sample] - sq_cpu).max())
    flops = 2 * n_queries * n_base * 512
    return [f"| kNN exact {n_queries:,} x {n_base:,}, k = {k}: torch GPU vs faiss flat CPU "
            f"({os.cpu_count()} cores, {cpu_sample:,} queries extrapolated) | {gpu:.1f} s vs {cpu:.0f} s "
            f"({cpu / gpu:.0f}x) | GEMM {flops / gpu / 1e12:.0f} TFLOP/s incl. top-k and transfers; "
            f"max distance diff {diff:.1e} |"]


def bench_bandwidth() -> list[str]:
    gib = 4 if DEVICE == "cuda" else 1
    a = torch.empty(gib * 2**28, dtype=torch.float32, device=DEVICE)
    b = torch.empty_like(a)
    s = cuda_time(lambda: b.copy_(a), 10)
    tbs = 2 * a.numel() * 4 / s / 1e12  # read + write
    limit = LIMITS["HBM TB/s"]
    return [f"| device copy {gib} GiB | {tbs:.2f} TB/s | {100 * tbs / limit:.0f}% of {limit} TB/s |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer iterations")
    parser.add_argument("--smoke", action="store_true", help="run tiny sizes on the CPU (checks the script only)")
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        return run_sections([("bandwidth", bench_bandwidth), ("extraction", lambda: bench_extract(2, 1)),
                             ("fine-tuning", lambda: bench_finetune(2, 1)),
                             ("kNN", lambda: bench_knn(2000, 3000, 10, 500))])
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    props = torch.cuda.get_device_properties(0)
    print(f"## GPU benchmark\n\n{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} "
          f"device(s); torch {torch.__version__}, CUDA {torch.version.cuda}; {os.cpu_count()} CPU cores\n")
    return run_sections([
        ("bandwidth", bench_bandwidth),
        ("extraction", lambda: bench_extract(128 if args.quick else 512, 5 if args.quick else 20)),
        ("fine-tuning", lambda: bench_finetune(64 if args.quick else 256, 5 if args.quick else 20)),
        ("kNN", lambda: bench_knn(166_963, 128_000, 100, 2048 if args.quick else 8192)),
    ])


def run_sections(sections: list) -> int:
    print("| figure | measured | against the hardware |\n|---|---|---|")
    for name, fn in sections:
        if left() < 60:
            print(f"| {name} | skipped: the 10-minute budget is nearly spent | |")
            continue
        t0 = time.perf_counter()
        for row in fn():
            print(row, flush=True)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
