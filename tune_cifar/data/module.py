"""LightningDataModule over decoded uint8 arrays; augmentation runs batched on the device."""

from __future__ import annotations

import warnings

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..config import DataConfig
from ..errors import UserError
from .augment import Augment
from .sources import ImageArrays, group_labels, load_source
from .splits import split_indices


def load_data(cfg: DataConfig, task: str) -> ImageArrays:
    """Read the dataset named by the config and check it against the config."""
    arrays = load_source(cfg.name, cfg.dataset_path, download=cfg.download,
                         cifar100_labels=cfg.cifar100_labels, image_size=cfg.image_size,
                         labels_csv=cfg.labels_csv)
    if cfg.label_groups:
        arrays = group_labels(arrays, cfg.label_groups)
    if arrays.num_classes < 2:  # before the class-count check: its advice (data.num_classes=1) is refused too
        raise UserError(f"config: {cfg.name} at {cfg.dataset_path} has {arrays.num_classes} class "
                        f"({', '.join(arrays.classes) or 'none'}); a classifier needs at least 2")
    if arrays.num_classes != cfg.num_classes:
        raise UserError(
            f"config: data.num_classes={cfg.num_classes} but {cfg.name} at {cfg.dataset_path} has "
            f"{arrays.num_classes} classes; set data.num_classes={arrays.num_classes}"
        )
    multilabel = arrays.train_y.ndim == 2
    if multilabel != (task == "classification_multilabel"):
        raise UserError(
            f"config: task.task={task} does not fit {cfg.name}: its labels are "
            f"{'multi-hot (use classification_multilabel)' if multilabel else 'single class per image'}"
        )
    return arrays


def _as_tensor(a) -> torch.Tensor:
    """Zero-copy view (arrays from Ray's object store are read-only; we never write to them)."""
    if isinstance(a, torch.Tensor):
        return a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


class _Batches(torch.utils.data.Dataset):
    """Indexed by a list of indices: one tensor gather per batch instead of one per image."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None):
        self.x, self.y, self.rows = x, y, rows  # rows: this split's rows of x/y (None: all of them)

    def __len__(self) -> int:
        return len(self.x) if self.rows is None else len(self.rows)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, device=self.x.device)
        if self.rows is not None:
            idx = self.rows[idx]
        return self.x[idx], self.y[idx]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of one epoch's random draws (stream 0: shuffle order, 1: augmentation)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class _EpochBatches(BatchSampler):
    """Shuffled batches in an order fixed by (seed, epoch): Lightning calls ``set_epoch``, so a resumed
    run (or a retried Ray trial) goes on with the order of its next epoch, not the first epoch's.

    Data-parallel (``world`` processes): ``batch_size`` is the global batch; every process draws the same
    order and takes its own slice of each global batch (``rank``), so the processes together train on
    exactly the batches one process would (the last, partial batch is dropped: every process needs a
    batch of the same size at every step)."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, seed: int, rank: int = 0, world: int = 1):
        self.generator = torch.Generator()
        super().__init__(RandomSampler(range(n), generator=self.generator), batch_size, drop_last or world > 1)
        self.seed, self.rank, self.world = seed, rank, world
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.seed, epoch, 0))

    def __iter__(self):
        if self.world == 1:
            yield from super().__iter__()
            return
        share = self.batch_size // self.world
        for batch in super().__iter__():
            yield batch[self.rank * share:(self.rank + 1) * share]


