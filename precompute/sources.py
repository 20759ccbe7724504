"""Datasets and class lists named in a config, turned into ImageSets."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from precompute.config import Config, ConfigError, DatasetSection
from vrf_core.bundle import atomic_write_bytes
from vrf_core.data import ClassProjection, DatasetError, ImageSet, csv_manifest, image_folder, split_indices
from vrf_core.progress import log

# (dataset name, images) -> [(ref, reason)] of the files that cannot be decoded
Scan = Callable[[str, ImageSet], list[tuple[str, str]]]
LISTED = 50  # unreadable files listed per dataset in the error message (all of them go to the listing file)


def resolve_classnames(spec, base_dir: Path) -> list[str]:
    """'imagenet' (open_clip's list), a registered suite name, a text file (one name per line) or a list."""
    if isinstance(spec, list):
        return [str(s) for s in spec]
    if spec == "imagenet":
        import open_clip

        return list(open_clip.IMAGENET_CLASSNAMES)
    try:
        from vrf_core.datasets import CLASSNAMES
    except ImportError:
        CLASSNAMES = {}
    if spec in CLASSNAMES:
        return list(CLASSNAMES[spec]())
    path = Path(spec) if Path(spec).is_absolute() else base_dir / spec
    if not path.is_file():
        raise ConfigError(f"classes.names: {spec!r} is not a known class list ('imagenet', "
                          f"{', '.join(sorted(CLASSNAMES))}) nor an existing file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _folder_key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def folder_dataset(name: str, root: Path, classnames: list[str], section: DatasetSection) -> ImageSet:
    """A folder with one subfolder per class. Subfolders are matched to the model's class names
    (case and '_' vs ' ' ignored), listed explicitly in `options.folders` (class-index order), or
    declared in `options.projection` (folder -> model class names it stands for: a dataset whose
    classes differ from the model's). Folders covering only some classes get a subset projection."""
    opts = dict(section.options)
    folders = opts.pop("folders", None)
    declared = opts.pop("projection", None)
    if opts:
        raise ConfigError(f"data {name}: unknown options {sorted(opts)} for type 'folder' (known: folders, projection)")
    if folders is not None:
        if len(folders) != len(classnames):
            raise ConfigError(f"data {name}: options.folders lists {len(folders)} folders for "
                              f"{len(classnames)} classes")
        return image_folder(name, root, classnames, folders, crop_border=section.crop_border)
    if not root.is_dir():
        raise DatasetError(f"{name}: image folder {root} does not exist; expected {root}/<class>/<image>")
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir())
    index = {_folder_key(c): j for j, c in enumerate(classnames)}
    if declared is not None:
        return _declared_projection(name, root, classnames, on_disk, declared, index, section)
    unknown = [f for f in on_disk if _folder_key(f) not in index]
    if unknown:
        close = {f: difflib.get_close_matches(_folder_key(f), list(index), n=1) for f in unknown[:5]}
        hints = "; ".join(f"{f!r} (closest class: {c[0]!r})" if c else repr(f) for f, c in close.items())
        raise DatasetError(f"{name}: folders under {root} match no class name of [classes]: {hints}. The class "
                           "lists disagree: rename the folders to class names, list the folders in class order "
                           "with options.folders, or declare what each folder stands for with options.projection "
                           "= {folder = [model class, ...]}")
    matched = sorted(on_disk, key=lambda f: index[_folder_key(f)])
    ids = [index[_folder_key(f)] for f in matched]
    projection = None if len(ids) == len(classnames) else ClassProjection.subset(ids)
    return image_folder(name, root, [classnames[j] for j in ids], matched, projection, section.crop_border)


def _declared_projection(name: str, root: Path, classnames: list[str], on_disk: list[str], declared,
                         index: dict[str, int], section: DatasetSection) -> ImageSet:
    """options.projection = {folder = "model class" or [model classes]}: the dataset's class j is folder j
    (in the table's order) and its logit is the max over the listed model classes (ObjectNet's rule)."""
    if not isinstance(declared, dict) or not declared:
        raise ConfigError(f"data {name}: options.projection must be a table folder = [model class, ...]")
    groups = []
    for folder, targets in declared.items():
        targets = [targets] if isinstance(targets, str) else list(targets)
        bad = [t for t in targets if _folder_key(t) not in index]
        if bad or not targets:
            raise ConfigError(f"data {name}: options.projection.{folder} names {bad or 'no'} model class(es) "
                              "that are not in [classes]")
        groups.append(tuple(index[_folder_key(t)] for t in targets))
    extra = sorted(set(on_disk) - set(declared))
    if extra:
        raise DatasetError(f"{name}: folders {extra[:5]} under {root} are not in options.projection; add them")
    return image_folder(name, root, list(declared), list(declared), ClassProjection(tuple(groups)),
                        section.crop_border)


def build_dataset(name: str, section: DatasetSection, cfg: Config, classnames: list[str]) -> ImageSet:
    root = cfg.resolve(section.path) if section.path else None
    if root is None:
        raise ConfigError(f"data {name}: path is required")
    if section.type == "folder":
        return folder_dataset(name, root, classnames, section)
    if section.type == "csv":
        unknown = sorted(set(section.options) - {"root"})
        if unknown:
            raise ConfigError(f"data {name}: unknown options {unknown} for type 'csv' (known: root)")
        images_root = cfg.resolve(section.options["root"]) if "root" in section.options else None
        return csv_manifest(name, root, classnames, root=images_root, crop_border=section.crop_border)
    try:
        from vrf_core.datasets import LOADERS
    except ImportError:
        LOADERS = {}
    if section.type not in LOADERS:
        known = ["folder", "csv", *sorted(LOADERS)]
        raise ConfigError(f"data {name}: unknown type {section.type!r}; known types: {', '.join(known)}")
    return LOADERS[section.type](name, root, classnames, **section.options)


def section_name(name: str) -> str:
    return f"[data.{name}]" if name in ("train", "val", "test") else f"[data.ood.{name}]"


def drop_unreadable(sets: dict[str, ImageSet], sections: dict[str, DatasetSection], scan: Scan,
                    listing: Path | None) -> tuple[dict[str, ImageSet], dict[str, list[dict]]]:
    """Scan every dataset before any expensive stage. Unreadable files stop the run with one error listing
    them all (the complete list also goes to `listing`), unless the dataset's section says
    skip_unreadable = true: then they are left out and returned, to be recorded in the manifest."""
    found = {name: scan(name, images) for name, images in sets.items()}
    stop = {name: bad for name, bad in found.items() if bad and not sections[name].skip_unreadable}
    if stop:
        lines = []
        for name, bad in stop.items():
            lines.append(f"{section_name(name)} ({sets[name].root}): {len(bad)} unreadable file(s)")
            lines += [f"  {ref}: {reason}" for ref, reason in bad[:LISTED]]
            if len(bad) > LISTED:
                lines.append(f"  ... and {len(bad) - LISTED} more")
        if listing is not None:
            rows = [f"{sets[n].root}/{ref}\t{why}" for n, bad in stop.items() for ref, why in bad]
            atomic_write_bytes(listing, ("\n".join(rows) + "\n").encode())
        raise DatasetError(
            "unreadable, truncated or non-image files found before any work started; fix or remove them, or set "
            "skip_unreadable = true in the dataset's section to leave them out (they are then listed in the "
            f"bundle's manifest){f'. Full list: {listing}' if listing is not None else ''}\n" + "\n".join(lines))
    skipped = {name: [{"ref": r, "reason": why} for r, why in bad] for name, bad in found.items() if bad}
    for name, bad in skipped.items():
        images = sets[name].without([b["ref"] for b in bad])
        log(f"{section_name(name)}: skipping {len(bad)} unreadable file(s) (skip_unreadable = true)")
        if not len(images):
            raise DatasetError(f"{section_name(name)}: every image under {images.root} is unreadable")
        empty = np.flatnonzero(np.bincount(images.labels, minlength=len(images.classnames)) == 0)
        if name == "train" and len(empty):
            raise DatasetError(f"{section_name(name)}: class {images.classnames[empty[0]]!r} has no readable "
                               "training image left after skipping unreadable files; fix or add images")
        sets[name] = images
    return sets, skipped


def build_datasets(cfg: Config, classnames: list[str], scan: Scan | None = None, listing: Path | None = None
                   ) -> tuple[ImageSet, ImageSet, dict[str, tuple[str, ImageSet]], dict[str, list[dict]]]:
    """(train used for fine-tuning, val, {split: (role, set)} for every evaluation split, unreadable files
    skipped per dataset). With `scan`, every dataset is checked for unreadable files first."""
    sections = {"train": cfg.train, **({"val": cfg.val} if cfg.val is not None else {}), "test": cfg.test, **cfg.ood}
    sets = {name: build_dataset(name, section, cfg, classnames) for name, section in sections.items()}
    if sets["train"].projection is not None:
        raise ConfigError("data.train must cover every class of [classes]; its folders cover only "
                          f"{sets['train'].projection.num_classes} of {len(classnames)}")
    skipped: dict[str, list[dict]] = {}
    if scan is not None:
        sets, skipped = drop_unreadable(sets, sections, scan, listing)
    full_train = sets["train"]
    if cfg.val is not None:
        train, val = full_train, sets["val"]
    else:
        keep, held = split_indices(len(full_train), cfg.train.val_holdout, cfg.run.seed)
        train, val = full_train.subset(keep, "train"), full_train.subset(held, "val")
        val.notes["carved_from_train"] = {"holdout": cfg.train.val_holdout, "seed": cfg.run.seed}
    evals = {"val": ("id_val", val), "test": ("id_test", sets["test"])}
    for name in cfg.ood:
        evals[name] = ("ood", sets[name])
    return train, val, evals, skipped
