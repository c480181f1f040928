"""Training without a CLI: the builders (model and input specs, system, trainer, precision, weight
transfer) and ``fit``, used by ``python -m tune_cifar.train``, ``search --debug`` and the Ray trainable;
plus the helpers a process running many trials needs (quiet logs, memory release and its metrics) and
the callbacks of a restored run (its own optimizer hyperparameters kept; the learning rate logged).
"""

from __future__ import annotations

import copy
import gc
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from . import timeline
from .atomic import torch_save
from .checkpoint import read_checkpoint
from .metrics import REPORTED
from .config import Config, TrainerConfig
from .data import ImageArrays, ImageDataModule
from .errors import UserError
from .metrics import check_metrics, in_stage, logged_keys
from .models import ModelSpec, check_model_name
from .signals import Interrupted, Received
from .system import ClassificationSystem, InputSpec


# --------------------------------------------------------------------------- builders


def model_spec(cfg: Config, in_chans: int) -> ModelSpec:
    """ModelSpec from the model section; the head size follows the task and data."""
    m = cfg.model
    kwargs = dict(m.model_kwargs)
    pretrained = bool(kwargs.pop("pretrained", False))
    kwargs.pop("num_classes", None)
    kwargs.pop("in_chans", None)
    mods = m.modifiers
    outputs = 1 if cfg.task.task == "classification_binary" else cfg.data.num_classes
    return ModelSpec(
        provider=m.provider_name, name=m.model_name, num_classes=outputs, in_chans=in_chans,
        pretrained=pretrained, cifar_stem=mods.cifar_stem,
        first_conv_channels=mods.change_first_convolutional_layer.num_input_channels
        if mods.change_first_convolutional_layer else None,
        last_layer_outputs=mods.change_last_layer.num_outputs if mods.change_last_layer else None,
        last_layer_identity=mods.change_last_layer_to_identity,
        kwargs=kwargs,
    )


def input_spec(arrays: ImageArrays, dataset: str) -> InputSpec:
    return InputSpec(classes=tuple(arrays.classes), in_chans=arrays.in_chans,
                     image_size=tuple(arrays.image_size), mean=tuple(arrays.mean),
                     std=tuple(arrays.std), dataset=dataset)


def check_monitor(cfg: Config) -> None:
    allowed_keys = set(logged_keys(cfg.task, "val"))
    if cfg.task.monitor not in allowed_keys:
        raise UserError(f"config: task.monitor={cfg.task.monitor!r} is not logged; allowed: "
                        f"{', '.join(sorted(allowed_keys))}")


def preflight(cfg: Config) -> None:
    """The checks that need neither data nor a model: precision, monitor, metrics, model name."""
    resolve_precision(cfg.trainer)
    check_monitor(cfg)
    check_metrics(cfg)
    check_model_name(cfg.model.provider_name, cfg.model.model_name)


def build_system(cfg: Config, arrays: ImageArrays) -> ClassificationSystem:
    check_monitor(cfg)
    spec = model_spec(cfg, arrays.in_chans)
    if spec.first_conv_channels and spec.first_conv_channels != arrays.in_chans:
        raise UserError(
            f"config: model.modifiers.change_first_convolutional_layer.num_input_channels="
            f"{spec.first_conv_channels} but {cfg.data.name} images have {arrays.in_chans} channels")
    system = ClassificationSystem(spec, cfg.task, cfg.optimizer, input_spec(arrays, cfg.data.name),
                                  channels_last=cfg.trainer.channels_last)
    if cfg.trainer.compile:
        system.compile_model()
    return system


