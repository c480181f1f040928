"""The config's way in: Hydra composes YAML at the edge, this module builds the typed sections
(``sections.py``) from the plain dict and validates them once (``config_from_dict``, ``load_config``).

Inside the package, code takes these dataclasses, never raw dicts. The sections are importable from here
too (``from tune_cifar.config import Config``): one import for code that loads a config and uses it.
The allowed values of the registries (optimizers, schedules, data sources) are read when a config is
checked: those registries import the sections, never this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

from .errors import FOLDER_NAME, UserError, allowed, check_choice, check_finite, is_folder_name, yaml_error
from .packaged import CONFIG_DIR  # tune_cifar/conf: the Hydra config groups, shipped in the wheel
from .plugins import load_plugins
from .sections import (AugmentConfig, Config, DataConfig, FirstConvModifier, LastLayerModifier,  # noqa: F401
                       ModelConfig, ModifiersConfig, OptimizerConfig, RunConfig, SchedulerConfig, TaskConfig,
                       TrainerConfig)

TASKS = ("classification_binary", "classification_multiclass", "classification_multilabel")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("auto", "32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64", "64-true")


def default_mode(metric: str) -> str:
    """The direction of a metric given without one: a loss (``loss/val``) is minimised, others maximised."""
    return "min" if metric.split("/")[0].startswith("loss") else "max"


# --------------------------------------------------------------------------- parsing


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting ints to floats where a float is wanted."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if set(args) == {int, float}:  # Lightning's int-or-float keys: an int counts batches, a float is a
            # fraction (typing may give the two in either order: it caches equal Unions)
            return _coerce(value, int if isinstance(value, int) and not isinstance(value, bool) else float, key)
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"config: {key} must be a mapping, got {value!r}")
        return build_section(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return check_finite(key, float(value))  # NaN and inf: refused for every number, here once
        if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            check_finite(key, float(value))  # the words, as YAML reads a search.* override: said the same way
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif hint is dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            return check_finite(key, value)  # free mappings (model_kwargs, metrics) too
    else:  # lists (search.searcher.points_to_evaluate)
        return check_finite(key, value)
    name = getattr(hint, "__name__", str(hint))
    raise UserError(f"config: {key}={value!r} must be of type {name}")


def build_section(cls, data: dict, prefix: str):
    """A config dataclass (a section, or ``Config`` with prefix "") from a plain dict: unknown keys
    and wrong types are one-line UserErrors naming ``prefix.key``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        bad = sorted(unknown)[0]
        key = f"{prefix}.{bad}" if prefix else bad
        close = difflib.get_close_matches(bad, names, n=1)  # a typo: say which key was meant
        hint = f" (did you mean {key.removesuffix(bad)}{close[0]}?)" if close else ""
        raise UserError(f"config: unknown key {key}{hint}; allowed: {allowed(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"config: missing key {key}")
    return cls(**kwargs)


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"config: {key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _batches(key: str, value, zero_ok: bool) -> None:
    """Lightning's int-or-float keys: an int counts batches, a float is a fraction of an epoch."""
    if value is None:
        return
    low = 0 if zero_ok else 1
    if isinstance(value, int) and value >= low:
        return
    if isinstance(value, float) and 0.0 <= value <= 1.0 and (zero_ok or value > 0.0):
        return
    raise UserError(f"config: {key}={value!r} is not allowed; allowed: an int >= {low} (batches) or a float in "
                    f"{'[0, 1]' if zero_ok else '(0, 1]'} (fraction of an epoch)")


def validate(cfg: Config) -> Config:
    """Value checks that types alone do not catch."""
    load_plugins()  # TUNE_CIFAR_PLUGINS: the user's registrations, before the registries are read
    check_choice("task.task", cfg.task.task, TASKS)
    from .data.sources import SOURCES  # the registry (register_source): a new dataset is one registration
    from .optim import OPTIMIZERS, SCHEDULES  # the registries (torch: imported when a config is checked)

    check_choice("data.name", cfg.data.name, tuple(SOURCES))
    check_choice("optimizer.optimizer", cfg.optimizer.optimizer, tuple(OPTIMIZERS))
    check_choice("optimizer.scheduler.name", cfg.optimizer.scheduler.name, tuple(SCHEDULES))
    check_choice("trainer.accelerator", cfg.trainer.accelerator, ACCELERATORS)
    check_choice("trainer.precision", cfg.trainer.precision, PRECISIONS)
    if cfg.task.monitor_mode is None:
        cfg.task.monitor_mode = default_mode(cfg.task.monitor)
    check_choice("task.monitor_mode", cfg.task.monitor_mode, ("max", "min"))
    check_choice("data.cifar100_labels", cfg.data.cifar100_labels, ("fine", "coarse"))
    for key in ("data.num_classes", "data.train_batch_size", "data.inference_batch_size",
                "trainer.devices", "trainer.max_epochs", "trainer.check_val_every_n_epoch",
                "trainer.log_every_n_steps", "optimizer.lr", "data.train_subset", "data.val_subset",
                "data.test_subset", "optimizer.scheduler.step_size"):
        section, *rest = key.split(".")
        value = getattr(cfg, section)
        for part in rest:
            value = getattr(value, part)
        _positive(key, value)
    for key, value in (("data.num_workers", cfg.data.num_workers),
                       ("optimizer.weight_decay", cfg.optimizer.weight_decay),
                       ("optimizer.momentum", cfg.optimizer.momentum),
                       ("optimizer.scheduler.warmup_epochs", cfg.optimizer.scheduler.warmup_epochs),
                       ("task.label_smoothing", cfg.task.label_smoothing),
                       ("data.augment.crop_padding", cfg.data.augment.crop_padding),
                       ("data.augment.cutout", cfg.data.augment.cutout),
                       ("run.train_seed", cfg.run.train_seed)):
        _positive(key, value, allow_zero=True)
    t = cfg.trainer
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        _batches(f"trainer.{key}", getattr(t, key), zero_ok=True)
    _batches("trainer.val_check_interval", t.val_check_interval, zero_ok=False)
    _positive("trainer.gradient_clip_val", t.gradient_clip_val, allow_zero=True)
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise UserError(f"config: data.val_fraction={cfg.data.val_fraction} must be in [0, 1)")
    if not 0.0 < cfg.task.threshold < 1.0:
        raise UserError(f"config: task.threshold={cfg.task.threshold} must be in (0, 1)")
    if cfg.task.label_smoothing >= 1.0:
        raise UserError(f"config: task.label_smoothing={cfg.task.label_smoothing} must be < 1")
    if cfg.task.task == "classification_binary" and cfg.data.num_classes != 2:
        raise UserError(
            f"config: task.task=classification_binary needs data.num_classes=2, got {cfg.data.num_classes}"
        )
    kw = cfg.model.model_kwargs
    if "num_classes" in kw and kw["num_classes"] != cfg.data.num_classes:
        raise UserError(
            f"config: model.model_kwargs.num_classes={kw['num_classes']} disagrees with "
            f"data.num_classes={cfg.data.num_classes}; remove it (it is taken from data.num_classes)"
        )
    if not is_folder_name(cfg.run.experiment):  # outputs/<experiment>/: no way out of run.output_dir
        raise UserError(f"config: run.experiment={cfg.run.experiment!r} is not allowed; allowed: {FOLDER_NAME}")
    if cfg.data.num_classes < 2:
        raise UserError(f"config: data.num_classes={cfg.data.num_classes} is not allowed; allowed: an integer >= 2 "
                        f"(a classifier needs at least two classes)")
    if not cfg.optimizer.metrics:
        raise UserError("config: optimizer.metrics is empty; give at least one metric, e.g. accuracy")
    return cfg


def config_from_dict(data: dict) -> Config:
    """Build and validate a Config from a plain (resolved) dict."""
    if isinstance(data.get("task"), dict) and "metrics" in data["task"]:
        raise UserError("config: unknown key task.metrics; the metrics are set as optimizer.metrics")
    cfg = build_section(Config, dict(data), "")
    cfg.task.metrics = cfg.optimizer.metrics
    return validate(cfg)


# --------------------------------------------------------------------------- Hydra edge


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None,
            config_name: str = "config"):
    """Compose the Hydra config with CLI-style overrides; errors become one-line UserErrors.

    Users' own config groups join through Hydra's search path: the override
    ``hydra.searchpath=[file:///their/dir]`` (what ``--config-dir`` adds, see ``packaged``).
    Callers validate the result with ``config_from_dict`` (unknown keys are refused there)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise UserError(f"config: {config_dir / (config_name + '.yaml')} not found")
    overrides = list(overrides)
    for item in overrides:
        _check_ascii_key(item)
    try:
        while True:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
                try:
                    return hydra_compose(config_name=config_name, overrides=overrides)
                except HydraException as err:
                    # A key the YAML lacks: add it (as +key=value would), so that the typed config
                    # names it and the allowed keys (config_from_dict), or a free dict takes it.
                    unknown = re.match(r"Could not override '([^']+)'", str(err))
                    key = f"{unknown[1]}=" if unknown else None
                    i = next((i for i, o in enumerate(overrides) if key and o.startswith(key)), None)
                    if i is None:
                        raise
                    overrides[i] = "+" + overrides[i]
    except MissingConfigException as err:  # e.g. model=nope: name the group's choices
        group, _, name = (err.missing_cfg_file or "").rpartition("/")
        if group and err.options:
            extra = " or the --config-dir folders" if any(o.startswith("hydra.searchpath=") for o in overrides) else ""
            raise UserError(f"config override {group}={name}: no {config_dir / group / name}.yaml{extra}; "
                            f"allowed: {', '.join(sorted(err.options))}") from None
        raise UserError(f"config override: {_one_line(err)}") from None
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"config override: {_one_line(err)}") from None
    except YAMLError as err:  # a group file of ours or of a --config-dir folder (the mark names the file)
        raise UserError(f"config: {yaml_error(err)}") from None


def _check_ascii_key(item: str) -> None:
    """Hydra's override grammar takes ASCII keys only; its lexer error would not say so."""
    key = item.partition("=")[0]
    if not key.isascii():
        raise UserError(f"config override {item!r}: the key {key.lstrip('+~')!r} is not ASCII; allowed: "
                        f"config keys (letters a-z, digits, _ and . between sections), e.g. optimizer.lr=0.1")


