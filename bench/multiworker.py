"""One data-parallel trial on 2 Ray Train workers x 1 CPU against one process with 2 CPUs: the same global
batch, seed and epochs, through the search a user runs (``python -m tune_cifar.search``, one trial each).

    python bench/multiworker.py [--rounds 5] [--images 4000] [--epochs 3] [--val 2000] [--out bench/data/multiworker.json]

Real Fashion-MNIST (Debian's dataset-fashion-mnist), small_cnn, a ``--images`` training subset, ``--val``
validation images, global batch 128, SGD lr 0.05 (not scaled for the workers). Each round runs the two
set-ups one after the other (alternating which goes first) with the round's seed (``run.seed``), so the two
differ only in the number of processes. Figures per run: the best and last validation accuracy, and the
training speed, training images / median time between validation ends (``time_this_iter_s``; epoch 1
excluded: it holds the workers' start), plus the trial's whole time (the start of Ray Train's workers
included). Summary: median and range per set-up, and the per-round ratio of images/s (2 workers / 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {"1 worker x 2 CPUs": {"cpu": 2, "workers": 1}, "2 workers x 1 CPU": {"cpu": 1, "workers": 2}}


def run_one(work: Path, name: str, resources: dict, seed: int, images: int, epochs: int, val: int) -> dict:
    space = work / f"{name}.yaml"
    space.write_text(yaml.safe_dump({
        "base": ["data=fashion_mnist", "model=small_cnn", f"data.train_subset={images}", f"data.val_subset={val}",
                 "data.test_subset=1000", "data.train_batch_size=128", "optimizer=sgd", f"run.seed={seed}",
                 "trainer.log_every_n_steps=10"],
        "params": {"optimizer.lr": {"choice": [0.05]}},
        "search": {"experiment": name, "storage_path": str(work / "outputs"), "num_samples": 1,
                   "resources": resources, "scheduler": {"name": "fifo", "max_epochs": epochs},
                   "searcher": {"name": "random", "seed": seed}},
    }, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(space)], cwd=work, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (run,) = [d for d in (work / "outputs" / name).iterdir() if d.name != "best"]
    progress = pd.read_csv(next(run.glob("trial_*/progress.csv")))
    steps = (images // 128) * 128  # data.train_subset rows; the last partial batch is dropped (shuffled batches)
    later = progress["time_this_iter_s"].iloc[1:]
    metrics = json.loads((work / "outputs" / name / "best" / "metrics.json").read_text())
    return {"seed": seed, "best_val_accuracy": float(progress["accuracy/val"].max()),
            "last_val_accuracy": float(progress["accuracy/val"].iloc[-1]),
            "test_accuracy": float(metrics["accuracy/test"]),
            "images_per_s": steps / float(later.median()), "epoch_s": [round(float(t), 2) for t in progress["time_this_iter_s"]],
            "trial_s": round(float(progress["time_total_s"].iloc[-1]), 1), "command_s": round(wall, 1),
            "world_size": int(progress["world_size"].iloc[-1]) if "world_size" in progress else 1}


def summary(rows: dict[str, list[dict]]) -> dict:
    out = {}
    for name, runs in rows.items():
        out[name] = {}
        for key in ("best_val_accuracy", "test_accuracy", "images_per_s", "trial_s"):
            values = [r[key] for r in runs]
            out[name][key] = {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
                              "max": round(max(values), 4)}
    one, two = (rows[k] for k in SETUPS)
    ratios = [b["images_per_s"] / a["images_per_s"] for a, b in zip(one, two)]
    out["speed ratio (2 workers / 1)"] = {"median": round(statistics.median(ratios), 3),
                                          "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--val", type=int, default=2000, help="validation images (data.val_subset)")
    p.add_argument("--out", default=str(ROOT / "bench" / "data" / "multiworker.json"))
    args = p.parse_args()
    rows: dict[str, list[dict]] = {k: [] for k in SETUPS}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_multiworker_") as tmp:
        for r in range(args.rounds):
            order = list(SETUPS) if r % 2 == 0 else list(reversed(SETUPS))
            for name in order:
                tag = f"r{r}_{SETUPS[name]['workers']}w"
                row = run_one(Path(tmp), tag, SETUPS[name], seed=r, images=args.images, epochs=args.epochs,
                              val=args.val)
                rows[name].append(row)
                print(f"round {r} {name}: {json.dumps(row)}", flush=True)
    result = {"setups": SETUPS, "images": args.images, "epochs": args.epochs, "val": args.val, "rounds": args.rounds,
              "load_before": load_before, "load_after": os.getloadavg(), "runs": rows, "summary": summary(rows)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
