"""ClassificationSystem: the LightningModule (loss, metrics, optimizers, LR schedules).

A checkpoint holds everything needed to rebuild the model: the model spec, the task,
the optimizer settings and the input spec (classes, channels, size, normalisation), all
as plain Python types so that ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from .checkpoint import normalization_buffers, normalize, read_checkpoint
from .config import OptimizerConfig, TaskConfig, _build
from .errors import UserError
from .metrics import TASK_KIND, build_metric, task_loss
from .models import ModelSpec, build_model
from .optim import Steps, build_optimizer, build_schedule, lr_factor  # noqa: F401 - lr_factor: old import path

log = logging.getLogger("tune_cifar")


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: uint8 images of this shape, normalised with mean/std."""

    classes: tuple[str, ...]
    in_chans: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(classes=tuple(d["classes"]), in_chans=int(d["in_chans"]),
                   image_size=tuple(d["image_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   dataset=d.get("dataset", ""))


# --------------------------------------------------------------------------- the system


class ClassificationSystem(pl.LightningModule):
    """Classifier over a registry model; takes uint8 batches and normalises them itself."""

    alive: "weakref.WeakSet[ClassificationSystem]" = weakref.WeakSet()  # not yet freed (see training.live_models)

    def __init__(self, model_spec: ModelSpec, task: TaskConfig, optimizer: OptimizerConfig,
                 input_spec: InputSpec, channels_last: bool = False, fetch_weights: bool = True):
        super().__init__()
        ClassificationSystem.alive.add(self)
        self.save_hyperparameters({
            "model_spec": model_spec.to_dict(),
            "task": dataclasses.asdict(task),
            "optimizer": dataclasses.asdict(optimizer),
            "input_spec": input_spec.to_dict(),
            "channels_last": channels_last,
        })
        self.model_spec, self.task, self.optim_cfg, self.input_spec = model_spec, task, optimizer, input_spec
        self.kind = TASK_KIND[task.task]
        self.channels_last = channels_last
        self.model = build_model(model_spec, fetch=fetch_weights)  # False: weights from a checkpoint
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mean, std = normalization_buffers(input_spec.in_chans, input_spec.mean, input_spec.std)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        n = len(input_spec.classes)
        self.val_metrics = nn.ModuleDict({k: build_metric(k, v, task, n) for k, v in optimizer.metrics.items()})
        self.test_metrics = nn.ModuleDict({k: build_metric(k, v, task, n) for k, v in optimizer.metrics.items()})

    # -- forward ------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) images -> normalised float tensor."""
        return normalize(x, self.mean, self.std, self.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.__dict__.get("_compiled") or self.model
        return net(self.preprocess(x))

    def compile_model(self) -> bool:
        """``torch.compile`` the network (checkpoint keys unchanged); logs and returns False if unsupported."""
        try:
            import torch._dynamo

            supported = torch._dynamo.is_dynamo_supported()
        except Exception:  # noqa: BLE001 - any import/probe failure means no compile
            supported = False
        if not supported:
            log.warning("trainer.compile=true: torch.compile is not supported here; running eagerly")
            return False
        object.__setattr__(self, "_compiled", torch.compile(self.model))  # not a registered submodule
        return True

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities: softmax (multiclass), sigmoid (binary: P(class 1), multilabel)."""
        if self.kind == "multiclass":
            return logits.float().softmax(dim=1)
        probs = logits.float().sigmoid()
        return probs.squeeze(1) if self.kind == "binary" else probs

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
        self.log("loss/train", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch, stage: str, metrics: nn.ModuleDict):
        x, y = batch
        logits = self(x)
        self.log(f"loss/{stage}", self.loss(logits, y), on_epoch=True, prog_bar=True)
        probs = self.probabilities(logits)
        target = y.long()
        for name, metric in metrics.items():
            metric.update(probs, target)
            self.log(f"{name}/{stage}", metric, on_epoch=True, prog_bar=name == "accuracy")

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


# --------------------------------------------------------------------------- checkpoints


def system_from_hparams(hp: dict) -> ClassificationSystem:
    """Rebuild a ClassificationSystem from the plain dicts saved in its checkpoint."""
    return ClassificationSystem(
        model_spec=ModelSpec.from_dict(hp["model_spec"]),
        task=_build(TaskConfig, hp["task"], "task"),
        optimizer=_build(OptimizerConfig, hp["optimizer"], "optimizer"),
        input_spec=InputSpec.from_dict(hp["input_spec"]),
        channels_last=bool(hp.get("channels_last", False)),
        fetch_weights=False,  # the checkpoint holds every weight: no download, works offline
    )


def load_system(path: str | Path) -> ClassificationSystem:
    """Rebuild the system from a checkpoint alone (no config files, no Ray)."""
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    system = system_from_hparams(hp)
    try:
        system.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not match its model: {str(err).splitlines()[0][:200]}") from None
    return system
