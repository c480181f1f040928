"""ClassificationSystem: the LightningModule training a :class:`~tune_cifar.classifier.Classifier`
(loss, metrics, optimizers, LR schedules, logging).

Its checkpoint holds everything needed to rebuild the model: the model spec, the task, the
optimizer settings and the input spec (classes, channels, size, normalisation), all as plain
Python types so that ``torch.load(weights_only=True)`` reads it; ``Classifier.from_checkpoint``
loads it without Lightning.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref

import pytorch_lightning as pl
import torch
from torch import nn

from .classifier import Classifier, InputSpec  # noqa: F401 - InputSpec: imported from here too
from .config import OptimizerConfig, TaskConfig
from .errors import UserError
from .metrics import build_metric, metric_key, task_loss
from .models import ModelSpec
from .optim import Steps, build_optimizer, build_schedule

log = logging.getLogger("tune_cifar")

_CLASSIFIER = "classifier."


class ClassificationSystem(pl.LightningModule):
    """Training of a :class:`Classifier`: loss, metrics, optimizers, LR schedules, logging."""

    alive: "weakref.WeakSet[ClassificationSystem]" = weakref.WeakSet()  # not yet freed (see training.live_models)

    def __init__(self, model_spec: ModelSpec, task: TaskConfig, optimizer: OptimizerConfig,
                 input_spec: InputSpec, channels_last: bool = False, fetch_weights: bool = True):
        super().__init__()
        ClassificationSystem.alive.add(self)
        if not task.metrics:  # a TaskConfig built by hand (not by config_from_dict): the optimizer's
            task = dataclasses.replace(task, metrics=dict(optimizer.metrics))
        self.save_hyperparameters({
            "model_spec": model_spec.to_dict(),
            "task": dataclasses.asdict(task),
            "optimizer": dataclasses.asdict(optimizer),
            "input_spec": input_spec.to_dict(),
            "channels_last": channels_last,
        })
        self.classifier = Classifier(model_spec, task, input_spec, channels_last, fetch_weights)
        self.task, self.optim_cfg = task, optimizer
        # Weights files keep the keys they always had (model.*, mean, std: a Classifier's own), so that
        # every checkpoint and export loads in both directions: "classifier." is dropped on saving and
        # added back on loading.
        self.register_state_dict_post_hook(_drop_classifier_prefix)
        self.register_load_state_dict_pre_hook(_add_classifier_prefix)
        n = len(input_spec.classes)
        self.val_metrics = nn.ModuleDict({k: build_metric(k, v, task, n) for k, v in task.metrics.items()})
        self.test_metrics = nn.ModuleDict({k: build_metric(k, v, task, n) for k, v in task.metrics.items()})

    # -- the classifier's ----------------------------------------------------
    model_spec = property(lambda self: self.classifier.model_spec)
    input_spec = property(lambda self: self.classifier.input_spec)
    kind = property(lambda self: self.classifier.kind)
    channels_last = property(lambda self: self.classifier.channels_last)
    model = property(lambda self: self.classifier.model)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.preprocess(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def compile_model(self) -> bool:
        return self.classifier.compile_model()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.classifier.probabilities(logits)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(self.kind, logits, y, self.task.label_smoothing)

    def on_train_start(self) -> None:
        # what trainer.precision (e.g. auto) became here: predict on a GPU scores the model with it
        self.hparams["trained_precision"] = str(self.trainer.precision)
        sched = self.lr_schedulers()
        total = int(self.trainer.estimated_stepping_batches)
        if isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.total_steps != total:
            # a resumed run restores the schedule's length: it would fail when it runs past it
            raise UserError(f"optimizer.scheduler.name=onecycle: the checkpoint's schedule is {sched.total_steps} "
                            f"steps but this run has {total}; resume with its trainer.max_epochs and batch size, "
                            f"or use scheduler cosine (its length follows trainer.max_epochs)")

    # -- steps --------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log(metric_key("loss", "train"), loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=self._synced)
        return loss

    @property
    def _synced(self) -> bool:
        """Data-parallel: the epoch's loss is averaged over the processes (each saw its own share of the
        rows; torchmetrics syncs the other metrics by itself), so every process logs the same value."""
        return self._trainer is not None and self.trainer.world_size > 1

    def _eval_step(self, batch, stage: str, metrics: nn.ModuleDict):
        x, y = batch
        logits = self(x)
        self.log(metric_key("loss", stage), self.loss(logits, y), on_epoch=True, prog_bar=True, sync_dist=self._synced)
        probs = self.probabilities(logits)
        target = y.long()
        for name, metric in metrics.items():
            metric.update(probs, target)
            self.log(metric_key(name, stage), metric, on_epoch=True, prog_bar=name == "accuracy")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_metrics)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.probabilities(self(x))

    # -- optimisation -------------------------------------------------------
    def configure_optimizers(self):
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps = Steps(total=total, per_epoch=max(1, total // max(1, self.trainer.max_epochs or 1)))
        opt = build_optimizer(self.parameters(), self.optim_cfg)
        sched = build_schedule(opt, self.optim_cfg, steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# --------------------------------------------------------------------------- weights-file keys


def _drop_classifier_prefix(module, state_dict, prefix, local_metadata) -> None:
    inner = prefix + _CLASSIFIER
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _add_classifier_prefix(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    for key in list(state_dict):
        rest = key[len(prefix):]
        if key.startswith(prefix) and (rest.startswith("model.") or rest in ("mean", "std")):
            state_dict[prefix + _CLASSIFIER + rest] = state_dict.pop(key)
