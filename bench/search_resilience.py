"""Resilience figures of the search: resume overhead, and driver memory over a long tiny search.

    python bench/search_resilience.py resume [--repeats 3]
    python bench/search_resilience.py memory [--trials 50]

Real Fashion-MNIST (Debian's dataset-fashion-mnist), a small subset, tiny trials
(``trainer.limit_train_batches=1``: a trial's first report comes one training step plus one
validation batch after it starts, so "first report" is "first training step" within ~0.1 s).

resume: a search (10 trials, 3 epochs, 2 at a time) in a subprocess is SIGKILLed with all its Ray
processes once 3 trials have finished; then ``--resume``. Measured side by side, each repeat:
seconds from launching the fresh search to its first report, and from launching ``--resume`` to its
first *new* report (a progress.csv row that did not exist at the kill). The difference is what
restoring costs (reading the experiment state, restoring the searcher, restoring trial checkpoints).

memory: a ``--trials``-trial search (ASHA, 2 epochs, 2 at a time) in this process; the driver's RSS
(VmRSS of this process, not Ray's GCS/raylet/workers) is sampled every 0.5 s together with the number
of finished trials. Reported: RSS when 10, 25 and all trials had finished, and the peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import yaml

warnings.filterwarnings("ignore")
BASE = ["data=fashion_mnist", "model=small_cnn", "model.model_name=tiny_cnn", "data.train_subset=1024",
        "data.val_subset=256", "data.test_subset=256", "data.train_batch_size=64",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1"]
PARAMS = {"optimizer.optimizer": {"choice": ["sgd", "adamw"]}, "optimizer.lr": {"loguniform": [1e-4, 0.1]}}


def write_space(path: Path, search: dict) -> Path:
    path.write_text(yaml.safe_dump({"base": BASE, "params": PARAMS, "search": search}, sort_keys=False))
    return path


def rows(exp: Path) -> dict[str, int]:
    """progress.csv data rows per trial folder."""
    out = {}
    for p in exp.glob("*/trial_*/progress.csv"):
        with contextlib.suppress(OSError):
            out[p.parent.name] = max(0, len(p.read_text().splitlines()) - 1)
    return out


def finished(exp: Path, epochs: int) -> int:
    n = 0
    for p in exp.glob("*/trial_*/progress.csv"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = p.read_text().splitlines()
            col = lines[0].split(",").index("training_iteration")
            n += any(int(float(line.split(",")[col])) >= epochs for line in lines[1:])
    return n


def kill_session(proc: subprocess.Popen) -> None:
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)


def launch(space: Path, cwd: Path, *args: str) -> subprocess.Popen:
    log = open(cwd / f"search_{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space), *args], cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait(pred, proc: subprocess.Popen, timeout: float = 600, step: float = 0.05) -> float:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise RuntimeError(f"search exited ({proc.returncode}) before the condition held")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(step)
    return time.monotonic()


def bench_resume(repeats: int) -> dict:
    epochs, results = 3, []
    for r in range(repeats):
        tmp = Path(tempfile.mkdtemp(prefix="bench_resume_"))
        space = write_space(tmp / "space.yaml", {
            "num_samples": 10, "max_concurrent_trials": 2, "resources": {"cpu": 1}, "experiment": "resume",
            "scheduler": {"name": "fifo", "max_epochs": epochs}, "searcher": {"name": "random", "seed": r},
            "storage_path": str(tmp / "outputs")})
        exp = tmp / "outputs" / "resume"
        t0 = time.monotonic()
        proc = launch(space, tmp)
        try:
            t_fresh = wait(lambda: any(rows(exp).values()), proc) - t0
            wait(lambda: finished(exp, epochs) >= 3, proc)
        finally:
            kill_session(proc)
        at_kill = rows(exp)
        done_at_kill = finished(exp, epochs)
        t1 = time.monotonic()
        proc = launch(space, tmp, "--resume")
        try:
            t_resume = wait(lambda: any(n > at_kill.get(k, 0) for k, n in rows(exp).items()), proc) - t1
            rc = proc.wait(600)
            t_total = time.monotonic() - t1
        finally:
            kill_session(proc)
        results.append({"fresh_first_report_s": round(t_fresh, 2), "resume_first_new_report_s": round(t_resume, 2),
                        "resume_total_s": round(t_total, 2), "finished_at_kill": done_at_kill, "exit": rc})
        print(json.dumps(results[-1]), flush=True)
    med = {k: statistics.median(r[k] for r in results) for k in ("fresh_first_report_s", "resume_first_new_report_s")}
    return {"repeats": results, "median": med,
            "resume_overhead_s": round(med["resume_first_new_report_s"] - med["fresh_first_report_s"], 2)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_memory(trials: int) -> dict:
    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    epochs = 2
    space = write_space(tmp / "space.yaml", {
        "num_samples": trials, "max_concurrent_trials": 2, "resources": {"cpu": 1}, "experiment": "memory",
        "scheduler": {"name": "asha", "max_epochs": epochs, "grace_period": 1, "reduction_factor": 2},
        "searcher": {"name": "tpe", "seed": 0, "n_startup_trials": 5}, "storage_path": str(tmp / "outputs"),
        "checkpoints_to_keep": 1})
    exp = tmp / "outputs" / "memory"
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            done = sum(1 for _ in exp.glob("*/trial_*/progress.csv"))  # trials started (ASHA ends them early)
            samples.append((time.monotonic(), done, rss_mb()))
            stop.wait(0.5)

    start_rss = rss_mb()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.monotonic()
    out = run_search(load_space(space))
    stop.set()
    thread.join()
    end_rss = rss_mb()

    def at(n):  # RSS when the n-th trial had started
        return round(next((m for _, d, m in samples if d >= n), samples[-1][2]), 1)

    return {"trials": out["trials"], "trial_epochs": out["trial_epochs"], "seconds": round(time.monotonic() - t0, 1),
            "rss_mb_before": round(start_rss, 1), "rss_mb_at_trial": {n: at(n) for n in (5, 10, 25, trials)},
            "rss_mb_peak": round(max(m for _, _, m in samples), 1), "rss_mb_after": round(end_rss, 1),
            "growth_mb_trial10_to_end": round(at(trials) - at(10), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["resume", "memory"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=50)
    args = p.parse_args()
    out = bench_resume(args.repeats) if args.what == "resume" else bench_memory(args.trials)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
