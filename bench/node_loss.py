"""A search that loses a Ray node, or its whole cluster, on one machine (issue 11, item 3).

    python bench/node_loss.py node [--repeats 3]      # SIGKILL one worker node while its trial runs
    python bench/node_loss.py cluster [--repeats 3]   # SIGKILL every Ray process and the search; restart; --resume

A real multi-node cluster on one machine, started as the README says (``ray start``, one session each):
a head with no CPU (it schedules, runs no trial) and two worker nodes of two CPUs
(``ray start --address=HEAD``; room for both trials on either), each its own raylet with its own worker processes. The search joins it with ``--address`` (token auth,
as a user's search does), ``search.storage_path`` a separate folder (shared by every node: one machine),
2 trials at a time (1 CPU each; Ray places them), ``search.max_failures=3``.

node: once both trials have reported (and checkpointed) epoch 2, the node running the first of them
loses all its processes (SIGKILL of every process of that ``ray start``'s session: its raylet, agents
and worker processes, the trial's among them). Measured: seconds from the kill until the search notes the trial's failure (Tune's "Trial task
failed" line in the driver's log), until the trial reports from another process (continued on
the other node from its last checkpoint), epochs re-run (reports from the new process of an epoch the
killed one had reported), the exit status, whether results.csv holds every trial once and all completed, and
whether the export was written.

cluster: once both trials have reported epoch 2, every process of the cluster and the search is killed
(SIGKILL); a new cluster is started and the same command with ``--resume --address NEW`` continues it.
Measured the same way (time from the --resume launch to the first new report).

Real Fashion-MNIST (Debian's dataset-fashion-mnist), a small subset, tiny_cnn on CPU. Prints one JSON
line per repeat and a summary (median and range).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 8
BASE = ["data=fashion_mnist", "model=small_cnn", "model.model_name=tiny_cnn", "data.train_subset=2048",
        "data.val_subset=256", "data.test_subset=256", "data.train_batch_size=64", "trainer.log_every_n_steps=1"]
PARAMS = {"optimizer.optimizer": {"choice": ["adamw"]}, "optimizer.lr": {"loguniform": [1e-3, 1e-2]}}


# --------------------------------------------------------------------------- the cluster (its own process)


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free port not given before (the OS may hand out a just-closed one again)."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def ray_start(env: dict, *args: str) -> tuple[int, str]:
    """``ray start ARGS`` in a session of its own (its processes keep it); (session id, its output)."""
    ports = [f"--{opt}={free_port()}" for opt in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                  "metrics-export-port", "runtime-env-agent-port",
                                                  "node-manager-port", "object-manager-port")]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", *args, "--disable-usage-stats",
                             *ports], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out, _ = proc.communicate(timeout=180)
    if proc.returncode:
        kill_session(proc.pid)
        raise RuntimeError(out)
    return proc.pid, out  # a session's id is its leader's pid


def start_cluster(work: Path, env: dict) -> tuple[list[int], dict]:
    """Head (0 CPUs: it schedules, runs no trial) and two worker nodes (2 CPUs each), each a `ray start`
    in its own session; returns (sessions, {"address", "workers": [worker sessions]})."""
    port = free_port()
    head, out = ray_start(env, "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                          f"--ray-client-server-port={free_port()}")
    ip = re.search(r"Local node IP: ([0-9.]+)", out).group(1)
    address = f"{ip}:{port}"
    # `ray start --address` turns token auth on only if told (unlike `ray start --head` and the search)
    workers = [ray_start({**env, "RAY_AUTH_MODE": "token"}, f"--address={address}", "--num-cpus=2")[0]
               for _ in range(2)]
    return [head, *workers], {"address": address, "workers": workers}


def kill_session(sid: int) -> None:
    for p in session(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def session(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


# --------------------------------------------------------------------------- the search


def user_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    return {**env, "TMPDIR": str(work / "t"), "PYTHONPATH": str(ROOT)}


def start_search(work: Path, env: dict, address: str, *extra: str) -> subprocess.Popen:
    space = work / "space.yaml"
    if not space.exists():
        space.write_text(yaml.safe_dump({"base": BASE, "params": PARAMS, "search": {
            "experiment": "nodes", "storage_path": str(work / "storage"), "num_samples": 2,
            "max_concurrent_trials": 2, "max_failures": 3, "resources": {"cpu": 1},
            "scheduler": {"name": "fifo", "max_epochs": EPOCHS}, "searcher": {"name": "random", "seed": 0}}},
            sort_keys=False))
    return subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space), "--address", address, *extra],
                            cwd=work, env=env, start_new_session=True,
                            stdout=open(work / "search.log", "a"), stderr=subprocess.STDOUT)


def progress(work: Path) -> dict[str, list[int]]:
    """trial folder -> the epochs of its progress.csv rows, in order."""
    out = {}
    for p in (work / "storage" / "nodes").glob("*/trial_*/progress.csv"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = p.read_text().splitlines()
            col = lines[0].split(",").index("training_iteration")
            out[p.parent.name] = [int(line.split(",")[col]) for line in lines[1:] if line.count(",") >= col]
    return out


def reports(trial_dir: Path) -> list[tuple[int, int]]:
    """(epoch, pid of the process that trained it) of each report in the trial's result.json."""
    out = []
    with contextlib.suppress(OSError):
        for line in (trial_dir / "result.json").read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                r = json.loads(line)
                out.append((int(r["training_iteration"]), int(r["pid"])))
    return out


