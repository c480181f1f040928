"""Optimizers and LR schedules, each registered once by name (the config's allowed values).

Adding one is one registered function plus one YAML file in ``config/optimizer/``::

    from tune_cifar.optim import register_optimizer

    @register_optimizer("rmsprop")
    def rmsprop(groups, cfg):              # cfg: sections.OptimizerConfig
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)

``groups`` are the parameter groups (weight decay on weights, none on biases and norms).
A schedule gets the optimizer, the OptimizerConfig and :class:`Steps` and returns a torch
LR scheduler stepped once per optimizer step.

The registration must have run in every process that validates a config or builds a model:
``config.validate`` and ``ClassificationSystem.configure_optimizers`` read these registries, and a
search validates and builds each trial's config again in a Ray worker process. Name the module in
``TUNE_CIFAR_PLUGINS`` (comma-separated importable modules, see ``tune_cifar.plugins``): every process
imports it before it checks a config, the train and search commands, ``--debug`` and the workers of the
local Ray a search starts (they inherit its environment). On a Ray cluster, start every node with the
variable set (``TUNE_CIFAR_PLUGINS=my_plugins ray start ...``) and the module installed there. A
registration made only in your own script (before ``tune_cifar.search.cli.main``) covers that process:
train, ``--debug``, but not the trials of a search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .registry import registrar

if TYPE_CHECKING:  # torch is imported by the builders, when called: reading a config's names needs no torch
    import torch

    from .sections import OptimizerConfig, SchedulerConfig

OptimizerFactory = Callable[[list, "OptimizerConfig"], "torch.optim.Optimizer"]
ScheduleFactory = Callable[["torch.optim.Optimizer", "OptimizerConfig", "Steps"], "torch.optim.lr_scheduler.LRScheduler"]

OPTIMIZERS: dict[str, OptimizerFactory] = {}
SCHEDULES: dict[str, ScheduleFactory] = {}


def register_optimizer(name: str, replace: bool = False) -> Callable[[OptimizerFactory], OptimizerFactory]:
    """Decorator: ``optimizer.optimizer=<name>`` builds the optimizer with this function (a name once:
    ``replace=True`` to replace one, see ``tune_cifar.registry``)."""
    return registrar(OPTIMIZERS, "optimizer", name, replace)


def register_schedule(name: str, replace: bool = False) -> Callable[[ScheduleFactory], ScheduleFactory]:
    """Decorator: ``optimizer.scheduler.name=<name>`` builds the LR schedule with this function."""
    return registrar(SCHEDULES, "LR schedule", name, replace)


@dataclass(frozen=True)
class Steps:
    """The run's length in optimizer steps (what Lightning estimates before training)."""

    total: int
    per_epoch: int


def param_groups(params, weight_decay: float) -> list[dict]:
    """Weight decay on weights (ndim > 1), none on biases and normalisation parameters."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](param_groups(params, cfg.weight_decay), cfg)


def build_schedule(opt: torch.optim.Optimizer, cfg: OptimizerConfig, steps: Steps):
    return SCHEDULES[cfg.scheduler.name](opt, cfg, steps)


# --------------------------------------------------------------------------- built-in optimizers


@register_optimizer("sgd")
def sgd(groups: list, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    import torch

    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


@register_optimizer("adam")
def adam(groups: list, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    import torch

    return torch.optim.Adam(groups, lr=cfg.lr)


@register_optimizer("adamw")
def adamw(groups: list, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    import torch

    return torch.optim.AdamW(groups, lr=cfg.lr)


# --------------------------------------------------------------------------- built-in LR schedules

# Factor of the base LR after the linear warm-up: (step, total, warmup, scheduler config, steps per epoch)
_SHAPES: dict[str, Callable[[int, int, int, "SchedulerConfig", int], float]] = {
    "cosine": lambda step, total, warmup, s, per_epoch: 0.5 * (
        1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))),
    "step": lambda step, total, warmup, s, per_epoch: s.gamma ** (step // max(1, s.step_size * per_epoch)),
    "none": lambda step, total, warmup, s, per_epoch: 1.0,
}


def lr_factor(step: int, total: int, warmup: int, sched: SchedulerConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base LR at ``step`` (linear warm-up, then cosine / step / constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return _SHAPES[sched.name](step, total, warmup, sched, steps_per_epoch)


def _warmup_then(name: str) -> ScheduleFactory:
    def build(opt: torch.optim.Optimizer, cfg: OptimizerConfig, steps: Steps):
        import torch

        sched = cfg.scheduler
        warmup = int(sched.warmup_epochs * steps.per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, steps.total, warmup, sched, steps.per_epoch))
    return build


for _name in _SHAPES:
    register_schedule(_name)(_warmup_then(_name))


@register_schedule("onecycle")
def onecycle(opt: torch.optim.Optimizer, cfg: OptimizerConfig, steps: Steps):
    import torch

    # cycle_momentum=False: the configured momentum (SGD) / beta1 (Adam) stays as given;
    # PyTorch's default would overwrite it with its own 0.85-0.95 cycle
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps.total, cycle_momentum=False)
