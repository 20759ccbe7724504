"""The run configuration: a TOML file parsed into dataclasses.

Every section is a dataclass; an unknown key is an error that names the section
and suggests the closest known key, and every value is checked at parse time
(precompute/config_checks.py). Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrf_core.finetune import FinetuneConfig


class ConfigError(ValueError):
    """The config file is wrong; the message names the key and the fix."""


@dataclass
class RunSection:
    name: str = "run"
    out: str = "bundles/run"
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    workers: int = 2


@dataclass
class ModelSection:
    name: str = ""
    pretrained: str | None = None
    precision: str = "auto"


@dataclass
class ClassesSection:
    names: Any = "imagenet"
    templates: Any = "openai_imagenet"


@dataclass
class DatasetSection:
    type: str = "folder"
    path: str = ""
    options: dict = field(default_factory=dict)
    val_holdout: int = 0          # train only: samples held out for tuning when no [data.val]
    crop_border: int = 0
    skip_unreadable: bool = False


@dataclass
class FinetuneSection(FinetuneConfig):
    checkpoint: str = ""          # an already fine-tuned ImageClassifier state dict: skip training


@dataclass
class EnsembleSection:
    wse_alphas: list = field(default_factory=lambda: [round(i / 10, 2) for i in range(11)])
    ose_alphas: list = field(default_factory=lambda: [round(i / 10, 2) for i in range(11)])
    k_max: int = 100
    k_rule: Any = "reference"
    distance: str = "squared"
    calibration: str = "confidence"
    weight_rule: str = "sigmoid"
    knn_backend: str = "auto"


@dataclass
class BundleSection:
    train_sample: int = 50000
    thumb_size: int = 128
    umap: bool = True
    umap_max_points: int = 20000
    umap_neighbors: int = 15


@dataclass
class Config:
    run: RunSection
    model: ModelSection
    classes: ClassesSection
    train: DatasetSection
    test: DatasetSection
    val: DatasetSection | None = None
    ood: dict[str, DatasetSection] = field(default_factory=dict)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    bundle: BundleSection = field(default_factory=BundleSection)
    base_dir: Path = Path(".")

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["base_dir"] = str(self.base_dir)
        return d


def _section(cls, raw: Any, key: str, where: str):
    """A [section] as its dataclass; an unknown key names the closest known one. Values: config_checks."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {key} must be a table (a [{key}] section), got {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    for name in raw:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key}.{name}{hint}")
    return cls(**raw)


TOP_LEVEL = ("run", "model", "classes", "data", "finetune", "ensemble", "bundle")
DATA_ROLES = ("train", "val", "test", "ood")


def _unknown_names(where: str, raw: dict) -> None:
    for key in raw:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(key, TOP_LEVEL, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f"; known sections: {', '.join(TOP_LEVEL)}"
            raise ConfigError(f"{where}: unknown section [{key}]{hint}")
    data = raw.get("data", {})
    if not isinstance(data, dict) or not isinstance(data.get("ood", {}), dict):
        raise ConfigError(f"{where}: data must hold tables [data.train], [data.test], [data.val] and "
                          "[data.ood.<name>]")
    for key in data:
        if key not in DATA_ROLES:
            close = difflib.get_close_matches(key, DATA_ROLES, n=1)
            hint = f"; did you mean [data.{close[0]}]?" if close else ""
            raise ConfigError(f"{where}: unknown dataset role [data.{key}]{hint} (train, val, test, ood.<name>)")
    for needed in ("train", "test"):
        if needed not in data:
            raise ConfigError(f"{where}: [data.{needed}] is required")


def parse_config(raw: dict, base_dir: Path, where: str = "config") -> Config:
    """The config as dataclasses, every key and value checked (precompute/config_checks.py) before any
    model or dataset is opened. `where` names the config in errors."""
    # config_checks reads class lists through precompute.sources, which imports this module.
    from precompute.config_checks import check_config

    _unknown_names(where, raw)
    data = raw["data"]
    cfg = Config(
        run=_section(RunSection, raw.get("run", {}), "run", where),
        model=_section(ModelSection, raw.get("model", {}), "model", where),
        classes=_section(ClassesSection, raw.get("classes", {}), "classes", where),
        train=_section(DatasetSection, data["train"], "data.train", where),
        test=_section(DatasetSection, data["test"], "data.test", where),
        val=_section(DatasetSection, data["val"], "data.val", where) if "val" in data else None,
        ood={n: _section(DatasetSection, d, f"data.ood.{n}", where) for n, d in data.get("ood", {}).items()},
        finetune=_section(FinetuneSection, raw.get("finetune", {}), "finetune", where),
        ensemble=_section(EnsembleSection, raw.get("ensemble", {}), "ensemble", where),
        bundle=_section(BundleSection, raw.get("bundle", {}), "bundle", where),
        base_dir=base_dir,
    )
    check_config(cfg, where)
    return cfg


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """A TOML file's tables; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_config(path: str | Path) -> Config:
    return parse_config(read_toml(path), Path(path).resolve().parent, str(path))
