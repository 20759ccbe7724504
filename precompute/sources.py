"""Datasets and class lists named in a config, turned into ImageSets."""

from __future__ import annotations

import csv
import difflib
import inspect
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from precompute.config import Config, ConfigError, DatasetSection
from vrf_core.data import ClassProjection, DatasetError, ImageSet, csv_manifest, image_folder, split_indices
from vrf_core.datasets import CLASSNAMES, LOADERS
from vrf_core.datasets.hf import hf_dataset
from vrf_core.datasets.webdataset import webdataset_shards
from vrf_core.filesafe import atomic_write_bytes
from vrf_core.progress import log

# (dataset name, images) -> [(ref, reason)] of the files that cannot be decoded
Scan = Callable[[str, ImageSet], list[tuple[str, str]]]
LISTED = 50  # unreadable files listed per dataset in the error message (all of them go to the listing file)
BUILTIN_OPTIONS = {"folder": ("folders", "projection"), "csv": ("root",)}
CLASSNAME_COLUMNS = ("name", "classname", "class")  # a class-name CSV's header may name one of these
SHOWN_CLASSES = 8  # class names quoted when folders and class names disagree
SHARDED_SOURCES = {"webdataset": webdataset_shards, "hf": hf_dataset}  # path may also be a glob or brace pattern


def dataset_types() -> dict[str, tuple[str, ...]]:
    """Every dataset `type` a config may name -> the options it takes."""
    layouts = {t: tuple(list(inspect.signature(fn.__wrapped__).parameters)[3:]) for t, fn in LOADERS.items()}
    sharded = {t: tuple(list(inspect.signature(fn).parameters)[3:]) for t, fn in SHARDED_SOURCES.items()}
    return {**BUILTIN_OPTIONS, **layouts, **sharded}


def classnames_origin(spec, base_dir: Path) -> str:
    """Where [classes] names come from, as error messages state it."""
    if isinstance(spec, list):
        return "the inline list [classes] names"
    if spec in CLASSNAMES:
        return f"the registered class list {spec!r}"
    return str(Path(spec).expanduser() if Path(spec).expanduser().is_absolute() else base_dir / spec)


def resolve_classnames(spec, base_dir: Path, where: str = "config") -> list[str]:
    """[classes] names: a registered list (vrf_core.datasets.CLASSNAMES: 'imagenet', 'cifar10',
    'entity30'), an inline list, or a file relative to the config's folder: `.json` a list of strings;
    `.csv` one name per row of its single column or, when the first row names a column `name`,
    `classname` or `class` (any case), that column of the rows below; any other file (`.txt`) one
    name per line. An empty list, an empty name or a name given twice is an error naming the file."""
    key = f"{where}: classes.names = {json.dumps(spec)}"
    if isinstance(spec, list):
        return _checked_classnames(spec, key, classnames_origin(spec, base_dir))
    if not isinstance(spec, str):
        raise ConfigError(f"{key} must be a class list name, a file name or a list of names")
    if spec in CLASSNAMES:
        return list(CLASSNAMES[spec]())
    path = Path(classnames_origin(spec, base_dir))
    if not path.is_file():
        close = difflib.get_close_matches(spec, list(CLASSNAMES), n=1)
        hint = f"did you mean {json.dumps(close[0])}?" if close else "fix the name or the path"
        raise ConfigError(f"{key} is neither a registered class list ({', '.join(sorted(CLASSNAMES))}) nor an "
                          f"existing file ({path}, relative to the config's folder); {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return _checked_classnames(_parse_classname_file(path, text, key), key, str(path))


def _parse_classname_file(path: Path, text: str, key: str) -> list:
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key}: {path} is not valid JSON ({exc.msg} at line {exc.lineno}); a .json "
                              'class-name file holds a list of strings, e.g. ["cat", "dog"]') from None
        if not isinstance(names, list):
            raise ConfigError(f"{key}: {path} holds a JSON {type(names).__name__}; a .json class-name file "
                              'holds a list of strings, e.g. ["cat", "dog"]')
        return names
    if path.suffix.lower() == ".csv":
        rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
        header = [cell.lower() for cell in rows[0]] if rows else []
        named = [c for c in CLASSNAME_COLUMNS if c in header]
        if named:
            column = header.index(named[0])
            return [row[column] if column < len(row) else "" for row in rows[1:]]
        if any(len(row) != 1 for row in rows):
            raise ConfigError(f"{key}: {path} has rows of several columns and no header naming the class-name "
                              f"column; add a first row with a column called {' or '.join(CLASSNAME_COLUMNS)}")
        return [row[0] for row in rows]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _checked_classnames(names: list, key: str, origin: str) -> list[str]:
    if not names:
        raise ConfigError(f"{key}: {origin} lists no class names; give at least one")
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"{key}: entry {bad[0] + 1} of {origin} ({json.dumps(names[bad[0]])}) is not a "
                          "class name; every entry must be a non-empty string")
    names = [n.strip() for n in names]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise ConfigError(f"{key}: {origin} lists {n!r} twice (entries {seen[n] + 1} and {i + 1}); "
                              "each class needs its own name")
        seen[n] = i
    return names


