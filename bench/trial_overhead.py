"""Per-trial overhead of the search: a trial under Ray Tune vs the same training in tune_cifar.train,
and memory (driver + Ray workers) with 1 vs 2 concurrent trials.

    python bench/trial_overhead.py [--images 4000] [--epochs 4] [--rounds 2] [--memory-batches 30]

Real Fashion-MNIST (Debian's dataset-fashion-mnist). Speed: one trial with 2 CPUs (FIFO, no early
stopping) and ``tune_cifar.train.run`` on the same config in this process; images/s = training
images / median time between validation ends, epoch 1 excluded (warm-up); the two alternate
``--rounds`` times. Memory: the full dataset
(60,000 images in the object store), two short trials run one at a time, then two at once; the
peak sum of RSS and of PSS (shared pages split between processes) over this process and all of its
descendants (Ray's GCS, raylet, workers), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import yaml

warnings.filterwarnings("ignore")
BASE = ["data=fashion_mnist", "model=small_cnn", "data.val_subset=2000", "data.test_subset=1000",
        "data.train_batch_size=128", "trainer.log_every_n_steps=10"]


def write_space(path: Path, base: list[str], search: dict) -> Path:
    doc = {"base": base, "params": {"optimizer.lr": {"choice": [0.05]}}, "search": search}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class ValidationTimer(pl.Callback):
    """Times between validation ends: what a Tune trial reports as ``time_this_iter_s``."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_fit_start(self, trainer, pl_module):
        self.stamps = [time.perf_counter()]

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.stamps.append(time.perf_counter())

    @property
    def epoch_times(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def run_train(space, out: Path) -> list[float]:
    """tune_cifar.train.run on the trial's config, with a timer added to its own trainer."""
    import tune_cifar.train as train
    import tune_cifar.training as training
    from tune_cifar.config import config_from_dict

    timer, build = ValidationTimer(), training.build_trainer
    d = space.trial_dict({"optimizer.lr": 0.05})
    d["trainer"]["enable_progress_bar"] = False
    cfg = config_from_dict(d)
    training.build_trainer = lambda *a, callbacks=(), **k: build(*a, callbacks=[*callbacks, timer], **k)
    try:
        out.mkdir(parents=True, exist_ok=True)
        train.run(cfg, out_dir=out)
    finally:
        training.build_trainer = build
    return timer.epoch_times


def run_tune(space) -> list[float]:
    import pandas as pd

    from tune_cifar.search.cli import run_search

    out = run_search(space)
    progress = next(Path(out["run_dir"]).glob("trial_*/progress.csv"))
    return pd.read_csv(progress)["time_this_iter_s"].tolist()


# --------------------------------------------------------------------------- memory


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_memory(root: int) -> dict:
    """Sum of RSS and PSS (MiB) over ``root`` and its descendants, and the worker processes' PSS."""
    kids, todo, total = _children(), [root], {"rss": 0.0, "pss": 0.0, "workers": [], "driver": {}}
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in rollup[1:] if ln.split()[-1] == "kB"}
        mem = {"rss": round(fields.get("Rss", 0)), "pss": round(fields.get("Pss", 0)),
               "uss": round(fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))}
        total["rss"] += fields.get("Rss", 0)
        total["pss"] += fields.get("Pss", 0)
        if pid == root:
            total["driver"] = mem
        elif cmd.startswith("ray::") and "Agent" not in cmd and mem["rss"] > 300:  # trial workers (torch loaded)
            total["workers"].append(mem)
    return total


class PeakMemory:
    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, {"rss": 0.0, "pss": 0.0, "workers": [], "driver": {}}
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            m = tree_memory(os.getpid())
            for k in ("rss", "pss"):
                self.peak[k] = max(self.peak[k], m[k])
            if m["pss"] >= self.peak["pss"]:
                self.peak["workers"], self.peak["driver"] = m["workers"], m["driver"]
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _uss_mib() -> float:
    lines = Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]
    fields = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in lines if ln.endswith("kB")}
    return fields["Private_Clean"] + fields["Private_Dirty"]


def _probe(arrays, cfg) -> dict:
    from tune_cifar.data import ImageDataModule

    before = _uss_mib()
    checksum = int(arrays.train_x.sum(dtype="int64")) + int(arrays.test_x.sum(dtype="int64"))  # touch every page
    touched = _uss_mib()
    dm = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed)
    dm.setup()
    next(iter(dm.train_dataloader()))
    return {"read_only_view": not arrays.train_x.flags.writeable, "checksum": checksum,
            "read_all_uss_delta_mib": round(touched - before, 1),
            "datamodule_setup_uss_delta_mib": round(_uss_mib() - touched, 1)}


