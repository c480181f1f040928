"""ASHA + Optuna TPE vs FIFO + random search, same number of trials, on a real Fashion-MNIST subset.

    python bench/search_asha_vs_fifo.py [--num-samples 24] [--epochs 8] [--images 2000] [--seed 0]
                                      [--reduction-factor 4]

Both searches use the same space (optimizer, lr per optimizer, momentum, weight decay, batch size) for small_cnn,
2 trials at a time with 1 CPU each, ``max_epochs`` epochs per trial at most. Reported per search:
the best validation accuracy (best trial at its best epoch), the exported model's test accuracy,
total trial-epochs and wall time. Goal: ASHA within 0.5 points of FIFO's best in <= 40% of its
trial-epochs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import yaml

warnings.filterwarnings("ignore")


def space_doc(images: int, num_samples: int, epochs: int, seed: int, asha: bool, storage: Path,
              reduction_factor: int = 4) -> dict:
    return {
        "base": ["data=fashion_mnist", "model=small_cnn", f"data.train_subset={images}", "data.val_subset=2000",
                 "data.test_subset=2000", "optimizer.scheduler.name=cosine"],
        "params": {
            "optimizer.optimizer": {"choice": ["sgd", "adamw"]},
            "optimizer.lr": {"depends_on": "optimizer.optimizer",
                             "loguniform": {"sgd": [1e-3, 0.5], "adamw": [1e-4, 3e-2]}},
            "optimizer.momentum": {"uniform": [0.8, 0.95], "when": {"optimizer.optimizer": "sgd"}},
            "optimizer.weight_decay": {"loguniform": [1e-5, 1e-2]},
            "data.train_batch_size": {"choice": [32, 64, 128, 256]},
        },
        "search": {
            "metric": "accuracy/val", "mode": "max", "num_samples": num_samples, "max_concurrent_trials": 2,
            "resources": {"cpu": 1},
            "scheduler": ({"name": "asha", "max_epochs": epochs, "grace_period": 1,
                           "reduction_factor": reduction_factor}
                          if asha else {"name": "fifo", "max_epochs": epochs}),
            "searcher": {"name": "tpe" if asha else "random", "seed": seed, "n_startup_trials": 4},
            "experiment": "asha_tpe" if asha else "fifo_random", "storage_path": str(storage),
            "checkpoints_to_keep": 1,
        },
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-samples", type=int, default=24)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reduction-factor", type=int, default=4, help="ASHA's reduction factor (grace period 1)")
    args = p.parse_args(argv)

    import pandas as pd
    import ray

    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    tmp = Path(tempfile.mkdtemp(prefix="bench_asha_"))
    out = {}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        for name, asha in (("asha_tpe", True), ("fifo_random", False)):
            path = tmp / f"{name}.yaml"
            doc = space_doc(args.images, args.num_samples, args.epochs, args.seed, asha, tmp / "outputs",
                            args.reduction_factor)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            start = time.perf_counter()
            res = run_search(load_space(path))
            table = pd.read_csv(res["results"])
            out[name] = {
                "best_val_accuracy": round(float(table["accuracy/val"].max()), 4),
                "test_accuracy": round(res["metrics"]["accuracy/test"], 4),
                "trial_epochs": res["trial_epochs"], "trials": res["trials"],
                "stopped_early": int((table["status"] == "stopped early").sum()),
                "wall_s": round(time.perf_counter() - start, 1),
                "best": res["hyperparameters"],
            }
    finally:
        ray.shutdown()
    a, f = out["asha_tpe"], out["fifo_random"]
    out["gap_points"] = round(100 * (f["best_val_accuracy"] - a["best_val_accuracy"]), 2)
    out["epoch_ratio"] = round(a["trial_epochs"] / f["trial_epochs"], 3)
    out["goal_met"] = out["gap_points"] <= 0.5 and out["epoch_ratio"] <= 0.4
    out["args"] = vars(args)
    print(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
