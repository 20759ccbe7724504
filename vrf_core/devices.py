"""One device-selection function and the matching autocast context."""

from __future__ import annotations

import contextlib
import os

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")  # or "cuda:<index>"
PRECISIONS = ("auto", "bf16", "fp32")  # autocast: bf16 on GPU for auto/bf16, fp32 otherwise


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> this process's CUDA device under torchrun (LOCAL_RANK), else cuda:0, else CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available; use device = 'auto' or 'cpu'")
    return torch.device(requested)


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on GPU (precision 'auto' or 'bf16'); full fp32 elsewhere."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
