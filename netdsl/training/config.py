"""Training settings: the paper's and torchvision's recipes, and how settings are merged and checked.

A run's configuration is built in layers, each overriding the one before:

    the recipe preset  <  the spec's `train { }` block  <  a YAML file (--config)  <  command-line flags

The `recipe` key picks the preset and is itself looked up in the same order. Every setting is checked
here, once: the CLI's choices are built from the same tuples, and the rest of training trusts a
Config. This module does not import torch, so `netdsl check` stays light.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from ..diagnostics import did_you_mean
from ..errors import ConfigError
from ..lowering.options import AMP

SCHEDULES = ("plateau", "step", "cosine", "constant")
CROPS = ("paper", "random_resized")
NORMALIZE = ("auto", "mean", "mean_std")
OPTIMIZERS = ("sgd", "adamw")
DECODES = ("auto", "workers", "device")


@dataclass(frozen=True)
class Config:
    """Every setting of a training run. Defaults are the paper's recipe."""

    recipe: str = "paper"
    data: str | None = None  # ImageNet-style folder (train/, val/); None: the bundled digits
    out: str | None = None  # run directory; None: runs/<net>-<date>-<time>
    epochs: int = 90
    batch_size: int = 128  # in total, over all processes
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd (with momentum, nesterov) or adamw (momentum unused)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "plateau"  # plateau: lr * lr_gamma when val error stalls, at most lr_drops times
    lr_gamma: float = 0.1
    lr_step: int = 30  # epochs between drops, for schedule = step
    lr_patience: int = 4  # epochs without improvement before a drop, for schedule = plateau
    lr_drops: int = 3
    label_smoothing: float = 0.0
    crop: str = "paper"  # paper: short side to `resize`, central square, random crop; or random_resized
    resize: int = 0  # 0: the input size x 256/224 (256 for a 224 input)
    flip: bool = True
    lighting: float = 0.1  # std of the PCA colour noise (the paper's alpha); 0 turns it off
    # mean: subtract the mean from 0..255 pixels (the paper, for its N(0, 0.01) init); mean_std: torchvision's
    # (x/255 - mean) / std; auto: mean when every conv and fc starts that small, else mean_std
    normalize: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    workers: int = -1  # loader processes per training process; -1: min(8, CPU cores)
    # where JPEGs are decoded: workers (CPU processes), device (the training device: nvJPEG on CUDA; the
    # workers only read bytes and choose crops), auto: device when training on CUDA
    decode: str = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:1, or one device per tower: cuda:0,cuda:1
    seed: int = 0
    deterministic: bool = False
    log_every: int = 20  # steps between progress updates and loss checks
    keep_every: int = 0  # also keep epoch-NNN.pt every this many epochs; 0: only last and best

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resize_for(self, size: tuple[int, int]) -> int:
        return self.resize or round(min(size) * 256 / 224)


PRESETS: dict[str, Config] = {
    "paper": Config(),
    # torchvision's classification reference (references/classification/train.py) for AlexNet
    "torchvision": Config(recipe="torchvision", batch_size=256, lr=0.01, weight_decay=1e-4,
                          schedule="step", lr_step=30, crop="random_resized", lighting=0.0,
                          normalize="mean_std"),
}

RECIPES = tuple(PRESETS)
SETTINGS = tuple(f.name for f in fields(Config))  # every key a train block, YAML file or --set may give
_CHOICES = {"recipe": RECIPES, "schedule": SCHEDULES, "crop": CROPS, "normalize": NORMALIZE,
            "amp": AMP, "optimizer": OPTIMIZERS,
            "decode": DECODES}
_TYPES = {f.name: f.type for f in fields(Config)}


def memory_optimizer(train_block: Mapping[str, Any] | None) -> tuple[str, bool]:
    """The optimizer a spec's train block trains with, as the training-memory pass names it
    (passes/memory.py: sgd, momentum, nesterov, adamw), and whether it decays the weights: what its state
    and its step's copies take."""
    config = resolve(train_block).config
    if config.optimizer == "adamw":
        name = "adamw"
    else:
        name = "nesterov" if config.nesterov else "momentum" if config.momentum else "sgd"
    return name, config.weight_decay > 0


@dataclass
class Resolved:
    config: Config
    origin: dict[str, str]  # key -> where its value came from
    warnings: list[str]


def resolve(spec: Mapping[str, Any] | None = None, yaml_file: str | Path | None = None,
            cli: Mapping[str, Any] | None = None) -> Resolved:
    """Merge preset < spec < YAML < command line into one checked Config."""
    layers = [("the spec's train block", spec or {}), (f"{yaml_file}", read_yaml(yaml_file)),
              ("the command line", cli or {})]
    layers = [(name, normalise_keys(values, name)) for name, values in layers]
    recipe = "paper"
    for _, values in layers:
        recipe = values.get("recipe", recipe)
    recipe = coerce("recipe", recipe, "recipe")
    values, origin = PRESETS[recipe].to_dict(), {k: f"recipe {recipe}" for k in _TYPES}
    for name, layer in layers:
        for key, value in layer.items():
            values[key], origin[key] = coerce(key, value, name), name
    return Resolved(check(Config(**values)), origin, [])


