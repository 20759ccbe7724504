"""The generative model behind every synthetic bundle: class prototypes, a zero-shot and a
fine-tuned encoder, their classifier heads, and a domain direction along which a shift
moves the features.

A sample of class y at shift s has, for each model m, the feature
    f_m = unit(prototype_y + (spread_m + spread_growth_m * s) * g + drift_m * s * domain),
with the same noise g for both models (they see the same image). The fine-tuned encoder
is sharper in distribution (smaller spread) and follows the domain direction more (larger
drift): accurate in distribution, brittle under shift, the regime VRF addresses. g may lie
partly in a low-rank subspace of its class, so that nearest neighbours share the class as
with CLIP features. Logits are `logit_scale * f_m @ head_m.T`; a WiSE-FT model at alpha
interpolates features and heads (weight space, not output space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bump when the same seed and settings give other arrays: benchmark bundles written by an
# older generator are rebuilt.
GENERATOR_VERSION = 6


@dataclass(frozen=True)
class Encoder:
    spread: float  # noise scale around the class prototype in distribution
    spread_growth: float  # added noise scale per unit of shift
    drift: float  # displacement along the domain direction per unit of shift
    head_noise: float  # how far the classifier head's rows lie from the prototypes


@dataclass(frozen=True)
class Regime:
    """How the two models behave; the numbers are calibrated for a number of classes and a dimension."""

    zs: Encoder
    ft: Encoder
    class_noise: float = 0.0  # weight of the noise in a rank-`rank` subspace of the sample's class
    iso_noise: float = 1.0  # weight of the isotropic noise
    rank: int = 16
    logit_scale: float = 30.0


# 20 classes in 64-d (the dashboard tests' bundle): zero-shot about 42 %, fine-tuned 95 % in distribution,
# fine-tuned below zero-shot from shift 0.8 on.
TOY = Regime(zs=Encoder(3.3, 0.0, 0.2, 1.05), ft=Encoder(2.1, 5.4, 1.1, 0.0))
# 1000 classes in 512-d (ImageNet's shapes): about 66 / 80 % (zero-shot / fine-tuned) in distribution,
# 51 / 35 % at the largest shift.
IMAGENET_LIKE = Regime(zs=Encoder(5.6, 0.84, 0.5, 0.5), ft=Encoder(5.2, 2.6, 2.0, 0.3),
                       class_noise=0.95, iso_noise=0.3, logit_scale=100.0)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class World:
    """classes x dim prototypes and both models' heads, drawn from `rng` (which later draws the samples)."""

    def __init__(self, classes: int, dim: int, regime: Regime, rng: np.random.Generator):
        self.classes, self.dim, self.regime, self.rng = classes, dim, regime, rng
        self.rank = min(regime.rank, dim)
        self.protos = unit(rng.standard_normal((classes, dim)))
        self.basis = (np.linalg.qr(rng.standard_normal((classes, dim, self.rank), dtype=np.float32))[0]
                      if regime.class_noise else None)  # (C, D, r)
        self.heads = {m: unit(self.protos + enc.head_noise * self._noise(classes))
                      for m, enc in (("zs", regime.zs), ("ft", regime.ft))}
        self.domain = unit(rng.standard_normal(dim))
        self.classnames = [f"class_{i:0{max(3, len(str(classes - 1)))}d}" for i in range(classes)]

    def _noise(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)

    def features(self, labels: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(f_zs, f_ft), each (n, D) float32 L2-normalised. labels: (n,) model classes; shift: (n,)."""
        r = self.regime
        g = r.iso_noise * self._noise(len(labels))
        if self.basis is not None:
            z = self.rng.standard_normal((len(labels), self.rank, 1), dtype=np.float32) / np.sqrt(self.rank)
            g += r.class_noise * (self.basis[labels] @ z)[:, :, 0]
        s = np.asarray(shift, np.float32)[:, None]
        base = self.protos[labels]
        return tuple(unit(base + (enc.spread + enc.spread_growth * s) * g + enc.drift * s * self.domain)
                     for enc in (r.zs, r.ft))

    def logits(self, features: np.ndarray, model: str) -> np.ndarray:
        """(n, C) float32 logits of model "zs" or "ft"."""
        return self.regime.logit_scale * features @ self.heads[model].T

    def wse_logits(self, f_zs: np.ndarray, f_ft: np.ndarray, alpha: float) -> np.ndarray:
        """(n, C) logits of the weight-space ensemble at alpha: features and head interpolated."""
        head = unit((1 - alpha) * self.heads["zs"] + alpha * self.heads["ft"])
        return self.regime.logit_scale * unit((1 - alpha) * f_zs + alpha * f_ft) @ head.T
