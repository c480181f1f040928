"""Batched augmentation on [B, C, H, W] tensors, on the batch's device (airbench style).

Random numbers come from torch (``generator`` or the device's default generator, so
``torch.manual_seed`` makes runs reproducible). A CPU ``generator`` also works for a
GPU batch: the few per-image numbers are drawn on its device and moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

PAD_MODES = ("reflect", "zeros")


def normalize(x_uint8: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 [B, C, H, W] (or floats in [0, 1]) -> float32 (x - mean) / std, on x's device."""
    scale = 255.0 if x_uint8.dtype == torch.uint8 else 1.0
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)
    return x_uint8.float().mul_(1.0 / (scale * std_t)).sub_(mean_t / std_t)


def _randint(high: int, n: int, x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randint(0, high, (n,), generator=generator, device=device).to(x.device)


def _reflect(i: Tensor, n: int) -> Tensor:
    """Map indices in [-n+1, 2n-2] onto [0, n) by reflection (no edge repeat), as F.pad 'reflect'."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def pad(x: Tensor, padding: int, mode: str = "reflect") -> Tensor:
    """Pad H and W by ``padding`` (reflect or zeros); any dtype."""
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r}; allowed: {', '.join(PAD_MODES)}")
    if mode == "zeros":
        return torch.nn.functional.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    _check_reflect(padding, h, w)
    rows = _reflect(torch.arange(-padding, h + padding, device=x.device), h)
    cols = _reflect(torch.arange(-padding, w + padding, device=x.device), w)
    return x.index_select(-2, rows).index_select(-1, cols)


def _check_reflect(padding: int, h: int, w: int) -> None:
    if padding >= min(h, w):
        raise ValueError(f"reflect padding {padding} needs images larger than {padding}, got {h}x{w}")


def random_crop(x: Tensor, padding: int, generator: Optional[torch.Generator] = None, mode: str = "reflect") -> Tensor:
    """Random HxW window of the padded batch, one offset per image.

    One gather over flattened images: output pixel (i, j) of image b reads padded pixel
    (i + dy_b, j + dx_b); for reflect padding the index is reflected into the unpadded image.
    """
    if padding == 0:
        return x
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r}; allowed: {', '.join(PAD_MODES)}")
    b, c, h, w = x.shape
    rows = _randint(2 * padding + 1, b, x, generator)[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = _randint(2 * padding + 1, b, x, generator)[:, None] + torch.arange(w, device=x.device)  # [B, W]
    if mode == "reflect":
        _check_reflect(padding, h, w)
        src, width = x, w
        rows, cols = _reflect(rows - padding, h), _reflect(cols - padding, w)
    else:
        src, width = pad(x, padding, "zeros"), w + 2 * padding
    index = (rows[:, :, None] * width + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return src.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


def flip_mask(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Bool [B]: which images of ``x`` ``random_flip`` flips (each with probability 1/2)."""
    return _randint(2, x.shape[0], x, generator).bool()


def random_flip(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flip a random half of the images horizontally (per image)."""
    mask = flip_mask(x, generator)
    if x.device.type != "cpu":  # no host sync
        return torch.where(mask[:, None, None, None], x.flip(-1), x)
    idx = mask.nonzero().squeeze(1)  # on CPU, copying only the flipped images is faster
    return x.index_copy(0, idx, x.index_select(0, idx).flip(-1))


def cutout(x: Tensor, size: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Zero one ``size`` x ``size`` square per image, placed fully inside at random."""
    if size == 0:
        return x
    b, _, h, w = x.shape
    if size > min(h, w):
        raise ValueError(f"cutout size {size} is larger than the images ({h}x{w})")
    y0 = _randint(h - size + 1, b, x, generator)[:, None]
    x0 = _randint(w - size + 1, b, x, generator)[:, None]
    ys = torch.arange(h, device=x.device)[None]
    xs = torch.arange(w, device=x.device)[None]
    in_y = (ys >= y0) & (ys < y0 + size)  # [B, H]
    in_x = (xs >= x0) & (xs < x0 + size)  # [B, W]
    return x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0)


@dataclass(frozen=True)
class Augment:
    """Random crop (with padding), horizontal flip and cutout, in that order."""

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    pad_mode: str = "reflect"

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Augment a uint8 or float batch [B, C, H, W]; returns the same dtype and shape."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator, self.pad_mode)
        if self.flip:
            x = random_flip(x, generator)
        if self.cutout:
            x = cutout(x, self.cutout, generator)
        return x
