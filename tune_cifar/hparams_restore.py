"""Resuming from a checkpoint keeps THIS run's optimizer hyperparameters, not the checkpoint's.

Lightning's ``trainer.fit(ckpt_path=...)`` loads the optimizer's state dict, which carries its
param-group values (lr, momentum, weight decay, ...), and the LR schedule's state (``base_lrs``;
OneCycleLR's ``initial_lr``/``max_lr``/``min_lr`` live in the param groups). Population-based
training restores a better trial's checkpoint into a trial with a *mutated* config: without this
callback the restored values silently undo the mutation. A plain resume of the same config is
unchanged by it (the values it re-applies are the ones restored).

No Ray here: the search's trainable adds it to every trial (a retried trial resumes the same way).
The current rate is rescaled, not recomputed: exact for the schedules optim.py registers (LambdaLR
factors, OneCycleLR), whose rate is proportional to the group's ``initial_lr``; a registered schedule
without that property (e.g. CosineAnnealingLR with ``eta_min > 0``) would be restored approximately.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl

# Param-group keys that are learning rates: the schedule moves ``lr``; the others are its anchors
# (LRScheduler sets ``initial_lr``, OneCycleLR also ``max_lr`` and ``min_lr``).
ANCHORS = ("initial_lr", "max_lr", "min_lr")


class KeepConfiguredHyperparameters(pl.Callback):
    """After a checkpoint's optimizer and schedule state are loaded, put back the values the
    optimizer was built with from this run's config, at the schedule's restored position."""

    def __init__(self) -> None:
        self.built: list[list[dict]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here the optimizers exist (configure_optimizers, from this run's config) and the checkpoint's
        # training state is not loaded yet (Trainer._run: strategy.setup, on_fit_start, restore_training_state).
        self.built = [[{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]
                      for opt in trainer.optimizers]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None or not self.built:
            return  # a fresh start: nothing was restored
        for opt, built in zip(trainer.optimizers, self.built):
            for group, values in zip(opt.param_groups, built):
                apply_group(group, values)
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            groups = sched.optimizer.param_groups
            if hasattr(sched, "base_lrs") and all("initial_lr" in g for g in groups):
                sched.base_lrs = [g["initial_lr"] for g in groups]  # what LRScheduler derives them from
            if hasattr(sched, "_last_lr"):  # what get_last_lr() (and LearningRateMonitor) shows
                sched._last_lr = [g["lr"] for g in groups]


def apply_group(group: dict, built: dict) -> None:
    """Give a restored param group the values it was built with; its current ``lr`` keeps the
    schedule's restored position: every schedule the system builds (LambdaLR's base rate times a
    factor of the step, OneCycleLR's anneal between fractions of ``max_lr``) is proportional to
    ``initial_lr``, so the restored rate is scaled by the new anchor over the restored one."""
    restored_anchor = group.get("initial_lr")
    restored_lr = group.get("lr")
    for key, value in built.items():
        if key != "lr":
            group[key] = copy.deepcopy(value)
    if restored_anchor and "initial_lr" in built and restored_lr is not None:
        group["lr"] = restored_lr * built["initial_lr"] / restored_anchor
    else:  # no schedule anchor (or a zero one): the built rate
        group["lr"] = built["lr"]


class LogLearningRate(pl.Callback):
    """Logs the first param group's current rate at each validation epoch end as ``name`` (what a
    PBT trial reports: its rate after an exploit shows the mutation took effect)."""

    def __init__(self, name: str = "optimizer/lr") -> None:
        self.name = name

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.optimizers:
            pl_module.log(self.name, float(trainer.optimizers[0].param_groups[0]["lr"]))
