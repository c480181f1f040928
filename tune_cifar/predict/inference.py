"""Batched inference (device, mixed precision) and the decisions drawn from the logits."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..config import Config
from ..errors import UserError
from .clock import Clock


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
          clock: Clock) -> Iterator[torch.Tensor]:
    """Logits (float32, on the CPU) of each uint8 batch."""
    net.to(device).eval()
    with torch.inference_mode(), autocast_for(device, precision):
        for x in batches:
            logits = net(x.to(device, non_blocking=True)).float().cpu()
            clock.batch_done()
            yield logits


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """As ClassificationSystem.probabilities: softmax; sigmoid P(class 1) [B] (binary); sigmoid [B, K]."""
    if kind == "multiclass":
        return logits.softmax(dim=1)
    probs = logits.sigmoid()
    return probs.squeeze(1) if kind == "binary" else probs


def decide(probs: torch.Tensor, kind: str, threshold: float) -> torch.Tensor:
    """Class index [B] (multiclass: argmax; binary: P(class 1) > threshold) or multi-hot [B, K]
    (probability > threshold), the rule torchmetrics applies when training reports its metrics."""
    if kind == "multiclass":
        return probs.argmax(dim=1)
    return (probs > threshold).long()


def class_probs(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """[B, K] probability per class (binary: P(class 0), P(class 1))."""
    return torch.stack([1 - probs, probs], dim=1) if kind == "binary" else probs


def label_text(row: torch.Tensor, kind: str, classes: Sequence[str]) -> str:
    if kind == "multilabel":
        return ";".join(c for c, on in zip(classes, row.tolist()) if on)
    return classes[int(row)]


def top_k_cells(p: torch.Tensor, k: int, classes: Sequence[str]) -> list:
    values, idx = p.topk(k)
    cells: list = []
    for v, i in zip(values.tolist(), idx.tolist()):
        cells += [classes[i], f"{v:.6f}"]
    return cells


def top_k_header(k: int) -> list[str]:
    return [c for i in range(1, k + 1) for c in (f"top{i}", f"top{i}_prob")]


def effective_threshold(args: argparse.Namespace, cfg: Config, kind: str) -> float | None:
    if kind == "multiclass":
        if args.threshold is not None:
            raise UserError("--threshold applies to binary and multilabel models; this one is multiclass "
                            "(the most probable class is predicted)")
        return None
    threshold = cfg.task.threshold if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        raise UserError(f"--threshold {threshold} must be between 0 and 1")
    return threshold
