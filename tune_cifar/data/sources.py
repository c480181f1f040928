"""Read image datasets into uint8 arrays, decoded once: the entry point (``load_source``).

Sources (``SOURCES``), one module each:

* ``cifar10`` / ``cifar100`` (``cifar.py``): the original pickle layout, read with a
  restricted unpickler (see ``_CifarUnpickler``); downloaded with torchvision's helper
  when absent and online.
* ``fashion_mnist`` (``fashion_mnist.py``): the standard idx ``.gz`` files.
* ``folder`` (``folder.py``): ``<path>/train/<class>/*.png|jpg|jpeg`` and ``<path>/test/<class>/...``.
  Without ``train/``, ``<path>/<class>/...`` is split into train and a seeded 20 %
  test holdout. Multilabel: ``labels_csv`` with columns ``file,labels`` (``file``
  relative to ``<path>``, labels separated by spaces or ``;``); rows whose file is
  under ``train/``/``test/`` go there, otherwise the same 20 % holdout applies.

``ImageArrays`` and the helpers on it whatever its source (``channel_stats``, ``resize_images``,
``group_labels``, ``subset``) live in ``arrays.py``; ``ImageArrays``, ``group_labels`` and ``subset``
are re-exported here.

Every bad input raises ``UserError`` naming the file or config key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from ..errors import UserError, check_choice
from .arrays import ImageArrays, group_labels, resize_images, subset
from .cifar import load_cifar10, load_cifar100
from .fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist
from .folder import load_folder

__all__ = ["DEFAULT_PATHS", "SOURCES", "ImageArrays", "group_labels", "load_source", "subset"]

SOURCES: dict[str, Callable[..., ImageArrays]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "fashion_mnist": load_fashion_mnist,
    "folder": load_folder,
}
DEFAULT_PATHS = {"cifar10": "data", "cifar100": "data", "fashion_mnist": FASHION_MNIST_DIR}


def load_source(
    name: str,
    path: str | Path | None,
    *,
    download: bool = True,
    cifar100_labels: str = "fine",
    image_size: Optional[int] = None,
    labels_csv: Optional[str] = None,
) -> ImageArrays:
    """Load dataset ``name`` from ``path`` (None/"" -> the source's default folder)."""
    check_choice("data.name", name, SOURCES)
    if labels_csv and name != "folder":
        raise UserError(f"data.labels_csv is only supported with data.name=folder, not {name}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"data.image_size={image_size!r} must be a positive integer or null")
    if not path:
        if name not in DEFAULT_PATHS:
            raise UserError(f"data.dataset_path is required for data.name={name}")
        path = DEFAULT_PATHS[name]
    arrays = SOURCES[name](
        Path(path).expanduser(),
        download=download,
        cifar100_labels=cifar100_labels,
        image_size=image_size,
        labels_csv=labels_csv,
    )
    if image_size and arrays.image_size != (image_size, image_size):  # cifar / fashion_mnist
        arrays = dataclasses.replace(
            arrays, train_x=resize_images(arrays.train_x, image_size), test_x=resize_images(arrays.test_x, image_size)
        )
    return arrays
