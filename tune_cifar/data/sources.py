"""Read image datasets into uint8 arrays, decoded once: the entry point (``load_source``).

Sources, one registration each (``register_source``: config validation of ``data.name``, this
loader and the search's "loaded once" keys read the registry ``SOURCES``); the built-in ones:

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

A new dataset is one ``register_source(name, load, ...)`` call plus a ``config/data/<name>.yaml``
(or one in a ``--config-dir`` folder): ``load(path, **needs)`` returns ``ImageArrays``.

Every bad input raises ``UserError`` naming the file or config key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import UserError, check_choice
from ..registry import register
from .arrays import ImageArrays, group_labels, resize_images, subset
from .cifar import load_cifar10, load_cifar100
from .fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist
from .folder import load_folder

__all__ = ["SOURCES", "ImageArrays", "Source", "group_labels", "load_source", "register_source",
           "source_keys", "subset"]

# data.* keys a source may ask for (``needs``) with their defaults; dataset_path is always given, as ``path``.
OPTIONS = {"download": True, "image_size": None, "cifar100_labels": "fine", "labels_csv": None}
GENERAL = ("download", "image_size")  # mean something for any source (download if it can; resized after)


@dataclass(frozen=True)
class Source:
    """A registered dataset: ``load(path, **{key: data.<key> for key in needs})`` -> ImageArrays."""

    name: str
    load: Callable[..., ImageArrays]
    default_path: Optional[str] = None  # used when data.dataset_path is empty; None: it is required
    needs: tuple[str, ...] = ()  # keys of OPTIONS; a non-default value of another one is refused


SOURCES: dict[str, Source] = {}


def register_source(name: str, load: Callable[..., ImageArrays], *, default_path: str | Path | None = None,
                    needs: tuple[str, ...] = (), replace: bool = False) -> Source:
    """Register dataset ``name`` (its config is ``data=<name>`` with ``name: <name>``; a name once,
    ``replace=True`` to replace one: see ``tune_cifar.registry``)."""
    unknown = sorted(set(needs) - set(OPTIONS))
    if unknown:
        raise ValueError(f"dataset source {name!r}: unknown needs {unknown}; allowed: {sorted(OPTIONS)}")
    source = Source(name, load, None if default_path is None else str(default_path), tuple(needs))
    return register(SOURCES, "dataset source", name, source, replace=replace)


register_source("cifar10", load_cifar10, default_path="data", needs=("download",))
register_source("cifar100", load_cifar100, default_path="data", needs=("download", "cifar100_labels"))
register_source("fashion_mnist", load_fashion_mnist, default_path=FASHION_MNIST_DIR)
register_source("folder", load_folder, needs=("image_size", "labels_csv"))  # resizes while decoding


def source_keys() -> tuple[str, ...]:
    """``data.<key>`` for every option some source needs: they pick the dataset, so a search cannot vary
    them per trial (read by the search's LOADED_ONCE check)."""
    return tuple(f"data.{k}" for k in sorted({k for s in SOURCES.values() for k in s.needs}))


def load_source(name: str, path: str | Path | None, *, image_size: Optional[int] = None, **options) -> ImageArrays:
    """Load dataset ``name`` from ``path`` (None/"" -> the source's default folder); ``options`` are the
    data.* keys of OPTIONS (download, cifar100_labels, labels_csv): each source gets those it needs."""
    check_choice("data.name", name, SOURCES)
    source = SOURCES[name]
    options = {**{k: v for k, v in OPTIONS.items() if k in source.needs}, **options, "image_size": image_size}
    for key, value in options.items():
        if key not in OPTIONS:
            raise TypeError(f"load_source: unknown option {key!r}")
        if key not in source.needs and key not in GENERAL and value != OPTIONS[key]:
            users = [s.name for s in SOURCES.values() if key in s.needs]
            raise UserError(f"data.{key} is only supported with data.name={'/'.join(users)}, not {name}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"data.image_size={image_size!r} must be a positive integer or null")
    if not path:
        if source.default_path is None:
            raise UserError(f"data.dataset_path is required for data.name={name}")
        path = source.default_path
    arrays = source.load(Path(path).expanduser(), **{k: v for k, v in options.items() if k in source.needs})
    if image_size and arrays.image_size != (image_size, image_size):  # sources that do not resize themselves
        arrays = dataclasses.replace(
            arrays, train_x=resize_images(arrays.train_x, image_size), test_x=resize_images(arrays.test_x, image_size)
        )
    return arrays