def zero_copy_probe(arrays, cfg) -> dict:
    """In a Ray worker, as a trial receives it (``tune.with_parameters`` = one ``ray.put``): is the dataset
    a read-only view of the object store, and how much private memory do reading all of it and
    ImageDataModule.setup() add?"""
    import ray

    return ray.get(ray.remote(num_cpus=1)(_probe).remote(ray.put(arrays), cfg))


def memory(tmp: Path, batches: int) -> dict:
    """Full dataset, two trials of a few batches: one at a time, then both at once."""
    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    out = {}
    for concurrent in (1, 2):
        path = write_space(tmp / f"mem{concurrent}.yaml", [*BASE[:1], "model=small_cnn", "data.val_subset=2000",
                                                            f"trainer.limit_train_batches={batches}"],
                           {"num_samples": 2, "max_concurrent_trials": concurrent, "resources": {"cpu": 1},
                            "scheduler": {"name": "fifo", "max_epochs": 2}, "experiment": f"mem{concurrent}",
                            "storage_path": str(tmp / "outputs")})
        with PeakMemory() as peak:
            run_search(load_space(path))
        out[concurrent] = {"peak_rss_mib": round(peak.peak["rss"]), "peak_pss_mib": round(peak.peak["pss"]),
                           "at_peak_driver_mib": peak.peak["driver"], "at_peak_workers_mib": peak.peak["workers"]}
    return out


def release_cost(space, arrays, trials: int) -> dict:
    """Time trial.release_memory() (gc + CUDA cache) after each of ``trials`` short trials, as a Ray
    worker runs it at every trial's end, in this process (torch, Lightning and Ray imported)."""
    import gc

    from tune_cifar.training import live_models, release_memory, fit as run_trial

    cfg = space.trial_config({"optimizer.lr": 0.05})
    cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches, cfg.trainer.max_epochs = 5, 2, 1
    times, fit_times = [], []
    for _ in range(trials):
        t0 = time.perf_counter()
        run_trial(cfg, arrays, None)
        t1 = time.perf_counter()
        release_memory()
        times.append(time.perf_counter() - t1)
        fit_times.append(t1 - t0)
    return {"trials": trials, "release_ms_median": round(1000 * statistics.median(times)),
            "release_ms": [round(1000 * t) for t in times], "short_fit_s_median": round(statistics.median(fit_times), 2),
            "gc_objects": len(gc.get_objects()), "live_models_after": live_models(collect=False)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--memory-batches", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2, help="speed: Tune and train runs, alternately")
    p.add_argument("--only", choices=("speed", "memory", "release"), help="run one part")
    p.add_argument("--release-trials", type=int, default=5)
    args = p.parse_args(argv)

    import ray

    from tune_cifar.data import load_data
    from tune_cifar.search.space import load_space
    from tune_cifar.training import quiet

    quiet()
    tmp = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    base = [*BASE, f"data.train_subset={args.images}"]
    space = load_space(write_space(tmp / "speed.yaml", base, {
        "num_samples": 1, "resources": {"cpu": 2}, "scheduler": {"name": "fifo", "max_epochs": args.epochs},
        "experiment": "speed", "storage_path": str(tmp / "outputs")}))
    arrays = load_data(space.trial_config({}).data, "classification_multiclass")
    dataset_mib = (arrays.train_x.nbytes + arrays.test_x.nbytes) / 2**20

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    result: dict = {"images": args.images, "epochs": args.epochs, "threads": 2, "dataset_mib": round(dataset_mib, 1)}
    try:
        if args.only in (None, "speed"):
            tune_times, train_times = [], []
            for r in range(args.rounds):  # alternate, so that background load hits both alike
                tune_times += run_tune(space.renamed(f"speed{r}"))[1:]  # a fresh experiment per round
                train_times += run_train(space, tmp / f"train_run{r}")[1:]
            tune_ips = args.images / statistics.median(tune_times)
            train_ips = args.images / statistics.median(train_times)
            result.update(load_average=os.getloadavg(), train_epoch_s=[round(t, 2) for t in train_times],
                          tune_epoch_s=[round(t, 2) for t in tune_times],
                          train_images_per_s=round(train_ips, 1), tune_images_per_s=round(tune_ips, 1),
                          tune_over_train=round(tune_ips / train_ips, 3))
        if args.only in (None, "release"):
            result["release"] = release_cost(space, arrays, args.release_trials)
        if args.only in (None, "memory"):
            from tune_cifar.config import config_from_dict

            mem = memory(tmp, args.memory_batches)
            full = space.trial_dict({"optimizer.lr": 0.05})
            full["data"]["train_subset"] = None  # the whole training split
            result["zero_copy"] = zero_copy_probe(arrays, config_from_dict(full))
            result.update(memory=mem, memory_2_minus_1_pss_mib=mem[2]["peak_pss_mib"] - mem[1]["peak_pss_mib"])
    finally:
        ray.shutdown()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
