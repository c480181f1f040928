"""Datasets decoded once into uint8 arrays, a DataModule over them, batched augmentation."""

from .module import ImageDataModule, load_data
from .sources import ImageArrays, load_source

__all__ = ["ImageArrays", "ImageDataModule", "load_data", "load_source"]
