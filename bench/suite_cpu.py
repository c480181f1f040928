"""Where the test suite's CPU goes (issue 16): runs the default suite as README's test command does
(``pytest -n 2 --dist loadfile``) while sampling every new process's CPU time from /proc, then sums it by
kind of process: search drivers, Ray trial actors, Ray's own processes, train/predict subprocesses, pytest.

Why: on a 2-core machine the suite keeps both cores ~90 % busy, so its wall time is its CPU time / ~1.8, and
a test is as cheap as the processes it starts. Sampling every 0.5 s misses processes that live less than
that, so the total is a lower bound; the shares are what to read.

    python bench/suite_cpu.py [--processes 2] [pytest args...]
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def kind(name: str, cmd: str) -> str:
    """A process's kind, from its name (Ray sets ``ray::<actor>`` titles) and its command line."""
    if "-m tune_cifar.search" in cmd:
        return "search driver (python -m tune_cifar.search)"
    if "-m tune_cifar.train" in cmd:
        return "train subprocess"
    if "-m tune_cifar.predict" in cmd:
        return "predict subprocess"
    if "pytest" in cmd or "exec(eval(sys.stdin" in cmd:  # the pytest-xdist workers start that way
        return "pytest processes (in-process tests)"
    if name.startswith("ray::IDLE") or cmd.startswith("ray::IDLE"):
        return "Ray: prestarted idle workers (never given a trial)"
    if name.startswith(("ray::ImplicitFu", "ray::train_tria")):  # /proc's name: 15 characters
        return "Ray: trial actors"
    if name.startswith("ray::") or cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "Ray: other workers and actors (Ray Train's, queues)"
    if name in ("raylet", "gcs_server") or "/ray/" in cmd:
        return "Ray: raylet, GCS, dashboard, agents, monitors"
    return "other"


def snapshot(seen: dict, old: set) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid in old:
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            name = stat.split("(", 1)[1].rsplit(")", 1)[0]
            # the command line once per name: a Ray worker renames itself when it becomes an actor
            cmd = seen[pid][2] if pid in seen and seen[pid][1] == name else \
                Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seen[pid] = ((int(fields[11]) + int(fields[12])) / TICK, name, cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="pytest-xdist processes (README: 2)")
    args, pytest_args = parser.parse_known_args()
    command = [sys.executable, "-m", "pytest", "-q", "-n", str(args.processes), "--dist", "loadfile", *pytest_args]
    old = {p for p in os.listdir("/proc") if p.isdigit()}
    seen: dict = {}
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a long failure report cannot block pytest
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:
            snapshot(seen, old)
            time.sleep(0.5)
        wall = time.monotonic() - start
        log.seek(0)
        tail = log.read().strip().splitlines()[-1:]
    totals: dict = collections.defaultdict(lambda: [0.0, 0])
    for cpu, name, cmd in seen.values():
        row = totals[kind(name, cmd)]
        row[0] += cpu
        row[1] += 1
    total = sum(cpu for cpu, _ in totals.values())
    print(f"suite: {' '.join(tail)} (exit {proc.returncode}); wall {wall:.0f} s; sampled CPU {total:.0f} CPU-s")
    print("| kind of process | processes | CPU-s | share | CPU-s each |\n|---|---|---|---|---|")
    for name, (cpu, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {n} | {cpu:.0f} | {100 * cpu / total:.0f} % | {cpu / n:.1f} |")
    print(f"\ncommand: python bench/suite_cpu.py {shlex.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