def _one_line(err: Exception) -> str:
    """Hydra's message without its 'Config search path' listing."""
    text = " ".join(ln.strip() for ln in str(err).split("Config search path:")[0].splitlines() if ln.strip())
    return text or type(err).__name__


def to_plain(cfg) -> dict:
    """DictConfig -> resolved plain dict."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(f"config: {str(err).splitlines()[0]}") from None


def load_config(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None) -> Config:
    """Compose + validate: the one call CLIs make."""
    return config_from_dict(to_plain(compose(overrides, config_dir)))


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` parsed with Hydra's override grammar, the one train and search use (``1e-4`` is a
    float, ``null`` None, ``[1, 2]`` a list): for commands that change a saved config (predict)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    _check_ascii_key(item)
    key = item.partition("=")[0].strip()
    if "=" not in item or not key or key[0] in "+~" or " " in key:
        raise UserError(f"override {item!r} must look like key=value, e.g. data.test_subset=null")
    try:
        override = OverridesParser.create().parse_override(item)
        value = override.value()
    except HydraException as err:
        raise UserError(f"override {item!r}: {_one_line(err)}") from None
    if override.type != OverrideType.CHANGE or override.is_sweep_override():
        raise UserError(f"override {item!r} must look like key=value, e.g. data.test_subset=null")
    return override.key_or_group, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict; the path must exist (except the last key of a free dict)."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"config: unknown key {'.'.join(parts[: i + 1])}")
        if node[part] is None:
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        raise UserError(f"config: {'.'.join(parts[:-1])} is a value ({node!r}), not a section: {key} does not exist")
    node[parts[-1]] = value