def class_list_summary(classnames: list[str], origin: str) -> str:
    """'the 4 class names read from <origin>: 'a', 'b', ...' (the first few)."""
    shown = ", ".join(repr(c) for c in classnames[:SHOWN_CLASSES])
    more = f", ... ({len(classnames) - SHOWN_CLASSES} more)" if len(classnames) > SHOWN_CLASSES else ""
    return f"the {len(classnames)} class names read from {origin}: {shown}{more}"


def _folder_key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def _closest_classes(folder: str, classnames: list[str]) -> str:
    keys = {_folder_key(c): c for c in classnames}
    close = [keys[k] for k in difflib.get_close_matches(_folder_key(folder), list(keys), n=3, cutoff=0.4)]
    return f"{folder!r} (closest: {', '.join(map(repr, close))})" if close else f"{folder!r} (no class name is close)"


def folder_dataset(name: str, root: Path, classnames: list[str], section: DatasetSection,
                   classes_from: str = "[classes] names") -> ImageSet:
    """A folder with one subfolder per class. Subfolders are matched to the model's class names
    (case and '_' vs ' ' ignored), listed explicitly in `options.folders` (class-index order), or
    declared in `options.projection` (folder -> model class names it stands for: a dataset whose
    classes differ from the model's). Folders covering only some classes get a subset projection.
    `classes_from` says where the class names came from, for the error when they do not match."""
    opts = dict(section.options)
    folders = opts.pop("folders", None)
    declared = opts.pop("projection", None)
    if opts:
        raise ConfigError(f"data {name}: unknown options {sorted(opts)} for type 'folder' "
                          f"(known: {', '.join(BUILTIN_OPTIONS['folder'])})")
    if folders is not None:
        if len(folders) != len(classnames):
            raise ConfigError(f"data {name}: options.folders lists {len(folders)} folders for "
                              f"{class_list_summary(classnames, classes_from)}")
        return image_folder(name, root, classnames, folders, crop_border=section.crop_border)
    if not root.is_dir():
        raise DatasetError(f"{name}: image folder {root} does not exist; expected {root}/<class>/<image>")
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir())
    index = {_folder_key(c): j for j, c in enumerate(classnames)}
    if declared is not None:
        return _declared_projection(name, root, classnames, on_disk, declared, index, section)
    unknown = [f for f in on_disk if _folder_key(f) not in index]
    if unknown:
        listed = "; ".join(_closest_classes(f, classnames) for f in unknown[:5])
        more = f"; ... ({len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise DatasetError(f"{name}: {len(unknown)} of the {len(on_disk)} folders under {root} match no class "
                           f"name: {listed}{more}. Compared with {class_list_summary(classnames, classes_from)}. "
                           "Rename the folders to class names, list the folders in class order with "
                           "options.folders, or declare what each folder stands for with options.projection "
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
    """The ImageSet of one [data.*] section (its type, path and options were checked with the config)."""
    root = cfg.resolve(section.path)
    if section.type == "folder":
        return folder_dataset(name, root, classnames, section, classnames_origin(cfg.classes.names, cfg.base_dir))
    if section.type == "csv":
        images_root = cfg.resolve(section.options["root"]) if "root" in section.options else None
        return csv_manifest(name, root, classnames, root=images_root, crop_border=section.crop_border)
    if section.type in SHARDED_SOURCES:
        return SHARDED_SOURCES[section.type](name, root, classnames, **section.options)
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
