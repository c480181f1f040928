"""Record the learning curve of every configuration of a discretised cpu_small space, once, without Ray.

    nice -n 19 python bench/record_curves.py [--images 2000] [--epochs 8] [--out bench/data/curves.json]
                                             [--limit N] [--threads 1]

The input of ``bench/search_seeds.py``, which replays searchers and schedulers over these curves.

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


def grid_configs() -> list[dict]:
    """Every configuration of ``GRID`` (with its ``lr`` index, what the replay's samplers choose)."""
    out = []
    for opt, wd, bs, model in itertools.product(GRID["optimizer.optimizer"], GRID["optimizer.weight_decay"],
                                                GRID["data.train_batch_size"], GRID["model.model_name"]):
        for lr in GRID["optimizer.lr"][opt]:
            params = {"optimizer.optimizer": opt, "optimizer.lr": lr, "optimizer.weight_decay": wd,
                      "data.train_batch_size": bs, "model.model_name": model}
            if opt == "sgd":
                params.update(FIXED)
            out.append(params)
    return out


# --------------------------------------------------------------------------- the one place that uses tune_cifar


def base_overrides(images: int, epochs: int) -> list[str]:
    return ["data=fashion_mnist", "model=small_cnn", f"data.train_subset={images}", "data.val_subset=2000",
            "data.test_subset=2000", "optimizer.scheduler.name=cosine", f"trainer.max_epochs={epochs}",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0"]


def train_curve(overrides: list[str], params: dict, arrays=None):
    """Train one configuration with tune_cifar's config, data module, ClassificationSystem and Trainer
    (as a search trial does); returns (per-epoch records, arrays for the next call)."""
    import pytorch_lightning as pl
    import torch

    from tune_cifar.config import load_config
    from tune_cifar.data import ImageDataModule, load_data
    from tune_cifar.training import build_system, build_trainer

    cfg = load_config([*overrides, *(f"{k}={v}" for k, v in params.items())])
    arrays = arrays if arrays is not None else load_data(cfg.data, cfg.task.task)
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    datamodule = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed)
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
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "curves.json")
    args = p.parse_args(argv)

    import logging

    import torch

    torch.set_num_threads(args.threads)
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    overrides = base_overrides(args.images, args.epochs)
    configs = grid_configs()[: args.limit]
    doc = {"source": "bench/record_curves.py", "base": overrides, "grid": GRID, "fixed_sgd": FIXED,
           "epochs": args.epochs, "threads": args.threads, "configs": []}
    if args.out.exists():  # resume a partial recording made with the same settings
        old = json.loads(args.out.read_text())
        if old.get("base") == overrides:
            doc["configs"] = old["configs"]
    done = [c["params"] for c in doc["configs"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    arrays = None
    for i, params in enumerate(configs):
        if params in done:
            continue
        start = time.perf_counter()
        curve, arrays = train_curve(overrides, params, arrays)
        doc["configs"].append({"params": params, "curve": curve})
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(args.out)
        best = max(curve, key=lambda e: e["val_accuracy"])
        print(f"[{i + 1}/{len(configs)}] {params} best val {best['val_accuracy']:.4f} (epoch {best['epoch']}) "
              f"test {best['test_accuracy']:.4f} {time.perf_counter() - start:.0f}s", flush=True)
    return doc


if __name__ == "__main__":
    main()
