"""The manifest keys that describe a run (everything but the files and the derived results, which
`precompute.assemble.finish` adds): shared by the real pipeline and the synthetic bundles, so
every bundle is described the same way (docs/bundle.md)."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vrf_core.data import ClassProjection
from vrf_core.progress import log
from vrf_core.weights import k_from_rule

if TYPE_CHECKING:
    from precompute.assemble import AssembleSettings


def versions() -> dict:
    import faiss
    import open_clip
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "faiss": faiss.__version__}


@dataclass(frozen=True)
class ZSFSummary:
    """The ZSF set's size and the k settings it allows (manifest keys zsf and ensemble.k_max)."""

    size: int
    train_size: int
    k_max: int  # the configured k_max, lowered below the set's size when needed
    k_rule_value: int  # the k of ensemble.k_rule, at most k_max
    k_rule_raw: int  # that k before the cap


def zsf_summary(n_zsf: int, n_train: int, settings: AssembleSettings) -> ZSFSummary:
    k_max = min(settings.k_max, n_zsf - 1)
    if k_max < settings.k_max:
        log(f"ensemble.k_max lowered from {settings.k_max} to {k_max}: the ZSF set has {n_zsf} members")
    k_rule_raw = k_from_rule(settings.k_rule, n_zsf, n_train)
    k_rule_value = min(k_rule_raw, k_max)
    if k_rule_value < k_rule_raw:
        log(f"warning: k = {k_rule_raw} from ensemble.k_rule = {settings.k_rule!r} exceeds k_max = {k_max}; "
            f"using k = {k_rule_value} (recorded in the manifest under zsf.k_rule_raw)")
    return ZSFSummary(n_zsf, n_train, k_max, k_rule_value, k_rule_raw)


def split_entry(role: str, n: int, source: dict, classnames: list[str] | None = None,
                projection: ClassProjection | None = None) -> dict:
    """One split's entry under the manifest's `splits`."""
    return {"role": role, "n": int(n), "classnames": classnames,
            "projection": projection.to_json() if projection else None, "source": source}


def bundle_manifest(name: str, settings: AssembleSettings, zsf: ZSFSummary, splits: dict[str, dict],
                    feature_dim: int, embedding: dict | None, extra: dict) -> dict:
    """The manifest of the staged arrays, without the derived keys (`finish` adds them).
    extra: the run's own keys (classnames, templates, models, preprocessing, config)."""
    return {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "num_classes": len(extra["classnames"]),
        "feature_dim": int(feature_dim),
        "splits": splits,
        "zsf": {"size": int(zsf.size), "train_size": int(zsf.train_size), "k_rule": settings.k_rule,
                "k_rule_value": int(zsf.k_rule_value), "k_rule_raw": int(zsf.k_rule_raw)},
        "ensemble": {"wse_alphas": settings.wse_alphas, "ose_alphas": settings.ose_alphas, "k_max": int(zsf.k_max),
                     "distance": settings.distance, "calibration": settings.calibration,
                     "weight_rule": settings.weight_rule},
        "embedding": embedding,
        "versions": versions(),
        **extra,
    }