def _shard_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Evaluation rows ``rank::world`` in the same number of batches on every process (a process with
    one batch fewer would wait forever at a collective of the next); the metrics are then synced over
    the processes (torchmetrics' states, ``sync_dist`` for the loss), so every row is counted once."""
    rows = np.arange(rank, n, world)
    largest = -(-n // world)
    batches = max(1, min(-(-largest // batch_size), n // world))  # no empty batch in the smallest shard
    return [b.tolist() for b in np.array_split(rows, batches)]


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test splits of an ImageArrays; seeded split, optional subsets.

    ``seed`` draws the splits (``run.seed``); ``train_seed`` the shuffle order and augmentation (``run.train_seed``,
    default ``seed``): a run trained again with another training seed is scored on the same validation images."""

    def __init__(self, cfg: DataConfig, arrays: ImageArrays, seed: int = 0, device: torch.device | None = None,
                 train_seed: int | None = None):
        super().__init__()
        self.cfg, self.arrays, self.seed = cfg, arrays, seed
        self.train_seed = seed if train_seed is None else train_seed
        self.device = device  # where to keep the data; default: decided by data.on_device and the trainer
        self.augment = Augment(cfg.augment.crop_padding, cfg.augment.flip, cfg.augment.cutout)
        self._splits: dict[str, _Batches] = {}
        self._augment_rng: tuple[int, torch.Generator] | None = None  # (epoch, its generator)
        self.split_indices: dict[str, np.ndarray] = {}

    # -- splits ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        a = self.arrays
        # Row numbers of each split in the source arrays (predict rebuilds the test split the same way).
        self.split_indices = split_indices(len(a.train_x), len(a.test_x), self.cfg, self.seed)
        train_idx, val_idx, test_idx = (self.split_indices[k] for k in ("train", "val", "test"))
        device = self._data_device()
        x_train, y_train = _as_tensor(a.train_x), _as_tensor(a.train_y)
        x_test, y_test = _as_tensor(a.test_x), _as_tensor(a.test_y)

        def take(x, y, idx):
            idx_t = torch.as_tensor(idx, device=x.device)
            if device.type == "cpu":  # index the shared arrays (e.g. Ray's object store): no copy per trial
                return _Batches(x, y, idx_t)
            return _Batches(x[idx_t].to(device), y[idx_t].to(device))

        self._splits = {"train": take(x_train, y_train, train_idx), "test": take(x_test, y_test, test_idx)}
        if len(val_idx):
            self._splits["val"] = take(x_train, y_train, val_idx)

    def _data_device(self) -> torch.device:
        """Keep data on the accelerator when asked (auto: on GPUs, with no loader workers)."""
        if self.device is not None:
            return torch.device(self.device)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        wanted = self.cfg.on_device
        if wanted or (wanted is None and device.type == "cuda" and self.cfg.num_workers == 0):
            if self.cfg.num_workers:
                raise UserError("config: data.on_device=true needs data.num_workers=0")
            return device
        return torch.device("cpu")

    def split_size(self, name: str) -> int:
        self.setup()
        return len(self._splits[name]) if name in self._splits else 0

    # -- loaders --------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """(rank, number of processes) of data-parallel training (Lightning's DDP, Ray Train); (0, 1) alone."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self._splits[name]
        rank, world = self._world()
        drop_last = shuffle and len(ds) > batch_size
        if shuffle:
            if batch_size % world:
                raise UserError(f"config: data.train_batch_size={batch_size} is the global batch of {world} "
                                f"processes; allowed: a multiple of {world}")
            batches = _EpochBatches(len(ds), batch_size, drop_last, self.train_seed, rank, world)
        elif world > 1:
            batches = _shard_batches(len(ds), batch_size, rank, world)
        else:
            batches = BatchSampler(SequentialSampler(ds), batch_size, drop_last)
        on_device = ds.x.device.type != "cpu"
        return DataLoader(ds, sampler=batches, batch_size=None,
                          num_workers=0 if on_device else self.cfg.num_workers,
                          pin_memory=not on_device and torch.cuda.is_available(),
                          persistent_workers=self.cfg.num_workers > 0 and not on_device)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.train_batch_size, shuffle=True)

    def val_dataloader(self):
        if "val" not in self._splits:
            return []
        return self._loader("val", self.cfg.inference_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.inference_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches where they now live (the training device), with draws seeded by
        (training seed, epoch) like the shuffle order: a resumed run does not repeat its first epoch's crops."""
        if self.trainer is not None and self.trainer.training:
            x, y = batch
            epoch = self.trainer.current_epoch
            if self._augment_rng is None or self._augment_rng[0] != epoch or self._augment_rng[1].device != x.device:
                rank = self._world()[0]  # each data-parallel process its own draws; the first as one process's
                s = self.train_seed
                stream = epoch_seed(s, epoch, 1) if rank == 0 else epoch_seed(s, epoch, 1 + rank * 16)
                gen = torch.Generator(device=x.device).manual_seed(stream)
                self._augment_rng = (epoch, gen)
            batch = (self.augment(x, self._augment_rng[1]), y)
        return batch
