"""Weight-space ensembles (WiSE-FT): theta(alpha) = (1 - alpha) * theta_zs + alpha * theta_ft."""

from __future__ import annotations

import torch


def interpolate_state_dicts(zs: dict[str, torch.Tensor], ft: dict[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """Key-by-key interpolation; integer buffers (e.g. counters) are taken from the fine-tuned model."""
    if zs.keys() != ft.keys():
        diff = sorted(set(zs) ^ set(ft))[:5]
        raise ValueError(f"cannot interpolate state dicts with different keys, e.g. {diff}")
    out = {}
    for k, v_zs in zs.items():
        v_ft = ft[k]
        if v_zs.shape != v_ft.shape:
            raise ValueError(f"cannot interpolate {k}: shapes {tuple(v_zs.shape)} and {tuple(v_ft.shape)}")
        out[k] = (1 - alpha) * v_zs + alpha * v_ft if v_zs.is_floating_point() else v_ft.clone()
    return out
