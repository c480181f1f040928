"""Datasets decoded once into uint8 arrays, a DataModule over them, batched augmentation."""

from .sources import ImageArrays, load_source

__all__ = ["ImageArrays", "ImageDataModule", "load_data", "load_source"]


def __getattr__(name: str):
    """``ImageDataModule`` and ``load_data`` import Lightning: loaded on first use, so that
    ``tune_cifar.data.sources`` / ``.splits`` stay light (predict starts without Lightning)."""
    if name in ("ImageDataModule", "load_data"):
        from . import module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