def failure_logged(log: Path, trial_id: str, after: float) -> float | None:
    """Time of Tune's first "Trial task failed for trial ..._<id>" line after ``after`` in the driver's log."""
    import datetime

    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+ERROR .*Trial task failed for trial \S*" + trial_id, line)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if t >= after - 1:
                return t
    return None


def wait(cond, what: str, timeout: float, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"ended ({p.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} within {timeout} s")
        time.sleep(0.2)


def outcome(work: Path, code: int) -> dict:
    runs = [d for d in (work / "storage" / "nodes").iterdir() if d.name != "best"]
    results = runs[0] / "results.csv"
    import pandas as pd

    table = pd.read_csv(results) if results.exists() else pd.DataFrame(columns=["trial_id", "status"])
    errors = [ln for ln in (work / "search.log").read_text(errors="replace").splitlines()
              if ln.startswith("tune_cifar.search: error")]
    return {"exit": code, **({"error": errors[-1][:400]} if errors else {}), "trials": len(table), "each_once": bool(table["trial_id"].is_unique),
            "statuses": sorted(set(table["status"])), "exported": (work / "storage" / "nodes" / "best" /
                                                                   "export.json").is_file()}


def lose_node(work: Path) -> dict:
    env = user_env(work)
    (work / "t").mkdir(parents=True, exist_ok=True)
    cluster, info = start_cluster(work, env)
    search = None
    try:
        search = start_search(work, env, info["address"])
        wait(lambda: len(progress(work)) == 2 and all(len(v) >= 2 for v in progress(work).values()),
             "both trials reported epoch 2", 300, [search])
        rows = progress(work)
        victim = sorted(rows)[0]
        trial_dir = next((work / "storage" / "nodes").glob(f"*/{victim}"))
        pid = reports(trial_dir)[-1][1]
        node = next(w for w in info["workers"] if pid in session(w))
        doomed = session(node)
        t0 = time.time()
        kill_session(node)
        resumed_at = None  # the first report of the trial from another process: it continues elsewhere
        while search.poll() is None:
            if resumed_at is None and any(p != pid for _, p in reports(trial_dir)):
                resumed_at = time.time()
            time.sleep(0.2)
        code = search.wait()
        done = reports(trial_dir)
        reached = max(e for e, p in done if p == pid)  # the last epoch reported before the kill
        rerun = sum(1 for e, p in done if p != pid and e <= reached)
        detected = failure_logged(work / "search.log", victim.removeprefix("trial_"), t0)
        return {"scenario": "node", "killed_processes": len(doomed), "epochs_at_kill": reached,
                "detect_s": round(detected - t0, 1) if detected else None,
                "recover_s": round(resumed_at - t0, 1) if resumed_at else None,
                "epochs_rerun": rerun, "victim_epochs": [e for e, _ in done], **outcome(work, code)}
    finally:
        if search is not None:
            kill_session(search.pid)
        for sid in cluster:
            kill_session(sid)


def lose_cluster(work: Path) -> dict:
    env = user_env(work)
    (work / "t").mkdir(parents=True, exist_ok=True)
    cluster, info = start_cluster(work, env)
    search = second = cluster2 = None
    try:
        search = start_search(work, env, info["address"])
        wait(lambda: len(progress(work)) == 2 and all(len(v) >= 2 for v in progress(work).values()),
             "both trials reported epoch 2", 300, [search])
        kill_session(search.pid)
        for sid in cluster:
            kill_session(sid)
        search.wait(30)
        before = {t: len(v) for t, v in progress(work).items()}
        cluster2, info2 = start_cluster(work, env)
        t0 = time.time()
        second = start_search(work, env, info2["address"], "--resume")
        resumed_at = None
        while second.poll() is None:
            if resumed_at is None and any(len(v) > before.get(t, 0) for t, v in progress(work).items()):
                resumed_at = time.time()
            time.sleep(0.2)
        code = second.wait()
        epochs = progress(work)
        return {"scenario": "cluster", "epochs_at_kill": before,
                "recover_s": round(resumed_at - t0, 1) if resumed_at else None,
                "epochs_rerun": sum(len(v) - len(set(v)) for v in epochs.values()), **outcome(work, code)}
    finally:
        for proc in (search, second):
            if proc is not None:
                kill_session(proc.pid)
        for sid in (*cluster, *(cluster2 or [])):
            kill_session(sid)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=["node", "cluster"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    runs = []
    for _ in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="nl", dir="/tmp"))  # short: Ray's socket paths are limited
        run = (lose_node if args.scenario == "node" else lose_cluster)(work)  # kept if it fails: its logs
        if run["exit"] == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:
            run["kept"] = str(work)
        print(json.dumps(run), flush=True)
        runs.append(run)
    for key in ("detect_s", "recover_s", "epochs_rerun"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            print(f"{key}: median {statistics.median(values):g}, range {min(values):g}-{max(values):g} "
                  f"({len(values)} runs)")


if __name__ == "__main__":
    main()
