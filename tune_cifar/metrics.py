"""Metric names and the metrics allow-list: config names to torchmetrics classes (never eval), built per task.

The one place metric names are built (``metric_key``, ``logged_keys``) and read back (``in_stage``).
torchmetrics (never Lightning) is imported when a metric is built, so that predict's ``--images`` / ``--to``
and the search's settings can use the names without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Config, TaskConfig
from .sections import TASK_KIND
from .errors import UserError, allowed

if TYPE_CHECKING:
    import torch
    import torchmetrics

# The model's costs, measured by tune_cifar/cost.py: their names live here, with no torch, for the settings
PARAMS, FLOPS, LATENCY, LATENCY_IQR = "model/params", "model/flops", "model/latency_ms", "model/latency_iqr_ms"
COST_METRICS = (PARAMS, FLOPS, LATENCY)  # what a search may name as an objective
REPORTED = (*COST_METRICS, LATENCY_IQR)  # what a trial reports with every epoch

METRICS = {  # config name -> torchmetrics class name
    "accuracy": "Accuracy",
    "top_k_accuracy": "Accuracy",
    "f1": "F1Score",
    "precision": "Precision",
    "recall": "Recall",
    "auroc": "AUROC",
}


def build_metric(name: str, kwargs: dict, task: TaskConfig, num_classes: int) -> torchmetrics.Metric:
    """Look a metric up in the allow-list and build it for the task (never eval)."""
    import torchmetrics

    if name not in METRICS:
        raise UserError(f"config: optimizer.metrics.{name} is not a known metric; allowed: {allowed(METRICS)}")
    kwargs = dict(kwargs or {})
    if "callable" in kwargs:
        raise UserError(
            f"config: optimizer.metrics.{name}.callable is not supported (no code from config strings); "
            f"use one of: {allowed(METRICS)}"
        )
    kind = TASK_KIND[task.task]
    args: dict = {"task": kind}
    if kind == "multiclass":
        args["num_classes"] = num_classes
    elif kind == "multilabel":
        args["num_labels"] = num_classes
    if kind != "multiclass" and name != "auroc":
        args["threshold"] = task.threshold
    if name == "top_k_accuracy":
        if kind != "multiclass":
            raise UserError("config: optimizer.metrics.top_k_accuracy needs task.task=classification_multiclass")
        args["top_k"] = min(int(kwargs.pop("top_k", 5)), num_classes)
    try:
        return getattr(torchmetrics, METRICS[name])(**args, **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"config: optimizer.metrics.{name}: {err}") from None


def check_metrics(cfg: Config) -> None:
    """Build every configured metric once: a bad name or argument fails before data or Ray start."""
    for name, kwargs in cfg.task.metrics.items():
        build_metric(name, kwargs, cfg.task, cfg.data.num_classes)


def metric_key(name: str, stage: str) -> str:
    """What a metric (or ``loss``) is logged and reported as: ``<name>/<stage>``, stage train/val/test."""
    return f"{name}/{stage}"


def logged_keys(task: TaskConfig, stage: str) -> list[str]:
    """The loss and every configured metric, as logged in ``stage``."""
    return [metric_key("loss", stage), *(metric_key(m, stage) for m in task.metrics)]


def in_stage(key, stage: str) -> bool:
    """Whether ``key`` is a metric name of ``stage`` (as :func:`metric_key` builds them)."""
    return isinstance(key, str) and key.endswith(metric_key("", stage))


def task_loss(kind: str, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The training loss (also predict's loss/test): softmax cross-entropy (multiclass) or binary
    cross-entropy per sigmoid output, where smoothing makes the targets s/2 and 1 - s/2."""
    import torch.nn.functional as F  # here, not at the top: the search's and predict's checks use the names only
    if kind == "multiclass":
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if kind == "binary":
        logits = logits.squeeze(1)
    return F.binary_cross_entropy_with_logits(logits, y.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing)
