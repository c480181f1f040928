"""Test helper (not a test module): write tiny datasets in the real on-disk formats.

CIFAR files are written like the official archives by default: Python-2 style
protocol-2 pickles (byte strings, ``numpy.core.multiarray._reconstruct``) of a dict
with b"batch_label", b"labels" (list of int), b"data" (uint8 [n, 3072], each row the
R, G, B planes of a 32x32 image in row-major order) and b"filenames".
Pass ``protocol=<int>`` to write a plain Python-3 pickle instead.
"""

from __future__ import annotations

import colorsys
import pickle
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


class _Py2Pickler(pickle._Pickler):  # pure-Python pickler, so opcodes can be overridden
    """Writes bytes and str as Python-2 ``str`` and numpy globals as numpy 1.x names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin-1"))

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[type] = save_global


def dump(obj, file: Path, protocol: Optional[int] = None) -> None:
    """Pickle ``obj`` like the official CIFAR files (protocol=None) or with ``protocol``."""
    with open(file, "wb") as f:
        if protocol is None:
            _Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol=protocol)


def class_colour(k: int, num_classes: int) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(k / num_classes, 0.9, 0.9)
    return np.array([r, g, b]) * 255


def make_images(labels: np.ndarray, num_classes: int, rng, learnable: bool, size: int = 32) -> np.ndarray:
    """uint8 [n, 3, size, size]: class colour plus noise (learnable) or pure noise."""
    n = len(labels)
    if not learnable:
        return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    base = np.stack([class_colour(int(k), num_classes) for k in labels]) if n else np.zeros((0, 3))
    noisy = base[:, :, None, None] + rng.normal(0, 25, size=(n, 3, size, size))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def write_cifar_batch(file: Path, data: np.ndarray, labels: dict, protocol: Optional[int] = None) -> None:
    """One data file: ``labels`` maps label keys (b"labels", b"fine_labels", ...) to int lists."""
    d = {b"batch_label": f"batch {file.name}".encode()}
    d.update({k: [int(v) for v in vals] for k, vals in labels.items()})
    d[b"data"] = np.ascontiguousarray(data, dtype=np.uint8).reshape(len(data), 3072)
    d[b"filenames"] = [f"img_{i:05d}.png".encode() for i in range(len(data))]
    dump(d, file, protocol)


def write_cifar10(
    root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0, learnable: bool = True,
    protocol: Optional[int] = None,
) -> Path:  # fmt: skip
    """Write ``root/cifar-10-batches-py/`` (5 data batches, test_batch, batches.meta); return that folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_y = rng.integers(0, 10, n_train)
    test_y = rng.integers(0, 10, n_test)
    train_x = make_images(train_y, 10, rng, learnable)
    for i, idx in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        write_cifar_batch(folder / f"data_batch_{i}", train_x[idx], {b"labels": train_y[idx]}, protocol)
    write_cifar_batch(folder / "test_batch", make_images(test_y, 10, rng, learnable), {b"labels": test_y}, protocol)
    meta = {b"num_cases_per_batch": max(1, n_train // 5), b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072}  # fmt: skip
    dump(meta, folder / "batches.meta", protocol)
    return folder


def cifar100_names() -> tuple[list[str], list[str]]:
    return [f"fine_{i:02d}" for i in range(100)], [f"coarse_{i:02d}" for i in range(20)]


def write_cifar100(
    root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0, learnable: bool = True,
    protocol: Optional[int] = None,
) -> Path:  # fmt: skip
    """Write ``root/cifar-100-python/`` (train, test, meta); coarse label = fine // 5."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        labels = {b"fine_labels": fine, b"coarse_labels": fine // 5}
        write_cifar_batch(folder / name, make_images(fine, 100, rng, learnable), labels, protocol)
    fine_names, coarse_names = cifar100_names()
    meta = {b"fine_label_names": [c.encode() for c in fine_names],
            b"coarse_label_names": [c.encode() for c in coarse_names]}  # fmt: skip
    dump(meta, folder / "meta", protocol)
    return folder


def write_image_folder(
    root: Path, classes: Sequence[str] = ("cat", "dog"), n_per_class: int = 4, size: int = 16,
    split: bool = True, mode: str = "RGB",
) -> Path:  # fmt: skip
    """PNGs in ``root/{train,test}/<class>/`` (``split``) or ``root/<class>/``; return root."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = Path(root)
    for split_name in ("train", "test") if split else ("",):
        for k, cls in enumerate(classes):
            folder = root / split_name / cls
            folder.mkdir(parents=True, exist_ok=True)
            x = make_images(np.full(n_per_class, k), len(classes), rng, True, size)
            for i, img in enumerate(x):
                pil = Image.fromarray(img.transpose(1, 2, 0), "RGB").convert(mode)
                pil.save(folder / f"{cls}_{i}.png")
    return root
