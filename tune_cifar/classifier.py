"""The trained model without Lightning: network + input normalisation + task kind + input spec.

``ClassificationSystem`` (training) holds one; predict, exports and evaluation use it alone.
A weights file (a Lightning checkpoint or an export's model.pt) holds ``state_dict`` (keys
``model.*``, ``mean``, ``std``, and maybe training-only entries) and ``hyper_parameters``
(``model_spec``, ``task``, ``input_spec``, ``channels_last``, and what training adds:
``optimizer``, ``trained_precision``), all plain Python types: ``torch.load(weights_only=True)``
reads it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import normalization_buffers, normalize, read_checkpoint
from .sections import TASK_KIND
from .config import TaskConfig, build_section
from .data.arrays import preview
from .errors import UserError
from .models import ModelSpec, build_model

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


class Classifier(nn.Module):
    """uint8 (or 0..255 float) [B, C, H, W] images -> logits, probabilities and decisions.

    Its state_dict keys (``model.*``, ``mean``, ``std``) are those of every checkpoint and export.
    ``extra_hparams`` keeps what training recorded besides the model (optimizer, trained precision)
    so that an export written from it keeps it too.
    """

    def __init__(self, model_spec: ModelSpec, task: TaskConfig, input_spec: InputSpec,
                 channels_last: bool = False, fetch_weights: bool = True, extra_hparams: dict | None = None):
        super().__init__()
        self.model_spec, self.task, self.input_spec = model_spec, task, input_spec
        self.kind = TASK_KIND[task.task]
        self.channels_last = channels_last
        self.extra_hparams = dict(extra_hparams or {})
        self.model = build_model(model_spec, fetch=fetch_weights)  # False: weights from a checkpoint
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mean, std = normalization_buffers(input_spec.in_chans, input_spec.mean, input_spec.std)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    # -- what it computes ------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) images -> normalised float tensor."""
        return normalize(x, self.mean, self.std, self.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.__dict__.get("_compiled") or self.model
        return net(self.preprocess(x))

    logits = forward

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities: softmax (multiclass), sigmoid (binary: P(class 1) [B], multilabel [B, K])."""
        return probabilities(logits, self.kind)

    def decide(self, probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Class index [B] (argmax; binary: P(class 1) > threshold) or multi-hot [B, K] (> threshold)."""
        return decide(probs, self.kind, self.task.threshold if threshold is None else threshold)

    def compile_model(self) -> bool:
        """``torch.compile`` the network (state_dict keys unchanged); logs and returns False if unsupported."""
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

    # -- what it is ------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.input_spec.classes)

    @property
    def model_name(self) -> str:
        return f"{self.model_spec.provider}/{self.model_spec.name}"

    def hparams_dict(self) -> dict:
        """The ``hyper_parameters`` of a weights file holding this model."""
        return {**self.extra_hparams, "model_spec": self.model_spec.to_dict(), "task": dataclasses.asdict(self.task),
                "input_spec": self.input_spec.to_dict(), "channels_last": self.channels_last}

    @classmethod
    def from_hparams(cls, hp: dict, where: str | Path = "checkpoint") -> "Classifier":
        """An untrained Classifier of the model a weights file describes (no download: weights follow)."""
        try:
            spec = ModelSpec.from_dict(hp["model_spec"])
            inp = InputSpec.from_dict(hp["input_spec"])
            if len(inp.mean) != inp.in_chans or len(inp.std) != inp.in_chans or not inp.classes:
                raise ValueError("input_spec mean/std/classes do not fit in_chans")
            task = build_section(TaskConfig, dict(hp["task"]), "task")
            if task.task not in TASK_KIND:
                raise ValueError(f"task.task={task.task!r} is not one of {', '.join(TASK_KIND)}")
            if not task.metrics:  # written before the metrics were the task's
                task.metrics = dict((hp.get("optimizer") or {}).get("metrics") or {"accuracy": {}})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise UserError(f"{where}: malformed hyper_parameters ({type(err).__name__}: {err})") from None
        extra = {k: v for k, v in hp.items() if k not in ("model_spec", "task", "input_spec", "channels_last")}
        return cls(spec, task, inp,
                   channels_last=bool(hp.get("channels_last", False)), fetch_weights=False, extra_hparams=extra)

    @classmethod
    def from_checkpoint(cls, path: str | Path, ckpt: dict | None = None) -> "Classifier":
        """The model in a Lightning checkpoint or an export's model.pt (read with weights_only=True),
        its weights loaded strictly; ``ckpt``: that file already read."""
        ckpt = ckpt if ckpt is not None else read_checkpoint(path)
        net = cls.from_hparams(ckpt["hyper_parameters"], path)
        state = {k: v for k, v in ckpt["state_dict"].items()
                 if k.startswith("model.") or k in ("mean", "std")}  # metric states are not weights
        spec = net.model_spec
        what = f"{spec.provider}/{spec.name} with {spec.num_classes} outputs"
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
            detail = lines[0] if lines else str(err).strip().splitlines()[0]
            raise UserError(f"{path}: weights are from a different model than {what}: {detail[:200]}") from None
        if missing or unexpected:
            parts = [f"{len(missing)} missing ({preview(missing, 3)})" if missing else "",
                     f"{len(unexpected)} unexpected ({preview(unexpected, 3)})" if unexpected else ""]
            raise UserError(f"{path}: weights are from a different model than {what}: "
                            f"{'; '.join(p for p in parts if p)} parameter names")
        return net.eval()


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """softmax (multiclass); sigmoid P(class 1) [B] (binary); sigmoid [B, K] (multilabel). Float32."""
    if kind == "multiclass":
        return logits.float().softmax(dim=1)
    probs = logits.float().sigmoid()
    return probs.squeeze(1) if kind == "binary" else probs


def decide(probs: torch.Tensor, kind: str, threshold: float | None) -> torch.Tensor:
    """Class index [B] (multiclass: argmax; binary: P(class 1) > threshold) or multi-hot [B, K]
    (probability > threshold), the rule torchmetrics applies when training reports its metrics."""
    if kind == "multiclass":
        return probs.argmax(dim=1)
    return (probs > threshold).long()