def resolve_precision(t: TrainerConfig) -> str:
    """``auto`` -> bf16-mixed / 16-mixed on GPU, 32-true on CPU; fp16 on a CPU is refused."""
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():  # before precision: auto asks the GPU
        raise UserError(f"config: trainer.accelerator={t.accelerator} but no CUDA GPU is available; "
                        f"allowed here: trainer.accelerator=cpu or auto")
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    if t.precision == "auto":
        if not on_gpu:
            return "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if t.precision == "16-mixed" and not on_gpu:
        raise UserError("config: trainer.precision=16-mixed needs a GPU; on a CPU use 32 or bf16-mixed")
    return t.precision


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer (every ``trainer.save_checkpoint``: ModelCheckpoint's best.ckpt and
    last.ckpt, Ray Tune's trial checkpoints) writing local files whole or not at all (tune_cifar.atomic).

    Lightning's own writes through an fsspec transaction whose temporary file is in the system's temp
    folder and is then moved: across filesystems that is a copy, and a full disk cut last.ckpt short.
    A CheckpointIO plugin is Lightning's extension point for how checkpoints are stored."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        torch_save(checkpoint, path)
        if timeline.enabled():  # bench/search_overhead.py
            timeline.mark("ckpt_written", bytes=os.path.getsize(path))


def build_trainer(cfg: Config, out_dir: Path | None, callbacks: Sequence[pl.Callback] = (),
                  checkpointing: bool = True, loggers: bool = True, **overrides) -> pl.Trainer:
    """The Lightning Trainer used by both ``train`` and the search's trials."""
    t = cfg.trainer
    precision = resolve_precision(t)
    callbacks = list(callbacks)
    logger = False
    if out_dir is not None and loggers and not t.fast_dev_run:
        from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

        logger = [TensorBoardLogger(str(out_dir), name="tensorboard", version=""),
                  CSVLogger(str(out_dir), name="csv", version="")]
    if checkpointing and out_dir is not None and not t.fast_dev_run:
        from pytorch_lightning.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=str(out_dir / "checkpoints"), filename="best",
                                         monitor=cfg.task.monitor, mode=cfg.task.monitor_mode,
                                         save_last=True, auto_insert_metric_name=False))
    if t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = not t.deterministic
    kwargs = dict(
        accelerator=t.accelerator, devices=t.devices, max_epochs=t.max_epochs,
        val_check_interval=t.val_check_interval, check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps, fast_dev_run=t.fast_dev_run,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches, precision=precision, deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val, enable_progress_bar=t.enable_progress_bar,
        enable_checkpointing=checkpointing and not t.fast_dev_run, logger=logger, callbacks=callbacks,
        default_root_dir=str(out_dir) if out_dir else None,
        plugins=[AtomicCheckpointIO(), *overrides.pop("plugins", [])],  # e.g. a data-parallel trial's environment
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def transfer_weights(system: ClassificationSystem, path: str) -> list[str]:
    """Load matching weights from a checkpoint (a new head stays fresh); returns skipped keys."""
    state = read_checkpoint(path)["state_dict"]
    own = system.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    system.load_state_dict(keep, strict=False)
    return sorted(set(own) - set(keep))


def check_resumable(system: ClassificationSystem, path: str) -> None:
    """run.resume continues training the same network: refuse a checkpoint whose weights do not fit it."""
    ckpt = read_checkpoint(path)
    own = {k: tuple(v.shape) for k, v in system.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if own != theirs:
        spec = ckpt["hyper_parameters"].get("model_spec") or {}
        raise UserError(
            f"run.checkpoint_path={path}: cannot resume, its model is {spec.get('name')} with "
            f"{spec.get('num_classes')} outputs but this config builds {system.model_spec.name} with "
            f"{system.model_spec.num_classes}; allowed: a checkpoint of this model and data "
            f"(drop run.resume=true to start a new run from its matching weights)")


# --------------------------------------------------------------------------- fitting, and many trials in one process


def quiet(*names: str) -> None:
    """Lower these loggers (and Lightning's) to warnings: Ray's table is the progress display."""
    for name in ("pytorch_lightning", "lightning_fabric", *names):
        logging.getLogger(name).setLevel(logging.WARNING)


def fit(cfg: Config, arrays: ImageArrays, out_dir: Path | None, callbacks: Sequence[pl.Callback] = (),
        ckpt_path: str | Path | None = None, checkpointing: bool = False, loggers: bool = False,
        system: ClassificationSystem | None = None, summary: bool = False,
        prepare: Callable[[pl.Trainer], pl.Trainer] | None = None, **trainer_overrides) -> pl.Trainer:
    """Fit one configuration (resuming from ``ckpt_path`` if given); returns the trainer.

    Without ``system`` it seeds and builds one (a trial); ``train`` passes the one it built (and
    seeded for), e.g. with transferred weights. ``trainer_overrides`` and ``prepare`` (applied to the
    Trainer before fitting): a data-parallel trial's strategy and Ray Train's ``prepare_trainer``."""
    if system is None:
        pl.seed_everything(cfg.run.training_seed, workers=True, verbose=False)
    datamodule = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed, train_seed=cfg.run.training_seed)
    system = system if system is not None else build_system(cfg, arrays)
    trainer = build_trainer(cfg, out_dir, callbacks=callbacks, checkpointing=checkpointing, loggers=loggers,
                            enable_model_summary=summary, **trainer_overrides)
    if prepare is not None:
        trainer = prepare(trainer)
    trainer.fit(system, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return trainer


def live_models(collect: bool = True) -> int:
    """ClassificationSystems alive in this process (a reused Ray worker should start a trial with none).

    ``collect`` first frees unreachable ones (a model and its trainer form reference cycles): ~0.3 s
    with torch, Lightning and Ray loaded; without it, the count is exact only after such a collection.
    """
    if collect:
        gc.collect()
    return len(ClassificationSystem.alive)


def release_memory() -> None:
    """After a trial: drop its garbage and give cached GPU memory back to the card (other trials share it)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class WorkerMemory(pl.Callback):
    """Logs what this process held before the trial was built (an earlier trial's leftovers in a reused
    Ray worker: models, and on a GPU allocated MiB) and, on a GPU, the trial's peak allocated MiB.

    Create it before the trial's model. Its values are ``memory/*`` metrics, reported like any other.
    """

    PEAK = "memory/cuda_peak_mb"  # search.PEAK_METRIC: results.csv's peak_gpu_mb

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        # release_memory() collected at the end of the last trial here: no second collection needed
        self.leftover = {"memory/leftover_models": float(live_models(collect=False))}
        if self.cuda:
            self.leftover["memory/leftover_cuda_mb"] = torch.cuda.memory_allocated() / 2 ** 20
            torch.cuda.reset_peak_memory_stats()

    @property
    def names(self) -> list[str]:
        """The metrics it logs here (the CUDA ones on a GPU only)."""
        return [*self.leftover, *([self.PEAK] if self.cuda else [])]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = dict(self.leftover)
        if self.cuda:
            values[self.PEAK] = torch.cuda.max_memory_allocated() / 2 ** 20
        pl_module.log_dict(values)


class ModelCost(pl.Callback):
    """Measures the model's cost once, when the fit starts (tune_cifar.cost: parameters, FLOPs per image,
    batch-1 latency on the fit's device and precision), and logs it with every validation epoch, so that a
    trial a scheduler stops early has it too. Its ``reported`` names join a search trial's reports."""

    reported = REPORTED

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from .cost import measure

        self.values = measure(pl_module.classifier, pl_module.device, str(trainer.precision)).metrics()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.values:
            return
        # float64: FLOPs above 2**24 are not whole numbers in Lightning's default float32
        pl_module.log_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in self.values.items()})


