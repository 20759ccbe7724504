"""The checks `assemble` runs before any work: extracted arrays that would poison a bundle (NaN or
infinite values) and a zero-shot failure set too small for the configured k. Each failure is one
`AssembleError` naming the split and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from precompute.assemble import AssembleSettings, Extracted


class AssembleError(ValueError):
    """The extracted arrays cannot make a sound bundle; the message names the split and the fix."""


def _count_nonfinite(arr: np.ndarray, chunk: int = 1 << 22) -> int:
    flat = np.asarray(arr).reshape(-1)
    return sum(int((~np.isfinite(flat[i:i + chunk])).sum()) for i in range(0, len(flat), chunk))


def check_finite(split: str, ex: Extracted) -> None:
    """NaN or infinite features or logits would silently poison distances, calibration and accuracies."""
    for what in ("features_ft", "features_zs", "logits_zs", "logits_ft"):
        arr = getattr(ex, what)
        bad = _count_nonfinite(arr) if arr is not None else 0
        if bad:
            raise AssembleError(f"split {split!r}: {what} holds {bad} NaN or infinite value(s) of {np.size(arr)}; "
                                "the model's weights may be corrupt or half precision overflowed: check the "
                                "checkpoint, or set model.precision = \"fp32\"")


def check_zsf_size(n_zsf: int, n_train: int, settings: AssembleSettings, zs_acc: float, ft_acc: float) -> None:
    """The ZSF set must hold at least two members (members are measured leave-one-out) and more than an
    explicitly configured k; a k derived from a rule is lowered instead (and logged)."""
    if n_zsf == 0:
        raise AssembleError(
            f"the zero-shot failure set is empty: none of the {n_train} training samples is classified right by "
            f"the fine-tuned model and wrong by the zero-shot one (training accuracy: fine-tuned {ft_acc:.3f}, "
            f"zero-shot {zs_acc:.3f}). Check that finetune.checkpoint is a model fine-tuned on this training set, "
            "or fine-tune longer (finetune.epochs)")
    if n_zsf < 2:
        raise AssembleError(
            "the zero-shot failure set has a single member; at least 2 are needed (each member is measured "
            "against the others). Fine-tune longer (finetune.epochs) or use more training data")
    k = settings.k_rule
    if isinstance(k, (int, np.integer)) and n_zsf < k + 1:
        raise AssembleError(
            f"the zero-shot failure set has {n_zsf} members, fewer than k + 1 = {k + 1} (ensemble.k_rule = {k}; "
            f"each member is measured against the others). Set ensemble.k_rule below {n_zsf}, use the "
            "'reference' or 'paper' rule, or use more training data")
