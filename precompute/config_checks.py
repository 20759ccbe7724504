"""Every value of a run config checked when it is parsed, before a model or a dataset is opened.

Types come from the section dataclasses' annotations, ranges from `LIMITS`, and the allowed values
of each choice from the module that consumes it (one list each). Every error is one line naming the
config file, the key, the value given and the fix; a misspelled choice names the closest allowed value.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass

from precompute.config import Config, ConfigError
from precompute.sources import dataset_types, resolve_classnames
from vrf_core.calibration import METHODS
from vrf_core.devices import DEVICES, PRECISIONS
from vrf_core.flyp import TARGETS
from vrf_core.knn import BACKENDS
from vrf_core.weights import K_RULES, RULES, SCALES
from vrf_core.zeroshot import TEMPLATE_SETS, read_template_file

FINETUNE_MODES = ("e2e", "lpft", "flyp", "none")  # none: use finetune.checkpoint as it is
RESERVED_SPLITS = ("train", "zsf", "val", "test")  # bundle split names an OOD dataset cannot take
CLASS_MARK = "\0"  # stands in for a class name when a template is tried


@dataclass(frozen=True)
class Limit:
    """The range a number must lie in; str() is how an error states it."""

    low: float
    low_open: bool = False       # the bound itself is not allowed
    high: float | None = None
    high_open: bool = False

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_0, AT_LEAST_1, AT_LEAST_2, POSITIVE = Limit(0), Limit(1), Limit(2), Limit(0, low_open=True)
LIMITS = {  # "data" stands for every [data.*] section
    "run.seed": AT_LEAST_0, "run.batch_size": AT_LEAST_1, "run.workers": AT_LEAST_0,
    "finetune.epochs": AT_LEAST_1, "finetune.batch_size": AT_LEAST_1, "finetune.lr": POSITIVE,
    "finetune.weight_decay": AT_LEAST_0, "finetune.warmup_steps": AT_LEAST_0,
    "finetune.grad_clip": AT_LEAST_0,  # 0 = no clipping (finetune.py clips only when it is set)
    "finetune.label_smoothing": Limit(0, high=1, high_open=True), "finetune.lp_epochs": AT_LEAST_0,
    "finetune.lp_lr": POSITIVE, "finetune.workers": AT_LEAST_0, "finetune.seed": AT_LEAST_0,
    "finetune.max_steps_per_epoch": AT_LEAST_0,  # 0 = full epochs
    "ensemble.k_max": AT_LEAST_1,
    "bundle.train_sample": AT_LEAST_1, "bundle.thumb_size": AT_LEAST_0,  # 0 = no thumbnails
    "bundle.umap_max_points": AT_LEAST_2, "bundle.umap_neighbors": AT_LEAST_2,
    "data.val_holdout": AT_LEAST_0, "data.crop_border": AT_LEAST_0,
}
ALPHAS = Limit(0, high=1)
CHOICES = {
    "model.precision": PRECISIONS, "finetune.precision": PRECISIONS, "finetune.mode": FINETUNE_MODES,
    "finetune.flyp_targets": TARGETS,
    "ensemble.weight_rule": RULES, "ensemble.distance": SCALES, "ensemble.calibration": METHODS,
    "ensemble.knn_backend": BACKENDS,
}
TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
              dict: "a table"}


def shown(value) -> str:
    """A value as the config file writes it."""
    return json.dumps(value, default=str)


def fail(where: str, key: str, value, fix: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {key} = {shown(value)} {fix}")


def check_choice(where: str, key: str, value, allowed, besides: str = "") -> None:
    if value in allowed and isinstance(value, str):
        return
    close = difflib.get_close_matches(value, allowed, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {shown(close[0])}?" if close else ""
    fail(where, key, value, f"is not one of {', '.join(allowed)}{besides}{hint}")


def _has_type(value, hint) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)  # TOML's true is no number
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_fields(where: str, key: str, section) -> None:
    """Each field of a section: one of its choices, or its annotated type within its range."""
    hints = typing.get_type_hints(type(section))
    table = "data" if key.startswith("data.") else key
    for f in dataclasses.fields(section):
        value, hint = getattr(section, f.name), hints[f.name]
        if isinstance(hint, types.UnionType):  # `str | None`: None is the default, TOML cannot write it
            if value is None:
                continue
            hint = next(h for h in typing.get_args(hint) if h is not type(None))
        if hint is typing.Any:
            continue  # checked one by one in check_config
        if f"{table}.{f.name}" in CHOICES:
            check_choice(where, f"{key}.{f.name}", value, CHOICES[f"{table}.{f.name}"])
            continue
        limit = LIMITS.get(f"{table}.{f.name}")
        need = f"{TYPE_WORDS[hint]} {limit}" if limit else TYPE_WORDS[hint]
        if not _has_type(value, hint) or (limit and not limit.allows(value)):
            fail(where, f"{key}.{f.name}", value, f"must be {need}")


def check_device(where: str, device: str) -> None:
    """run.device: a name pick_device accepts, and hardware this machine has."""
    import torch  # here, not at the top: `--help` and the other commands need no torch
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        check_choice(where, "run.device", device, DEVICES, besides=", cuda:<index>")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(where, "run.device", device, 'but CUDA is not available on this machine; use "auto" or "cpu"')
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        fail(where, "run.device", device, f"but this machine has {torch.cuda.device_count()} CUDA device(s), "
                                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        fail(where, "run.device", device, 'but MPS is not available on this machine; use "auto" or "cpu"')


def check_dataset(where: str, key: str, section) -> None:
    """A [data.*] section: a known type, a path, and only the options that type takes."""
    known = dataset_types()
    check_choice(where, f"{key}.type", section.type, list(known))
    if not section.path:
        raise ConfigError(f"{where}: {key}.path is required (the dataset's folder or file, relative to the "
                          "config's folder)")
    for option in section.options:
        if option not in known[section.type]:
            close = difflib.get_close_matches(option, known[section.type], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key}.options.{option} for type {section.type!r} (its options: "
                              f"{', '.join(known[section.type]) or 'none'}){hint}")


def check_alphas(where: str, key: str, alphas: list) -> None:
    bad = [a for a in alphas if not _has_type(a, float) or not ALPHAS.allows(a)]
    if not alphas or bad:
        fail(where, key, alphas, f"must be a non-empty list of numbers {ALPHAS}"
                                 f"{f' ({shown(bad[0])} is not)' if bad else ''}")


def check_k_rule(where: str, rule, k_max: int) -> None:
    """ensemble.k_rule: a rule k_from_rule knows, or a fixed k that the stored k_max neighbours cover."""
    ints = f"or an integer in [1, ensemble.k_max = {k_max}]"
    if _has_type(rule, int):
        if not 1 <= rule <= k_max:
            fail(where, "ensemble.k_rule", rule, f"must be one of {', '.join(K_RULES)} {ints}")
    else:
        check_choice(where, "ensemble.k_rule", rule, K_RULES, besides=f" {ints}")


def _fills_class_name(template) -> bool:
    """open_clip fills a template with str.format, and zeroshot.resolve_templates requires '{}'."""
    try:
        return isinstance(template, str) and "{}" in template and CLASS_MARK in template.format(CLASS_MARK)
    except (IndexError, KeyError, ValueError):
        return False


def check_templates(where: str, cfg: Config) -> None:
    """classes.templates: a named set, an inline list or a file (one per line), each with a '{}'."""
    spec = cfg.classes.templates
    if isinstance(spec, str) and spec in TEMPLATE_SETS:
        return
    key = f"{where}: classes.templates"
    if isinstance(spec, list):
        templates, origin = spec, "the inline list"
    elif isinstance(spec, str):
        path = cfg.resolve(spec)
        if not path.is_file():
            check_choice(where, "classes.templates", spec, TEMPLATE_SETS,
                         besides=f" nor an existing file ({path})")
        key, origin = f"{key} = {shown(spec)}", str(path)
        try:
            templates = read_template_file(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{key}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    else:
        fail(where, "classes.templates", spec, f"must be one of {', '.join(TEMPLATE_SETS)}, a file or a list")
    if not templates:
        raise ConfigError(f"{key}: {origin} holds no templates; give at least one, e.g. \"a photo of a {{}}.\"")
    for i, template in enumerate(templates):
        if not _fills_class_name(template):
            raise ConfigError(f"{key}: template {i + 1} of {origin}, {shown(template)}, needs one {{}} where the "
                              "class name goes (and no other braces), e.g. \"a photo of a {}.\"")


def check_config(cfg: Config, where: str) -> None:
    """Raises ConfigError at the first value that is wrong; reads the class-name and template files."""
    sections = {"run": cfg.run, "model": cfg.model, "classes": cfg.classes, "finetune": cfg.finetune,
                "ensemble": cfg.ensemble, "bundle": cfg.bundle, **data_sections(cfg)}
    for key, section in sections.items():
        check_fields(where, key, section)
    if not cfg.model.name:
        raise ConfigError(f"{where}: model.name is required (an open_clip architecture such as 'ViT-B-16', "
                          "or 'local-dir:/path/to/folder')")
    check_device(where, cfg.run.device)
    for key, section in data_sections(cfg).items():
        check_dataset(where, key, section)
    check_alphas(where, "ensemble.wse_alphas", cfg.ensemble.wse_alphas)
    check_alphas(where, "ensemble.ose_alphas", cfg.ensemble.ose_alphas)
    check_k_rule(where, cfg.ensemble.k_rule, cfg.ensemble.k_max)
    resolve_classnames(cfg.classes.names, cfg.base_dir, where)
    check_templates(where, cfg)
    check_roles(where, cfg)
    if cfg.finetune.mode == "flyp":
        check_flyp(where, cfg)


def data_sections(cfg: Config) -> dict:
    val = {"data.val": cfg.val} if cfg.val is not None else {}
    return {"data.train": cfg.train, **val, "data.test": cfg.test, **{f"data.ood.{n}": d for n, d in cfg.ood.items()}}


def check_roles(where: str, cfg: Config) -> None:
    """What the sections mean together: a validation split, free OOD names, a checkpoint when not training."""
    if cfg.val is None and cfg.train.val_holdout <= 0:
        raise ConfigError(f"{where}: give [data.val] or data.train.val_holdout > 0: hyperparameters are tuned on "
                          "a held-out ID validation split, never on the test set")
    clash = sorted(set(RESERVED_SPLITS) & set(cfg.ood))
    if clash:
        raise ConfigError(f"{where}: OOD dataset names {clash} are reserved ({', '.join(RESERVED_SPLITS)}); "
                          "rename [data.ood.<name>]")
    if cfg.finetune.mode == "none" and not cfg.finetune.checkpoint:
        raise ConfigError(f"{where}: finetune.mode = \"none\" needs finetune.checkpoint (a fine-tuned state dict)")
    if cfg.finetune.checkpoint and not cfg.resolve(cfg.finetune.checkpoint).is_file():
        fail(where, "finetune.checkpoint", cfg.finetune.checkpoint,
             f"does not exist ({cfg.resolve(cfg.finetune.checkpoint)}); give a fine-tuned state dict's path, "
             "relative to the config's folder")


def check_flyp(where: str, cfg: Config) -> None:
    """finetune.mode = "flyp": a contrastive loss over batches of (image, class caption) pairs, both towers."""
    from vrf_core.legacy_checkpoint import is_wiseft_checkpoint

    ft = cfg.finetune
    if ft.batch_size < 2:
        fail(where, "finetune.batch_size", ft.batch_size, "must be >= 2 with finetune.mode = \"flyp\": the other "
                                                           "captions of a batch are each image's negatives")
    if ft.label_smoothing:
        fail(where, "finetune.label_smoothing", ft.label_smoothing, "does not apply to finetune.mode = \"flyp\" "
                                                                   "(a contrastive loss, no class logits); remove it")
    pretrained = cfg.resolve(cfg.model.pretrained) if cfg.model.pretrained else None
    if pretrained is not None and pretrained.is_file() and is_wiseft_checkpoint(pretrained):
        fail(where, "model.pretrained", cfg.model.pretrained,
             "is a WiSE-FT classifier (an image tower and a head, no text tower), but finetune.mode = \"flyp\" "
             "fine-tunes the text tower too; give CLIP weights with both towers (e.g. \"openai\")")
