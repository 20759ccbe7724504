"""The import config of `precompute import` (docs/import.md): a TOML file parsed into dataclasses,
every key and value checked before an array is read. An unknown key names the closest known one
(precompute/config.py's rule); values are checked with precompute/config_checks.py's helpers.
Relative paths resolve against the config file's folder."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precompute.config import BundleSection, ConfigError, EnsembleSection, _section, read_toml
from precompute.config_checks import RESERVED_SPLITS, check_alphas, check_fields, check_k_rule, fail
from precompute.importer_files import ARRAY_NAMES  # every array a split may give (needs: importer_checks.py)
from precompute.sources import resolve_classnames
from vrf_core.data import ClassProjection

# the bundle role of each [data.<role>] table ([data.ood.<name>] tables are role "ood")
BUNDLE_ROLES = {"train": "id_train", "val": "id_val", "test": "id_test"}
TOP_LEVEL = ("run", "classes", "models", "ensemble", "bundle", "data")
DATA_ROLES = ("train", "val", "test", "ood")


@dataclass
class ImportRun:
    name: str = "import"
    out: str = "bundles/import"
    seed: int = 0  # the training sample (bundle.train_sample) and the embedding map


@dataclass
class ImportClasses:
    names: Any = None  # the model's C classes: a registered list, an inline list or a file
    templates: list = field(default_factory=list)  # recorded in the manifest only


@dataclass
class ImportEnsemble(EnsembleSection):
    wse_alphas: list | None = None  # set when the evaluation splits carry preds_wse


@dataclass
class ImportBundle(BundleSection):  # the settings of `precompute run`, plus
    normalize_features: bool = False  # L2-normalise features instead of refusing rows of another norm


@dataclass
class ImportSplit:
    arrays: str = ""  # a .npz (keys = array names) or .parquet (columns = array names) file
    files: dict = field(default_factory=dict)  # array name -> .npy file, added to (or replacing) `arrays`
    images: str = ""  # the images root that the `paths` array is relative to
    projection: list | None = None  # model class per split class (a subset), or a list of model classes each
    classnames: list | None = None  # the split's own class names (default: from the projection)


@dataclass
class SplitPlan:
    """One split as the config describes it: bundle split name, role, section and class projection."""

    name: str
    role: str
    key: str  # the config table, "data.ood.sketch"
    section: ImportSplit
    projection: ClassProjection | None
    classnames: list[str] | None


@dataclass
class ImportConfig:
    run: ImportRun
    classes: ImportClasses
    models: dict
    ensemble: ImportEnsemble
    bundle: ImportBundle
    splits: list[SplitPlan]
    classnames: list[str]
    source: str  # the config file, as errors name it
    base_dir: Path = Path(".")

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def train(self) -> SplitPlan:
        return self.splits[0]

    def to_json(self) -> dict:
        """The config as the manifest's `config` records it."""
        sections = {k: dataclasses.asdict(getattr(self, k)) for k in ("run", "classes", "ensemble", "bundle")}
        data = {p.key.removeprefix("data."): dataclasses.asdict(p.section) for p in self.splits}
        return {"import": self.source, "base_dir": str(self.base_dir), **sections, "models": self.models,
                "data": data}


def _unknown(where: str, names, known: tuple[str, ...], what: str) -> None:
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown {what} {name!r}{hint}")


def _projection(where: str, key: str, spec: list | None, num_classes: int) -> ClassProjection | None:
    """A list of model classes (a subset split) or a list of lists (each split class the max of a group)."""
    if spec is None:
        return None
    groups = [g if isinstance(g, list) else [g] for g in spec]
    bad = [i for g in groups for i in g if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_classes]
    if not spec or not all(groups) or bad:
        fail(where, f"{key}.projection", spec, f"must be a non-empty list of model class indices in "
                                               f"0..{num_classes - 1} (or of non-empty lists of them)"
                                               f"{f'; {json.dumps(bad[0])} is not one' if bad else ''}")
    return ClassProjection(tuple(tuple(g) for g in groups))


def _split_classnames(where: str, key: str, section: ImportSplit, projection: ClassProjection | None,
                      classnames: list[str]) -> list[str] | None:
    if projection is None:
        if section.classnames is not None:
            fail(where, f"{key}.classnames", section.classnames, "needs a projection (the model's classes are "
                                                                 "classes.names); set projection or remove it")
        return None
    if section.classnames is None:
        return ["/".join(classnames[i] for i in g) for g in projection.groups]
    names = section.classnames
    if len(names) != projection.num_classes or not all(isinstance(n, str) and n for n in names):
        fail(where, f"{key}.classnames", names, f"must list {projection.num_classes} non-empty names, one per "
                                                "entry of projection")
    return list(names)


