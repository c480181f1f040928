"""A Classifier scored on its dataset's test split, without Lightning: the one evaluation behind
``train run.predict=true``, the search's final scoring of the exported trial and ``predict``.

The test split is rebuilt with ``data.splits`` exactly as the DataModule makes it; batches run in a
plain ``torch.inference_mode`` loop with training's mixed precision; the metrics are torchmetrics
(imported when metrics are computed, so that classifying images never imports it).
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .classifier import Classifier
from .config import Config
from .errors import UserError


# --------------------------------------------------------------------------- device and batches


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def trainer_device(cfg: Config) -> torch.device:
    """The device ``trainer.accelerator`` names here; a GPU config on a machine without one runs on the CPU
    (e.g. the search's driver scoring the exported trial)."""
    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def run_precision(configured: str, trained: str | None, device: torch.device) -> str:
    """``trainer.precision`` as configured; ``auto`` on a GPU is the precision the model was trained
    with (recorded in its checkpoint): a model trained in float32 on a CPU is not scored in bf16."""
    if configured == "auto" and device.type == "cuda" and trained:
        return trained
    return configured


def autocast_for(device: torch.device, precision: str):
    """Mixed precision as in training (trainer.precision); full float32 otherwise."""
    if device.type == "cuda" and precision in ("auto", "bf16-mixed", "bf16-true", "16-mixed"):
        bf16 = precision.startswith("bf16") or (precision == "auto" and torch.cuda.is_bf16_supported())
        return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)
    if device.type == "cpu" and precision in ("bf16-mixed", "bf16-true"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def infer(net: nn.Module, batches: Iterable[torch.Tensor], device: torch.device, precision: str,
          on_batch: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
    """Logits (float32, on the CPU) of each uint8 batch."""
    net.to(device).eval()
    with torch.inference_mode(), autocast_for(device, precision):
        for x in batches:
            logits = net(x.to(device, non_blocking=True)).float().cpu()
            if on_batch is not None:
                on_batch()
            yield logits


# --------------------------------------------------------------------------- the test split and its metrics


def test_split(cfg: Config, classifier: Classifier, arrays=None, hint: str = "") -> tuple[np.ndarray, ...]:
    """The test split exactly as training made it (row numbers, uint8 images, labels), checked
    against the model; ``arrays``: the dataset already read (else read from ``cfg.data``)."""
    from .data.sources import group_labels, load_source
    from .data.splits import split_indices

    d = cfg.data
    if arrays is None:
        arrays = load_source(d.name, d.dataset_path, download=d.download, cifar100_labels=d.cifar100_labels,
                             image_size=d.image_size, labels_csv=d.labels_csv)
        if d.label_groups:
            arrays = group_labels(arrays, d.label_groups)
    where = f"{d.name} at {d.dataset_path or 'its default folder'}"
    spec = classifier.input_spec
    arrays.check_fits(list(spec.classes), classifier.kind == "multilabel", spec.in_chans, spec.image_size, where,
                      hint=hint)
    ids = split_indices(len(arrays.train_x), len(arrays.test_x), d, cfg.run.seed)["test"]
    if len(ids) == 0:
        raise UserError(f"{where} has no test images")
    return ids, arrays.test_x, arrays.test_y


def test_metrics(classifier: Classifier, logits: torch.Tensor, y: torch.Tensor, metrics: dict,
                 threshold: float | None = None) -> dict:
    """``loss/test`` (the training loss) and ``<metric>/test`` for each configured metric, the names
    training logs (``<metric>/val``) with the test suffix."""
    from .metrics import build_metric, metric_key, task_loss

    task = classifier.task if threshold is None else dataclasses.replace(classifier.task, threshold=threshold)
    probs = classifier.probabilities(logits)
    target = y.long()
    out = {metric_key("loss", "test"): float(task_loss(classifier.kind, logits, target, task.label_smoothing))}
    for name, kwargs in metrics.items():
        metric = build_metric(name, kwargs, task, len(classifier.classes))
        metric.update(probs, target)
        out[metric_key(name, "test")] = float(metric.compute())
    return out


@dataclass
class Evaluation:
    ids: np.ndarray  # row numbers of the test split in the source's test arrays
    logits: torch.Tensor  # [N, outputs], float32 on the CPU
    y: torch.Tensor  # labels [N] or multi-hot [N, K]
    metrics: dict  # test_metrics: loss/test, <metric>/test


def evaluate(classifier: Classifier, cfg: Config, arrays=None, device: torch.device | None = None,
             threshold: float | None = None, on_batch: Callable[[], None] | None = None,
             hint: str = "", metrics: dict | None = None) -> Evaluation:
    """Score ``classifier`` on the test split of ``cfg.data`` (``arrays``: that dataset, already read)
    with ``metrics`` (default: those it was trained with) and ``threshold`` (default: its task's)."""
    ids, test_x, test_y = test_split(cfg, classifier, arrays, hint)
    device = device if device is not None else trainer_device(cfg)
    size = cfg.data.inference_batch_size
    pin = device.type == "cuda"

    def images():
        for start in range(0, len(ids), size):
            x = torch.from_numpy(np.ascontiguousarray(test_x[ids[start: start + size]]))
            yield x.pin_memory() if pin else x

    precision = run_precision(cfg.trainer.precision, classifier.extra_hparams.get("trained_precision"), device)
    logits = torch.cat(list(infer(classifier, images(), device, precision, on_batch)))
    y = torch.from_numpy(np.asarray(test_y[ids]))
    return Evaluation(ids, logits, y, test_metrics(classifier, logits, y, classifier.task.metrics if metrics is None else metrics,
                                                    threshold))
