"""Fashion-MNIST from the standard idx files (``.gz`` or not)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .arrays import ImageArrays

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))


def _read_idx(file: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped when its name ends in .gz)."""
    try:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{file}: unreadable ({err})") from None
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise UserError(f"{file}: bad idx magic {raw[:4].hex()}, expected 000008{ndim:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise UserError(f"{file}: {len(raw) - offset} bytes of data, header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"fashion_mnist: {folder / (stem + '.gz')} not found; "
        "install it (apt-get install dataset-fashion-mnist) or set data.dataset_path"
    )


def load_fashion_mnist(path: Path, **_) -> ImageArrays:
    """Fashion-MNIST from the standard idx files: [N, 1, 28, 28]."""
    if not path.is_dir():
        raise UserError(
            f"fashion_mnist: folder {path} not found; "
            "install it (apt-get install dataset-fashion-mnist) or set data.dataset_path"
        )
    parts = []
    for prefix in ("train", "t10k"):
        images_file = _idx_file(path, f"{prefix}-images-idx3-ubyte")
        labels_file = _idx_file(path, f"{prefix}-labels-idx1-ubyte")
        x, y = _read_idx(images_file, 3), _read_idx(labels_file, 1)
        if len(x) != len(y):
            raise UserError(f"{labels_file}: {len(y)} labels for {len(x)} images in {images_file.name}")
        if len(y) and y.max() >= 10:
            raise UserError(f"{labels_file}: label {y.max()} out of range 0..9")
        parts.append((x[:, None].copy(), y.astype(np.int64)))
    (train_x, train_y), (test_x, test_y) = parts
    mean, std = FASHION_MNIST_STATS
    return ImageArrays(train_x, train_y, test_x, test_y, list(FASHION_MNIST_CLASSES), mean, std)
