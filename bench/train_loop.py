"""Lightning ClassificationSystem vs a plain PyTorch loop: same model, data, batch size, augmentation.

    python bench/train_loop.py [--images 4096] [--epochs 3] [--rounds 5] [--model small_cnn] [--batch-size 128]

Real Fashion-MNIST images (Debian's dataset-fashion-mnist). Epoch 1 of each run is a warm-up;
the two run alternately (which goes first alternates too) for ``--rounds`` rounds; each round gives
a ratio of the two median rates; printed: images/s (median over all epochs) and the ratio's median,
min and max over the rounds (the spread says how much a shared machine moved it).
``bench/gpu_epoch.py`` reuses these two loops on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch

from tune_cifar.config import load_config
from tune_cifar.data import ImageDataModule, load_data
from tune_cifar.training import build_system, build_trainer, resolve_precision

warnings.filterwarnings("ignore")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        _sync(pl_module.device)
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.times.append(time.perf_counter() - self._t)


def lightning_epochs(cfg, arrays, epochs: int) -> list[float]:
    """Seconds per training epoch through tune_cifar's own Trainer (no validation, no logging)."""
    pl.seed_everything(0, verbose=False)
    system = build_system(cfg, arrays)
    timer = EpochTimer()
    trainer = build_trainer(cfg, None, callbacks=[timer], checkpointing=False, loggers=False,
                            max_epochs=epochs, limit_val_batches=0, enable_progress_bar=False,
                            enable_model_summary=False)
    trainer.fit(system, datamodule=ImageDataModule(cfg.data, arrays, seed=0))
    return timer.times


def plain_epochs(cfg, arrays, epochs: int, device: torch.device) -> list[float]:
    """The hand-written loop: same system (model + preprocessing), optimizer, precision and data."""
    pl.seed_everything(0, verbose=False)
    system = build_system(cfg, arrays).to(device)
    dm = ImageDataModule(cfg.data, arrays, seed=0, device=None if cfg.data.on_device is False else device)
    dm.setup("fit")
    loader = dm.train_dataloader()
    opt = torch.optim.SGD(system.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum)
    precision = resolve_precision(cfg.trainer)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16-mixed" else (
        (lambda: torch.autocast(device.type, dtype=torch.float16)) if precision == "16-mixed" else contextlib.nullcontext)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    system.train()
    times = []
    for _ in range(epochs):
        _sync(device)
        t = time.perf_counter()
        for x, y in loader:
            x, y = dm.augment(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            with autocast():
                loss = system.loss(system(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def compare(cfg, arrays, n_images: int, epochs: int, rounds: int, device: torch.device) -> dict:
    """Alternate the two loops; median images/s of each (first epoch of every run dropped)."""
    rates: dict[str, list[float]] = {"lightning": [], "plain": []}
    ratios: list[float] = []
    peak: dict[str, int] = {}
    for i in range(rounds):
        this: dict[str, float] = {}
        for name in ("lightning", "plain") if i % 2 == 0 else ("plain", "lightning"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = lightning_epochs(cfg, arrays, epochs) if name == "lightning" else \
                plain_epochs(cfg, arrays, epochs, device)
            rates[name] += [n_images / t for t in times[1:]]
            this[name] = statistics.median(n_images / t for t in times[1:])
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device))
        ratios.append(this["lightning"] / this["plain"])
    out = {k: statistics.median(v) for k, v in rates.items()}
    out["ratio"] = statistics.median(ratios)
    out["ratios"] = ratios
    out["ratio_spread"] = (min(ratios), max(ratios))
    out["peak_mib"] = {k: v / 2**20 for k, v in peak.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    cfg = load_config(["data=fashion_mnist", "model=small_cnn", f"model.model_name={args.model}",
                       f"data.train_subset={args.images}", f"data.train_batch_size={args.batch_size}",
                       "trainer.accelerator=cpu", "optimizer.scheduler.name=none", "optimizer.weight_decay=0",
                       "optimizer.nesterov=false"])
    arrays = load_data(cfg.data, cfg.task.task)
    n = min(args.images, int(round(len(arrays.train_x) * (1 - cfg.data.val_fraction))))
    n -= n % args.batch_size  # drop_last
    r = compare(cfg, arrays, n, args.epochs, args.rounds, torch.device("cpu"))
    print(f"threads={torch.get_num_threads()} images/epoch={n} batch={args.batch_size} model={args.model}")
    print("| loop | images/s (median) |\n|---|---|")
    print(f"| Lightning ClassificationSystem | {r['lightning']:.0f} |\n| plain PyTorch loop | {r['plain']:.0f} |")
    lo, hi = r["ratio_spread"]
    print(f"ratio Lightning/plain: median {r['ratio']:.3f} over {len(r['ratios'])} rounds "
          f"(min {lo:.3f}, max {hi:.3f}; rounds: {', '.join(f'{x:.3f}' for x in r['ratios'])})")


if __name__ == "__main__":
    main()