def val_metrics(trainer: pl.Trainer) -> dict:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if in_stage(k, "val")}


class StopWhenAsked(pl.Callback):
    """Ends a fit at the end of the batch in which a signal arrived (``signals.stop_when_asked`` records
    it): ``train`` raises ``signals.Interrupted`` there (no validation or checkpoint follows, so
    ``last.ckpt`` stays the one written at the last epoch boundary, which a resume continues exactly);
    ``search --debug`` sets ``trainer.should_stop`` (Lightning validates once more and returns)."""

    def __init__(self, received: Received, raise_interrupted: bool = False) -> None:
        self.received = received
        self.raise_interrupted = raise_interrupted
        self.stage = ""  # where it stopped: training, validation, testing

    def _batch_end(self, trainer: pl.Trainer, stage: str) -> None:
        if not self.received:
            return
        self.stage = "sanity check" if trainer.sanity_checking else stage
        if self.raise_interrupted:
            raise Interrupted(self.received.name)
        trainer.should_stop = True

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self._batch_end(trainer, "training")

    def on_validation_batch_end(self, trainer: pl.Trainer, *args) -> None:  # a long validation ends too
        self._batch_end(trainer, "validation")

    def on_test_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self._batch_end(trainer, "testing")


# --------------------------------------------------------------------------- restored runs
#
# Resuming from a checkpoint keeps THIS run's optimizer hyperparameters, not the checkpoint's.
# Lightning's ``trainer.fit(ckpt_path=...)`` loads the optimizer's state dict, which carries its
# param-group values (lr, momentum, weight decay, ...), and the LR schedule's state (``base_lrs``;
# OneCycleLR's ``initial_lr``/``max_lr``/``min_lr`` live in the param groups). Population-based
# training restores a better trial's checkpoint into a trial with a *mutated* config: without
# KeepConfiguredHyperparameters the restored values silently undo the mutation. A plain resume of the
# same config is unchanged by it (the values it re-applies are the ones restored).
#
# The search's trainable adds it to every trial (a retried trial resumes the same way).
# The current rate is rescaled, not recomputed: exact for the schedules optim.py registers (LambdaLR
# factors, OneCycleLR), whose rate is proportional to the group's ``initial_lr``; a registered schedule
# without that property (e.g. CosineAnnealingLR with ``eta_min > 0``) would be restored approximately.

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
        self.reported = (name,)  # what each Ray report of the trial carries (search/trainable.py)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.optimizers:
            pl_module.log(self.name, float(trainer.optimizers[0].param_groups[0]["lr"]))
