"""The decisions drawn from the logits, as predict writes them (batched inference itself, the device and
mixed precision are tune_cifar.evaluation's; probabilities and decisions the Classifier's)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..classifier import decide, probabilities  # noqa: F401 - predict's modules take them from here
from ..config import Config
from ..errors import UserError
from ..evaluation import autocast_for, infer, pick_device, run_precision  # noqa: F401 - likewise
from .options import Options


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


def effective_threshold(options: Options, cfg: Config, kind: str) -> float | None:
    if kind == "multiclass":
        if options.threshold is not None:
            raise UserError("--threshold applies to binary and multilabel models; this one is multiclass "
                            "(the most probable class is predicted)")
        return None
    threshold = cfg.task.threshold if options.threshold is None else options.threshold
    if not 0.0 < threshold < 1.0:
        raise UserError(f"--threshold {threshold:g} is not allowed; allowed: a probability strictly between 0 and 1 "
                        f"(0 < T < 1; a class is predicted when its probability is above T)")
    return threshold
