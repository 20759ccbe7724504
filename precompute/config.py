"""The run configuration: a TOML file parsed into dataclasses.

Every section is a dataclass; an unknown key is an error that names the section
and suggests the closest known key. Relative paths resolve against the config
file's folder.
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


def _section(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table (a [section]), got {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key {where}.{key}{hint}")
    try:
        obj = cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{f.name} must be a number, got {value!r}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{f.name} must be true or false, got {value!r}")
    return obj


TOP_LEVEL = ("run", "model", "classes", "data", "finetune", "ensemble", "bundle")


def parse_config(raw: dict, base_dir: Path, where: str = "config") -> Config:
    for key in raw:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(key, TOP_LEVEL, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f"; known sections: {', '.join(TOP_LEVEL)}"
            raise ConfigError(f"{where}: unknown section [{key}]{hint}")
    data = raw.get("data", {})
    for key in data:
        if key not in ("train", "val", "test", "ood"):
            close = difflib.get_close_matches(key, ["train", "val", "test", "ood"], n=1)
            hint = f"; did you mean [data.{close[0]}]?" if close else ""
            raise ConfigError(f"{where}: unknown dataset role [data.{key}]{hint} (train, val, test, ood.<name>)")
    for needed in ("train", "test"):
        if needed not in data:
            raise ConfigError(f"{where}: [data.{needed}] is required")
    model = _section(ModelSection, raw.get("model", {}), "model")
    if not model.name:
        raise ConfigError(f"{where}: [model].name is required (an open_clip architecture such as 'ViT-B-16', "
                          "or 'local-dir:/path/to/folder')")
    cfg = Config(
        run=_section(RunSection, raw.get("run", {}), "run"),
        model=model,
        classes=_section(ClassesSection, raw.get("classes", {}), "classes"),
        train=_section(DatasetSection, data["train"], "data.train"),
        test=_section(DatasetSection, data["test"], "data.test"),
        val=_section(DatasetSection, data["val"], "data.val") if "val" in data else None,
        ood={n: _section(DatasetSection, d, f"data.ood.{n}") for n, d in data.get("ood", {}).items()},
        finetune=_section(FinetuneSection, raw.get("finetune", {}), "finetune"),
        ensemble=_section(EnsembleSection, raw.get("ensemble", {}), "ensemble"),
        bundle=_section(BundleSection, raw.get("bundle", {}), "bundle"),
        base_dir=base_dir,
    )
    if cfg.val is None and cfg.train.val_holdout <= 0:
        raise ConfigError(f"{where}: give [data.val] or data.train.val_holdout > 0: hyperparameters are tuned on "
                          "a held-out ID validation split, never on the test set")
    reserved = {"train", "zsf", "val", "test"}
    clash = reserved & set(cfg.ood)
    if clash:
        raise ConfigError(f"{where}: OOD dataset names {sorted(clash)} are reserved; rename [data.ood.<name>]")
    if cfg.finetune.mode not in ("e2e", "lpft", "none"):
        raise ConfigError(f"{where}: finetune.mode must be 'e2e', 'lpft' or 'none', got {cfg.finetune.mode!r}")
    if cfg.finetune.mode == "none" and not cfg.finetune.checkpoint:
        raise ConfigError(f"{where}: finetune.mode = 'none' needs finetune.checkpoint (a fine-tuned state dict)")
    for a in cfg.ensemble.wse_alphas + cfg.ensemble.ose_alphas:
        if not 0.0 <= float(a) <= 1.0:
            raise ConfigError(f"{where}: ensemble alphas must lie in [0, 1], got {a}")
    return cfg


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, path.resolve().parent, str(path))
