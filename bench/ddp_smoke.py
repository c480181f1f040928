"""A 2-process DDP smoke test of the training core without Ray: Lightning's DDPStrategy over 2 processes on
one device (two 'nodes' of one device each, so that both may share one GPU; gloo, since NCCL refuses two
processes on one GPU), our sharded batches and synced metrics. What a multi-worker trial's Ray Train workers
run, minus Ray: for the lent GPU machine (no Ray there; scripts/gpu_check.sh) and for CPUs.

    python bench/ddp_smoke.py [--accelerator cpu|gpu] [--epochs 2] [--out DIR]

Checks: both processes end with the same weights (DDP kept them in step) and report the same validation
metrics (synced: every validation row once), and the loss went down. Prints one JSON line; exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args) -> None:
    """One process (rank = NODE_RANK): fit and write its weights' checksum and metrics."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.plugins.environments import LightningEnvironment
    from pytorch_lightning.strategies import DDPStrategy

    from tune_cifar.config import load_config
    from tune_cifar.data import load_data
    from tune_cifar.training import fit

    torch.set_num_threads(1)
    rank = int(os.environ["NODE_RANK"])
    cfg = load_config(["data=cifar10", f"data.dataset_path={args.data}", "data.download=false",
                       "data.train_batch_size=32", "data.inference_batch_size=50", "data.val_fraction=0.25",
                       "model=small_cnn", "model.model_name=tiny_cnn", "optimizer=adamw", "optimizer.lr=0.01",
                       f"trainer.accelerator={args.accelerator}", f"trainer.max_epochs={args.epochs}",
                       "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
                       "trainer.precision=32-true"])
    arrays = load_data(cfg.data, cfg.task.task)
    losses = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            losses.append(float(trainer.callback_metrics["loss/train"]))

    trainer = fit(cfg, arrays, None, [Record()], strategy=DDPStrategy(process_group_backend="gloo"),
                  plugins=[LightningEnvironment()], devices=1, num_nodes=2, use_distributed_sampler=False)
    weights = sum(float(p.detach().double().sum()) for p in trainer.lightning_module.parameters())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/val")}
    Path(args.out, f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": trainer.world_size, "device": str(trainer.strategy.root_device),
        "weights": weights, "val": metrics, "train_losses": losses}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="ddp_smoke_"))
    out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from cifar_files import write_cifar10

        args.data = str(out / "data")
        write_cifar10(Path(args.data), n_train=400, n_test=60, seed=0)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "LOCAL_RANK": "0", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--accelerator", args.accelerator,
                               "--epochs", str(args.epochs), "--out", str(out), "--data", args.data],
                              env={**env, "NODE_RANK": str(r)}) for r in (0, 1)]
    codes = [proc.wait(timeout=900) for proc in procs]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)] if codes == [0, 0] else []
    checks = {
        "both exited 0": codes == [0, 0],
        "world size 2": bool(ranks) and all(r["world_size"] == 2 for r in ranks),
        "same weights": bool(ranks) and abs(ranks[0]["weights"] - ranks[1]["weights"]) < 1e-6 * max(1.0, abs(ranks[0]["weights"])),
        "same val metrics": bool(ranks) and ranks[0]["val"] == ranks[1]["val"] and bool(ranks[0]["val"]),
        "loss went down": bool(ranks) and ranks[0]["train_losses"][-1] < ranks[0]["train_losses"][0],
    }
    print(json.dumps({"accelerator": args.accelerator, "seconds": round(time.monotonic() - start, 1),
                      "checks": checks, "ranks": ranks}))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