def parse_import_config(raw: dict, base_dir: Path, where: str = "import config") -> ImportConfig:
    """The config as dataclasses, every key and value checked; reads only the class-name file."""
    _unknown(where, raw, TOP_LEVEL, "section")
    data = raw.get("data", {})
    if not isinstance(data, dict) or not isinstance(data.get("ood", {}), dict):
        raise ConfigError(f"{where}: data must hold tables [data.train], [data.val], [data.test] and "
                          "[data.ood.<name>]")
    _unknown(where, data, DATA_ROLES, "dataset role (data.<role>)")
    for needed in ("train", "val", "test"):
        if needed not in data:
            raise ConfigError(f"{where}: [data.{needed}] is required (the training split gives the ZSF set, "
                              "hyperparameters are tuned on val, test is the ID test split)")
    odd = [n for n in data.get("ood", {}) if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
    if odd:
        raise ConfigError(f"{where}: OOD split name {odd[0]!r} names a bundle folder: use letters, digits, '_' "
                          "and '-' only; rename [data.ood.<name>]")
    clash = sorted(set(RESERVED_SPLITS) & set(data.get("ood", {})))
    if clash:
        raise ConfigError(f"{where}: OOD split names {clash} are reserved ({', '.join(RESERVED_SPLITS)}); "
                          "rename [data.ood.<name>]")
    models = raw.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
        raise ConfigError(f"{where}: models must hold tables [models.zs] and [models.ft] (free-form keys, "
                          "e.g. name = \"ViT-B-16\", pretrained = \"openai\")")
    _unknown(where, models, ("zs", "ft"), "model (models.<zs|ft>)")
    sections = {
        "run": _section(ImportRun, raw.get("run", {}), "run", where),
        "classes": _section(ImportClasses, raw.get("classes", {}), "classes", where),
        "ensemble": _section(ImportEnsemble, raw.get("ensemble", {}), "ensemble", where),
        "bundle": _section(ImportBundle, raw.get("bundle", {}), "bundle", where),
    }
    tables = {f"data.{r}": data[r] for r in ("train", "val", "test")}
    tables |= {f"data.ood.{n}": d for n, d in data.get("ood", {}).items()}
    split_sections = {key: _section(ImportSplit, t, key, where) for key, t in tables.items()}
    for key, section in {**sections, **split_sections}.items():
        check_fields(where, key, section)
    ensemble = sections["ensemble"]
    if ensemble.wse_alphas is not None:
        check_alphas(where, "ensemble.wse_alphas", ensemble.wse_alphas)
    check_alphas(where, "ensemble.ose_alphas", ensemble.ose_alphas)
    check_k_rule(where, ensemble.k_rule, ensemble.k_max)
    if sections["classes"].names is None:
        raise ConfigError(f"{where}: classes.names is required (the model's C classes: an inline list or a file, "
                          "one name per line, relative to the config's folder)")
    classnames = resolve_classnames(sections["classes"].names, base_dir, where)

    plans = []
    for key, section in split_sections.items():
        if not section.arrays and not section.files:
            raise ConfigError(f"{where}: [{key}] names no arrays; set {key}.arrays = \"<split>.npz\" (or .parquet) "
                              f"or {key}.files = {{ labels = \"labels.npy\", ... }}")
        _unknown(where, section.files, ARRAY_NAMES, f"array {key}.files.<name>")
        role_word = key.split(".")[1]
        if role_word == "train" and section.projection is not None:
            fail(where, f"{key}.projection", section.projection, "is for evaluation splits; the training split "
                                                                 "is labelled in the model's classes")
        projection = _projection(where, key, section.projection, len(classnames))
        plans.append(SplitPlan(key.split(".")[-1], BUNDLE_ROLES.get(role_word, "ood"), key, section, projection,
                               _split_classnames(where, key, section, projection, classnames)))
    return ImportConfig(models=models, splits=plans, classnames=classnames, source=where, base_dir=base_dir,
                        **sections)


def load_import_config(path: str | Path) -> ImportConfig:
    return parse_import_config(read_toml(path, "import config"), Path(path).resolve().parent, str(path))
