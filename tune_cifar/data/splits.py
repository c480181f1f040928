"""Seeded train/val/test split indices (Lightning-free: predict rebuilds the test split with it)."""

from __future__ import annotations

import numpy as np

from ..config import DataConfig
from ..errors import UserError


def split_indices(n_train: int, n_test: int, cfg: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Sorted row numbers of the train/val/test splits: a seeded validation holdout of the training
    set, then the optional seeded subsets (``data.train_subset``, ``val_subset``, ``test_subset``)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_train)
    n_val = int(round(len(order) * cfg.val_fraction))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    if cfg.train_subset:
        train_idx = np.sort(rng.permutation(train_idx)[: cfg.train_subset])
    if cfg.val_subset:
        val_idx = np.sort(rng.permutation(val_idx)[: cfg.val_subset])
    test_idx = np.arange(n_test)
    if cfg.test_subset:
        test_idx = np.sort(rng.permutation(test_idx)[: cfg.test_subset])
    if len(train_idx) == 0:
        raise UserError(f"config: no training images left (data.val_fraction={cfg.val_fraction})")
    return {"train": train_idx, "val": val_idx, "test": test_idx}
