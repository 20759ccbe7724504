"""What every layout loader shares: option checking, the expected layout in every error, sub-root lookup."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from vrf_core.data import DatasetError, ImageSet

Loader = Callable[..., ImageSet]


def dataset_loader(layout: str) -> Callable[[Loader], Loader]:
    """Wraps `fn(name, path, model_classnames, **options)`: rejects unknown options by name and appends
    `layout` (the expected on-disk structure) to every `DatasetError` the loader raises."""

    def wrap(fn: Loader) -> Loader:
        known = list(inspect.signature(fn).parameters)[3:]

        @functools.wraps(fn)
        def load(name: str, path: str | Path, model_classnames: Sequence[str], **options) -> ImageSet:
            unknown = sorted(set(options) - set(known))
            if unknown:
                raise DatasetError(
                    f"{name}: unknown option(s) {unknown} for dataset type {fn.__name__!r}; "
                    f"known options: {', '.join(known) or 'none'}"
                )
            try:
                return fn(name, Path(path).expanduser(), list(model_classnames), **options)
            except DatasetError as exc:
                raise DatasetError(f"{exc}\n  expected layout for type {fn.__name__!r}: {layout}") from exc

        load.layout = layout
        return load

    return wrap


def choice(name: str, option: str, value, allowed: Sequence) -> str:
    if value not in allowed:
        raise DatasetError(f"{name}: option {option} = {value!r} is not one of {list(allowed)}")
    return value


def require_model_classes(name: str, model_classnames: Sequence[str], count: int, which: str) -> None:
    """Label indices of these layouts are positions in a fixed class list, so the model must use that list."""
    if len(model_classnames) != count:
        raise DatasetError(
            f"{name}: this dataset type labels images by {which}'s {count} classes in their standard order, "
            f"but the model has {len(model_classnames)} class names; set [classes] names to that list"
        )


def descend(path: Path, *subfolders: str) -> Path:
    """`path/<subfolder>` for the first listed subfolder that exists (an archive's top folder), else `path`."""
    for sub in subfolders:
        if (path / sub).is_dir():
            return path / sub
    return path


def require_dir(name: str, folder: Path) -> Path:
    if not folder.is_dir():
        raise DatasetError(f"{name}: folder {folder} does not exist")
    return folder


def require_files(name: str, folder: Path, filenames: Sequence[str]) -> list[Path]:
    require_dir(name, folder)
    missing = [f for f in filenames if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"{name}: {folder} lacks {missing}")
    return [folder / f for f in filenames]
