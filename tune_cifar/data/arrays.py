"""A dataset in memory (``ImageArrays``) and the helpers that work on it whatever its source:
channel statistics, resizing, label grouping and seeded subsets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import UserError


@dataclass
class ImageArrays:
    """A dataset in memory: uint8 images [N, C, H, W] and labels."""

    train_x: np.ndarray  # uint8 [N, C, H, W]
    train_y: np.ndarray  # int64 [N] (multiclass/binary) or float32 [N, K] multi-hot (multilabel)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] units
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def multilabel(self) -> bool:
        return self.train_y.ndim == 2

    def check_fits(self, classes: list[str], multilabel: bool, in_chans: int, image_size: tuple[int, int],
                   where: str, hint: str = "") -> None:
        """Refuse (one line) to score a model on data other than its kind: classes, labels, channels, size."""
        if self.num_classes != len(classes):
            raise UserError(f"class-count mismatch: the model has {len(classes)} classes ({preview(classes)}) "
                            f"but {where} has {self.num_classes} ({preview(self.classes)}){hint}")
        if list(self.classes) != list(classes):
            raise UserError(f"class mismatch: the model's classes are {preview(classes)} but {where} has "
                            f"{preview(self.classes)}{hint}")
        if self.multilabel != multilabel:
            raise UserError(f"{where} has {'multi-hot' if self.multilabel else 'single-class'} labels but the "
                            f"model is {'multilabel' if multilabel else 'single-label'}")
        if self.in_chans != in_chans:
            raise UserError(f"{where} has {self.in_chans}-channel images but the model takes {in_chans}")
        if self.image_size != tuple(image_size):
            h, w = image_size
            size = f"; set data.image_size={h}" if h == w else ""
            raise UserError(f"{where} has {self.image_size[0]}x{self.image_size[1]} images but the model "
                            f"was trained on {h}x{w}{size}")


def preview(names, n: int = 4) -> str:
    """The first ``n`` names, and how many there are in all."""
    names = list(names)
    return ", ".join(map(str, names[:n])) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], in [0, 1] units."""
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        total_sq += (part**2).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def resize_images(x: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 [N, C, H, W] to [N, C, size, size]."""
    import torch
    import torch.nn.functional as F

    out = np.empty((*x.shape[:2], size, size), dtype=np.uint8)
    for i in range(0, len(x), chunk):
        part = torch.from_numpy(x[i : i + chunk]).float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def group_labels(arrays: ImageArrays, groups: dict[str, list[str]]) -> ImageArrays:
    """Merge classes into groups, e.g. {"vehicle": [...], "animal": [...]} -> 2 classes."""
    if not groups or not isinstance(groups, dict):
        raise UserError(f"data.label_groups must map group names to lists of classes, got {groups!r}")
    mapping = np.full(arrays.num_classes, -1, dtype=np.int64)
    for g, (group, members) in enumerate(groups.items()):
        if isinstance(members, str) or not members:
            raise UserError(f"data.label_groups.{group} must be a non-empty list of classes")
        for member in members:
            if member not in arrays.classes:
                raise UserError(
                    f"data.label_groups.{group}: unknown class {member!r}; allowed: {', '.join(arrays.classes)}"
                )
            i = arrays.classes.index(member)
            if mapping[i] >= 0:
                raise UserError(f"data.label_groups: class {member!r} is in more than one group")
            mapping[i] = g
    missing = [c for c, m in zip(arrays.classes, mapping) if m < 0]
    if missing:
        raise UserError(f"data.label_groups: classes not in any group: {', '.join(missing)}")

    def regroup(y: np.ndarray) -> np.ndarray:
        if y.ndim == 1:
            return mapping[y]
        out = np.zeros((len(y), len(groups)), dtype=y.dtype)  # multilabel: any member -> group
        for i, g in enumerate(mapping):
            out[:, g] = np.maximum(out[:, g], y[:, i])
        return out

    return dataclasses.replace(
        arrays, train_y=regroup(arrays.train_y), test_y=regroup(arrays.test_y), classes=list(groups)
    )


def subset(x: np.ndarray, y: np.ndarray, n: Optional[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of ``n`` samples (order kept); all of them when n is None or >= len."""
    if n is None or n >= len(x):
        return x, y
    if n < 1:
        raise UserError(f"subset size must be a positive integer or null, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx], y[idx]
