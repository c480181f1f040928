"""Record the learning curve of every configuration of a discretised cpu_small space, without Ray.

    nice -n 19 python bench/record_curves.py [--images 2000] [--epochs 8] [--out bench/data/curves.json]
                                             [--limit N] [--threads 1]
    nice -n 19 python bench/record_curves.py --train-seeds 1 2 [--subset 16|24]   # -> curves_seeds.json

The input of ``bench/search_seeds.py`` and ``bench/search_budget.py``, which replay searchers and
schedulers over these curves.

Space: the parameters of ``search_spaces/cpu_small.yaml`` (optimizer, lr per optimizer, weight decay,
batch size, model), each on a small grid (``GRID``) so that a replayed sampler can only propose a
configuration that was really trained: the replay searches this finite grid, not the continuous space.
SGD's momentum and nesterov are fixed (0.9, nesterov) to keep the grid small enough to train on 2 cores.

Real Fashion-MNIST (``/usr/share/datasets/fashion-mnist``): ``--images`` training images, 2,000 validation,
2,000 test; cosine schedule over ``--epochs``. Each configuration is trained once for ``--epochs`` epochs
with the trial's ``trainer.max_epochs`` = ``--epochs`` (what a trial of the search gets, whether ASHA stops
it or not: the cosine schedule of its first k epochs is the same), seed 42 for all. Recorded per epoch:
validation accuracy and loss (Lightning's metrics, what the search ranks by) and the test accuracy of that
epoch's weights (so the replay can say what each method would export). The JSON is written after every
configuration (a killed run keeps what it finished; a rerun skips those).

``--train-seeds S ...`` (issue 18) trains the configurations of ``SUBSET`` again with other **training**
seeds: weights, shuffle order and augmentation draws come from S, while the validation/test split keeps
the seed of the first recording (``run.seed`` = 42), so every seed is ranked on the same 2,000 validation
images. tune_cifar seeds both from ``run.seed`` (``ImageDataModule(seed=...)``), so this script splits
them itself (``TrainSeeded`` below); together with ``curves.json`` (training seed 42) each configuration
of the subset then has 1 + len(S) seeds. The subset is a product sub-grid (a smaller grid with more seeds,
what 2 shared cores allow), ordered batch size 32 first, so a recording stopped half-way still holds a
product grid (the batch-32 half).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]

# The grid: cpu_small.yaml's params, 3 values per continuous parameter (its bounds' ends and log-middle).
GRID = {
    "optimizer.optimizer": ["sgd", "adamw"],
    "optimizer.lr": {"sgd": [3e-3, 3e-2, 0.3], "adamw": [3e-4, 1e-3, 1e-2]},  # depends on the optimizer
    "optimizer.weight_decay": [1e-5, 1e-3],
    "data.train_batch_size": [32, 128],
    "model.model_name": ["tiny_cnn", "small_cnn"],
}
FIXED = {"optimizer.momentum": 0.9, "optimizer.nesterov": True}  # SGD only (Adam ignores them)

# Issue 18's seeded sub-grid: weight decay fixed at 1e-5 (1e-5 and 1e-3 gave curves within 0.5 pt of each
# other at seed 42: a dimension with no effect), two learning rates per optimizer spanning weak to best.
# 16 configurations (8 small_cnn, 8 tiny_cnn); --subset 24 adds the third learning rate of each optimizer.
SUBSET = {
    "optimizer.optimizer": ["sgd", "adamw"],
    "optimizer.lr": {"sgd": [3e-2, 0.3], "adamw": [3e-4, 1e-2]},
    "optimizer.weight_decay": [1e-5],
    "data.train_batch_size": [32, 128],
    "model.model_name": ["tiny_cnn", "small_cnn"],
}
SUBSET_EXTRA_LR = {"sgd": [3e-3], "adamw": [1e-3]}


def grid_configs(grid: dict = GRID) -> list[dict]:
    """Every configuration of ``grid`` (with its ``lr`` index, what the replay's samplers choose)."""
    out = []
    for opt, wd, bs, model in itertools.product(grid["optimizer.optimizer"], grid["optimizer.weight_decay"],
                                                grid["data.train_batch_size"], grid["model.model_name"]):
        for lr in grid["optimizer.lr"][opt]:
            params = {"optimizer.optimizer": opt, "optimizer.lr": lr, "optimizer.weight_decay": wd,
                      "data.train_batch_size": bs, "model.model_name": model}
            if opt == "sgd":
                params.update(FIXED)
            out.append(params)
    return out


def subset_configs(size: int = 16) -> list[dict]:
    """The seeded sub-grid, batch size 32 first (``SUBSET``; 24: with ``SUBSET_EXTRA_LR`` after the 16)."""
    def by_batch(grid):
        return sorted(grid_configs(grid), key=lambda c: GRID["data.train_batch_size"].index(c["data.train_batch_size"]))

    out = by_batch(SUBSET)
    if size == 24:
        out += by_batch({**SUBSET, "optimizer.lr": SUBSET_EXTRA_LR})
    return out


# --------------------------------------------------------------------------- the one place that uses tune_cifar


def base_overrides(images: int, epochs: int) -> list[str]:
    return ["data=fashion_mnist", "model=small_cnn", f"data.train_subset={images}", "data.val_subset=2000",
            "data.test_subset=2000", "optimizer.scheduler.name=cosine", f"trainer.max_epochs={epochs}",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0"]


def train_curve(overrides: list[str], params: dict, arrays=None, train_seed: int | None = None):
    """Train one configuration with tune_cifar's config, data module, ClassificationSystem and Trainer
    (as a search trial does); returns (per-epoch records, arrays for the next call). ``train_seed``:
    weights, shuffle and augmentation from it, the split still from ``run.seed`` (None: both from run.seed)."""
    import pytorch_lightning as pl
    import torch

    from tune_cifar.config import load_config
    from tune_cifar.data import ImageDataModule, load_data
    from tune_cifar.training import build_system, build_trainer

    class TrainSeeded(ImageDataModule):
        """The split from ``seed`` (in setup), then shuffle order and augmentation draws from ``train_seed``
        (the data module reads ``self.seed`` for those only after setup)."""

        def __init__(self, *a, train_seed: int, **kw):
            super().__init__(*a, **kw)
            self.train_seed = train_seed

        def setup(self, stage=None):
            super().setup(stage)
            self.seed = self.train_seed

    cfg = load_config([*overrides, *(f"{k}={v}" for k, v in params.items())])
    arrays = arrays if arrays is not None else load_data(cfg.data, cfg.task.task)
    seed = cfg.run.seed if train_seed is None else train_seed
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = TrainSeeded(cfg.data, arrays, seed=cfg.run.seed, train_seed=seed)
    system = build_system(cfg, arrays)
    epochs: list[dict] = []

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer, module):
            if trainer.sanity_checking:
                return
            correct = total = 0
            with torch.no_grad():  # test accuracy of this epoch's weights (module is in eval mode here)
                for x, y in trainer.datamodule.test_dataloader():
                    correct += int((module(x).argmax(1) == y).sum())
                    total += len(y)
            m = trainer.callback_metrics
            epochs.append({"epoch": trainer.current_epoch + 1, "val_accuracy": float(m["accuracy/val"]),
                           "val_loss": float(m["loss/val"]), "test_accuracy": correct / total,
                           "time_s": time.perf_counter() - start})

    trainer = build_trainer(cfg, None, callbacks=[Record()], checkpointing=False, loggers=False,
                            enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(system, datamodule=datamodule)
    return epochs, arrays


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="only the first N grid configurations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-seeds", type=int, nargs="+", default=None,
                   help="record SUBSET with these training seeds (split seed unchanged) into curves_seeds.json")
    p.add_argument("--subset", type=int, choices=(16, 24), default=16)
    p.add_argument("--out", type=Path, default=None, help="default: bench/data/curves.json "
                   "(curves_seeds.json with --train-seeds)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "bench" / "data" / ("curves_seeds.json" if args.train_seeds else "curves.json")

    import logging

    import torch

    torch.set_num_threads(args.threads)
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    overrides = base_overrides(args.images, args.epochs)
    if args.train_seeds:  # (config, training seed) pairs, a configuration's seeds together
        grid = {**SUBSET, "optimizer.lr": {k: v + (SUBSET_EXTRA_LR[k] if args.subset == 24 else [])
                                           for k, v in SUBSET["optimizer.lr"].items()}}
        jobs = [(c, s) for c in subset_configs(args.subset)[: args.limit] for s in args.train_seeds]
    else:
        grid = GRID
        jobs = [(c, None) for c in grid_configs()[: args.limit]]
    doc = {"source": "bench/record_curves.py", "base": overrides, "grid": grid, "fixed_sgd": FIXED,
           "epochs": args.epochs, "threads": args.threads, "configs": []}
    if args.train_seeds:
        doc["split_seed"] = 42  # run.seed of the base config: the validation/test split of every seed
    if args.out.exists():  # resume a partial recording made with the same settings
        old = json.loads(args.out.read_text())
        if old.get("base") == overrides:
            doc["configs"] = old["configs"]
    done = [(c["params"], c.get("train_seed")) for c in doc["configs"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    arrays = None
    for i, (params, train_seed) in enumerate(jobs):
        if (params, train_seed) in done:
            continue
        start = time.perf_counter()
        curve, arrays = train_curve(overrides, params, arrays, train_seed)
        doc["configs"].append({"params": params, "curve": curve}
                              | ({"train_seed": train_seed} if train_seed is not None else {}))
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(args.out)
        best = max(curve, key=lambda e: e["val_accuracy"])
        print(f"[{i + 1}/{len(jobs)}] {params} seed {train_seed} best val {best['val_accuracy']:.4f} "
              f"(epoch {best['epoch']}) test {best['test_accuracy']:.4f} {time.perf_counter() - start:.0f}s", flush=True)
    return doc


if __name__ == "__main__":
    main()
