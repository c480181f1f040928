"""Seeded train/val/test split indices (Lightning-free: predict rebuilds the test split with it)."""

from __future__ import annotations

import numpy as np

from ..config import DataConfig
from ..errors import UserError


def split_indices(n_train: int, n_test: int, cfg: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Sorted row numbers of the train/val/test splits: a seeded validation holdout of the training
    set, then the optional seeded subsets (``data.train_subset``, ``val_subset``, ``test_subset``).

    Each subset has a random stream of its own: the val and test rows do not depend on whether (or
    how) the training set is subsampled, so such runs are scored on the same images."""
    order = np.random.default_rng(seed).permutation(n_train)
    n_val = int(round(len(order) * cfg.val_fraction))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    test_idx = np.arange(n_test)

    def subset(idx: np.ndarray, size, stream: int) -> np.ndarray:
        return np.sort(np.random.default_rng([seed, stream]).permutation(idx)[:size]) if size else idx

    train_idx, val_idx, test_idx = (subset(train_idx, cfg.train_subset, 1), subset(val_idx, cfg.val_subset, 2),
                                    subset(test_idx, cfg.test_subset, 3))
    if len(train_idx) == 0:
        raise UserError(f"config: no training images left (data.val_fraction={cfg.val_fraction})")
    return {"train": train_idx, "val": val_idx, "test": test_idx}