def resolve_resume(saved: Mapping[str, Any], overrides: list[tuple[str, Mapping[str, Any]]]) -> Resolved:
    """On resume the saved configuration is the base; values given again win, with a warning."""
    values = dict(PRESETS["paper"].to_dict(), **normalise_keys(saved, "the saved configuration"))
    origin = {k: "the saved run" for k in values}
    warnings = []
    for name, layer in overrides:
        for key, value in normalise_keys(layer, name).items():
            value = coerce(key, value, name)
            if value != values.get(key):
                warnings.append(f"{key}: {value!r} from {name} replaces {values.get(key)!r} saved in the run")
            values[key], origin[key] = value, name
    saved_epochs = saved.get("epochs", values["epochs"])
    if values["schedule"] == "cosine" and saved.get("schedule") == "cosine" and values["epochs"] > saved_epochs:
        # CosineAnnealingLR reached lr 0 at the saved epochs; going on would train at lr 0 (or climb back)
        raise ConfigError(f"the run's cosine schedule ends at epoch {saved_epochs} with learning rate 0, so "
                          f"epochs {saved_epochs + 1}-{values['epochs']} would not train; to go on, give "
                          f"--set schedule=constant --lr RATE (a fixed rate from here), or start a new run")
    return Resolved(check(Config(**values)), origin, warnings)


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings (key: value), got {type(data).__name__}")
    return data.get("train", data) if isinstance(data.get("train"), dict) else data


def normalise_keys(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        k = str(key).replace("-", "_")
        if k not in _TYPES:
            notes = did_you_mean(k, _TYPES)
            raise ConfigError(f"{where}: unknown training setting '{key}'" +
                              (f"; {notes[0]}" if notes else f" (known: {', '.join(_TYPES)})"))
        out[k] = value
    return out


def coerce(key: str, value: Any, where: str) -> Any:
    """Check a value against the setting's type; ints stand for floats, 'true'/'false' for bools."""
    kind = _TYPES[key]
    bad = ConfigError(f"{where + ': ' if where else ''}{key} = {value!r}: expected {_describe(key)}")
    if value is None and "None" in kind:
        return None
    if kind.startswith("str"):
        value = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        if value is None or (key in _CHOICES and value not in _CHOICES[key]):
            hint = did_you_mean(value, _CHOICES[key]) if value is not None and key in _CHOICES else []
            raise ConfigError(f"{bad}" + (f"; {hint[0]}" if hint else ""))
        return value
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, str):
        try:
            value = float(value) if kind == "float" or "." in value or "e" in value.lower() else int(value)
        except ValueError:
            raise bad from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    if kind == "int":
        if value != int(value):
            raise bad
        return int(value)
    return float(value)


def _describe(key: str) -> str:
    if key in _CHOICES:
        return "one of " + ", ".join(_CHOICES[key])
    return {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(
        _TYPES[key], "a string")


def check_one(key: str, value: Any) -> Any:
    """One setting's value, checked for its type and range alone (the spec's train block)."""
    value = coerce(key, value, "")
    check(dataclasses.replace(Config(), **{key: value}))
    return value


def check(config: Config) -> Config:
    """Ranges that no run can use, caught before anything starts."""
    rules = [("epochs", config.epochs >= 1, "at least 1"),
             ("batch_size", config.batch_size >= 1, "at least 1"),
             ("lr", config.lr > 0, "positive"),
             ("momentum", 0 <= config.momentum < 1, "in [0, 1)"),
             ("weight_decay", config.weight_decay >= 0, "0 or more"),
             ("lr_gamma", 0 < config.lr_gamma <= 1, "in (0, 1]"),
             ("lr_step", config.lr_step >= 1, "at least 1"),
             ("lr_patience", config.lr_patience >= 0, "0 or more"),
             ("lr_drops", config.lr_drops >= 0, "0 or more"),
             ("label_smoothing", 0 <= config.label_smoothing < 1, "in [0, 1)"),
             ("resize", config.resize >= 0, "0 (automatic) or a size in pixels"),
             ("lighting", config.lighting >= 0, "0 or more"),
             ("grad_clip", config.grad_clip >= 0, "0 or more"),
             ("workers", config.workers >= -1, "-1 (automatic) or 0 or more"),
             ("log_every", config.log_every >= 1, "at least 1"),
             ("keep_every", config.keep_every >= 0, "0 or more")]
    for key, ok, what in rules:
        if not ok:
            raise ConfigError(f"{key} = {getattr(config, key)!r}: must be {what}")
    return config
