"""Datasets and class lists named in a config, turned into ImageSets."""

from __future__ import annotations

from pathlib import Path

from precompute.config import Config, ConfigError, DatasetSection
from vrf_core.data import ClassProjection, DatasetError, ImageSet, csv_manifest, image_folder, split_indices


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
    (case and '_' vs ' ' ignored), or listed explicitly in `options.folders` (class-index order).
    A dataset whose folders cover only some classes gets a subset projection automatically."""
    opts = dict(section.options)
    folders = opts.pop("folders", None)
    if opts:
        raise ConfigError(f"data {name}: unknown options {sorted(opts)} for type 'folder' (known: folders)")
    if folders is not None:
        if len(folders) != len(classnames):
            raise ConfigError(f"data {name}: options.folders lists {len(folders)} folders for "
                              f"{len(classnames)} classes")
        return image_folder(name, root, classnames, folders, crop_border=section.crop_border)
    if not root.is_dir():
        raise DatasetError(f"{name}: image folder {root} does not exist; expected {root}/<class>/<image>")
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir())
    index = {_folder_key(c): j for j, c in enumerate(classnames)}
    unknown = [f for f in on_disk if _folder_key(f) not in index]
    if unknown:
        raise DatasetError(f"{name}: folders {unknown[:5]} under {root} match no class name; rename them to class "
                           "names or list the folders in class order with options.folders")
    matched = sorted(on_disk, key=lambda f: index[_folder_key(f)])
    ids = [index[_folder_key(f)] for f in matched]
    projection = None if len(ids) == len(classnames) else ClassProjection.subset(ids)
    return image_folder(name, root, [classnames[j] for j in ids], matched, projection, section.crop_border)


def build_dataset(name: str, section: DatasetSection, cfg: Config, classnames: list[str]) -> ImageSet:
    root = cfg.resolve(section.path) if section.path else None
    if root is None:
        raise ConfigError(f"data {name}: path is required")
    if section.type == "folder":
        return folder_dataset(name, root, classnames, section)
    if section.type == "csv":
        return csv_manifest(name, root, classnames, root=section.options.get("root"),
                            crop_border=section.crop_border)
    try:
        from vrf_core.datasets import LOADERS
    except ImportError:
        LOADERS = {}
    if section.type not in LOADERS:
        known = ["folder", "csv", *sorted(LOADERS)]
        raise ConfigError(f"data {name}: unknown type {section.type!r}; known types: {', '.join(known)}")
    return LOADERS[section.type](name, root, classnames, **section.options)


def build_datasets(cfg: Config, classnames: list[str]) -> tuple[ImageSet, ImageSet, dict[str, tuple[str, ImageSet]]]:
    """(train used for fine-tuning, val, {split: (role, set)} for every evaluation split)."""
    full_train = build_dataset("train", cfg.train, cfg, classnames)
    if full_train.projection is not None:
        raise ConfigError("data.train must cover every class of [classes]; its folders cover only "
                          f"{full_train.projection.num_classes} of {len(classnames)}")
    if cfg.val is not None:
        train, val = full_train, build_dataset("val", cfg.val, cfg, classnames)
    else:
        keep, held = split_indices(len(full_train), cfg.train.val_holdout, cfg.run.seed)
        train, val = full_train.subset(keep, "train"), full_train.subset(held, "val")
        val.notes["carved_from_train"] = {"holdout": cfg.train.val_holdout, "seed": cfg.run.seed}
    evals = {"val": ("id_val", val), "test": ("id_test", build_dataset("test", cfg.test, cfg, classnames))}
    for name, section in cfg.ood.items():
        evals[name] = ("ood", build_dataset(name, section, cfg, classnames))
    return train, val, evals
