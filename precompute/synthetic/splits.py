"""One split of a synthetic world as an extraction would produce it (`precompute.assemble.Extracted`):
labels, both models' features and logits, the WSE predictions, and the class projection of a
dataset that covers only some of the model's classes (ImageNet-A/R) or groups them (ObjectNet).

Rows are generated in chunks, so a split of any size needs only its outputs in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precompute.assemble import Extracted, wse_predictions
from precompute.synthetic.world import World
from vrf_core.data import ClassProjection

CHUNK = 4096  # rows generated at a time (the class subspaces gathered per row: 128 MiB at 512-d, rank 16)


@dataclass(frozen=True)
class SetSpec:
    name: str
    role: str  # id_train, id_val, id_test or ood
    n: int
    shift: float  # 0: in distribution; each sample's shift is drawn around it
    classes: int = 0  # a dataset of this many own classes (0: the model's classes)
    grouped: bool = False  # each own class is the max over a group of model classes (ObjectNet), else a subset


def draw_projection(world: World, spec: SetSpec) -> ClassProjection | None:
    """Which model classes the dataset's own classes are: a sorted subset, or groups that cover
    31.3 % of the model's classes (as ObjectNet's 113 classes cover 313 of ImageNet's 1000)."""
    if not spec.classes:
        return None
    rng = world.rng
    if not spec.grouped:
        return ClassProjection.subset(np.sort(rng.choice(world.classes, spec.classes, replace=False)).tolist())
    members = rng.choice(world.classes, max(spec.classes, round(0.313 * world.classes)), replace=False)
    # every group gets at least one member
    owner = np.concatenate([np.arange(spec.classes), rng.integers(0, spec.classes, len(members) - spec.classes)])
    return ClassProjection(tuple(tuple(int(i) for i in np.sort(members[owner == j])) for j in range(spec.classes)))


def make_split(world: World, spec: SetSpec, wse_alphas: list[float] | None = None,
               logits: bool = True) -> tuple[Extracted, np.ndarray]:
    """The split's arrays, and each sample's shift (n,). Features (n, D) float32; logits (n, C)
    over the model's classes (readers project them, as for real datasets); `preds_wse` (A, n) in
    the dataset's own classes. logits=False: labels and features only."""
    rng = world.rng
    projection = draw_projection(world, spec)
    labels = rng.integers(0, projection.num_classes if projection else world.classes, spec.n)
    labels_model, classnames = labels, None
    if projection is not None:  # each sample is of a random member of its class's group
        sizes = np.array([len(g) for g in projection.groups])
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        members = np.concatenate(projection.groups)
        labels_model = members[first[labels] + (rng.random(spec.n) * sizes[labels]).astype(np.int64)]
        classnames = [world.classnames[g[0]] if len(g) == 1 else f"group_{j:03d}"
                      for j, g in enumerate(projection.groups)]
    shift = spec.shift * rng.uniform(0.5, 1.5, spec.n) if spec.shift else np.zeros(spec.n)
    out = {f"features_{m}": np.empty((spec.n, world.dim), np.float32) for m in ("zs", "ft")}
    if logits:
        out.update({f"logits_{m}": np.empty((spec.n, world.classes), np.float32) for m in ("zs", "ft")})
    if logits and wse_alphas:
        out["preds_wse"] = np.empty((len(wse_alphas), spec.n), np.int32)
    for s in range(0, spec.n, CHUNK):
        e = min(s + CHUNK, spec.n)
        f_zs, f_ft = world.features(labels_model[s:e], shift[s:e])
        out["features_zs"][s:e], out["features_ft"][s:e] = f_zs, f_ft
        if logits:
            out["logits_zs"][s:e], out["logits_ft"][s:e] = world.logits(f_zs, "zs"), world.logits(f_ft, "ft")
        if "preds_wse" in out:
            out["preds_wse"][:, s:e] = wse_predictions([world.wse_logits(f_zs, f_ft, a) for a in wse_alphas],
                                                       projection)
    return Extracted(role=spec.role, labels=labels.astype(np.int64),
                     refs=np.array([f"{spec.name}/{i:06d}.JPEG" for i in range(spec.n)]), projection=projection,
                     classnames=classnames, source={"synthetic": True, "shift": spec.shift}, **out), shift
