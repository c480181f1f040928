"""One search trial without Ray: used by the Ray trainable and by ``search --debug``.

Builds the datamodule, system and trainer with ``tune_cifar.train``'s own functions.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch

from .config import Config
from .data import ImageArrays, ImageDataModule
from .system import ClassificationSystem, load_system
from .train import build_system, build_trainer


def quiet(*names: str) -> None:
    """Lower these loggers (and Lightning's) to warnings: Ray's table is the progress display."""
    for name in ("pytorch_lightning", "lightning_fabric", *names):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_trial(cfg: Config, arrays: ImageArrays, out_dir: Path | None, callbacks: Sequence[pl.Callback] = (),
              ckpt_path: str | Path | None = None, checkpointing: bool = False,
              loggers: bool = False) -> pl.Trainer:
    """Fit one configuration (resuming from ``ckpt_path`` if given); returns the trainer."""
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    datamodule = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed)
    system = build_system(cfg, arrays)
    trainer = build_trainer(cfg, out_dir, callbacks=callbacks, checkpointing=checkpointing, loggers=loggers,
                            enable_model_summary=False)
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


def val_metrics(trainer: pl.Trainer) -> dict:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/val")}


def evaluate(cfg: Config, checkpoint: str | Path, arrays: ImageArrays) -> dict:
    """Test metrics of a checkpoint, computed the Ray-free way (what ``predict`` reproduces)."""
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():  # e.g. a CPU-only driver
        t = dataclasses.replace(t, accelerator="cpu", precision="32-true" if "16" in t.precision else t.precision)
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(t, enable_progress_bar=False, fast_dev_run=False))
    system = load_system(checkpoint)
    trainer = build_trainer(cfg, None, checkpointing=False, loggers=False, enable_model_summary=False)
    datamodule = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed)
    return {k: float(v) for k, v in trainer.test(system, datamodule=datamodule, verbose=False)[0].items()}
