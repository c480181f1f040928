"""The README's Ray cluster recipe, run as a user runs it (issue 11, item 2).

``ray start --head`` and the search are subprocesses whose environment has no ``RAY_*`` variable (a
user's shell): the cluster's token is only in ``~/.ray/auth_token``, which ``ray start`` creates (shared
with anything else on this machine: never deleted here). ``TMPDIR`` points Ray's default temp folder
(where ``ray start`` leaves its cluster-address file) at a private folder, so nothing here touches other
Ray users of /tmp/ray. Heads are stopped by signalling their own session, never with ``ray stop``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_space

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_cluster")
    write_cifar10(root, n_train=160, n_test=40, seed=0)
    return root


@pytest.fixture
def user_env():
    """A user's environment: no RAY_* variable; TMPDIR a short private folder (Ray's socket paths are
    limited in length)."""
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    env["TMPDIR"] = tmp
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_session(pid: int, sig: int = signal.SIGKILL) -> None:
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(pid)], capture_output=True, text=True).stdout
    for p in (int(x) for x in out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def private_ports() -> list[str]:
    """Ports of the head's side services, free ones (other Ray clusters may run on this machine)."""
    return [f"--{opt}={free_port()}" for opt in ("dashboard-port", "dashboard-agent-listen-port",
                                                 "dashboard-agent-grpc-port", "metrics-export-port",
                                                 "runtime-env-agent-port", "ray-client-server-port",
                                                 "node-manager-port", "object-manager-port")]


@contextlib.contextmanager
def ray_head(env: dict, *extra: str):
    """``ray start --head --port=P --num-cpus=2`` (README) in its own session; yields (ip:port, session)."""
    port = free_port()
    proc = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                           "--disable-usage-stats", *private_ports(), *extra], env=env, capture_output=True,
                          text=True, timeout=120, start_new_session=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ip = re.search(r"Local node IP: ([0-9.]+)", proc.stdout + proc.stderr).group(1)
    session = _session_of(env["TMPDIR"])  # `ray start` returns once its processes run; they keep its session
    assert session, "no gcs_server of the head found"
    try:
        yield f"{ip}:{port}", session
    finally:
        kill_session(session)


def _session_of(temp_root: str) -> int:
    """The session id of the head's gcs_server (its processes share it), found by its private temp folder."""
    out = subprocess.run(["ps", "-ww", "-eo", "sid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        sid, _, args = line.strip().partition(" ")
        if "gcs_server" in args and f"--log_dir={temp_root}/" in args:
            return int(sid)
    return 0


def run_search(space: Path, cwd: Path, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        out, _ = proc.communicate()
        raise AssertionError(f"the search did not end within {timeout} s:\n{out[-3000:]}")
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def small_space(tmp_path: Path, data_root: Path, **search) -> Path:
    return write_space(tmp_path, data_root, {
        "num_samples": 1, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": 1}, **search},
        [{"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}], searcher="random")


def test_readme_cluster_recipe_with_the_token_file_only(tmp_path, data_root, user_env):
    """ray start --head (token auth, token in ~/.ray/auth_token), then the search with --address, in a
    shell with no RAY_AUTH_* variable: it joins and runs its trial on the cluster, and its re-evaluation
    run (search.final) there too."""
    import json

    space = small_space(tmp_path, data_root, final={"top_k": 1, "seeds": 1})
    with ray_head(user_env) as (address, session):
        result = run_search(space, tmp_path, user_env, "--address", address)
        assert result.returncode == 0, result.stdout[-3000:]
        table = pd.read_csv(next((tmp_path / "outputs" / "tiny").glob("*/results.csv")))
        assert list(table["status"]) == ["completed"] and list(table["reeval_n"]) == [2]
        # the trial ran in the head's worker processes (same session as the head), not a private Ray
        run = next((tmp_path / "outputs" / "tiny").glob("*/trial_*"))
        assert run.is_dir()
        runs = pd.read_csv(run.parent / "reeval.csv")
        assert list(runs["status"]) == ["completed"] and list((run.parent / "reeval").glob("trial_*"))
    assert (tmp_path / "outputs" / "tiny" / "best" / "export.json").is_file()
    assert json.loads((tmp_path / "outputs" / "tiny" / "best" / "metrics.json").read_text())["reeval"]["n"] == 2


def test_local_search_ignores_a_stale_cluster_address(tmp_path, data_root, user_env):
    """A dead `ray start --head` leaves its address in <TMPDIR>/ray/ray_current_cluster: a search without
    --address starts its own Ray instead of joining (and hanging on) the dead cluster."""
    stale = Path(user_env["TMPDIR"]) / "ray" / "ray_current_cluster"
    stale.parent.mkdir(parents=True)
    stale.write_text(f"127.0.0.1:{free_port()}")  # nothing listens there
    space = small_space(tmp_path, data_root)
    result = run_search(space, tmp_path, user_env, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "outputs" / "tiny" / "best" / "export.json").is_file()


def test_joining_a_dead_address_says_so_and_ctrl_c_stops_it(tmp_path, data_root, user_env):
    """--address of a cluster that is not there: a message while it waits, a one-line error within the
    time limit; Ctrl-C while it waits ends it at once (exit 130)."""
    space = small_space(tmp_path, data_root)
    address = f"127.0.0.1:{free_port()}"
    env = {**user_env, "TUNE_CIFAR_CONNECT_TIMEOUT_S": "8"}  # a user's setting: the wait is all wall time
    start = time.monotonic()
    result = run_search(space, tmp_path, env, "--address", address, timeout=120)
    assert result.returncode == 2, result.stdout[-3000:]
    assert f"connecting to the Ray cluster at {address}" in result.stdout
    errors = [ln for ln in result.stdout.splitlines() if ln.startswith("tune_cifar.search: error:")]
    assert len(errors) == 1 and address in errors[0] and "Traceback" not in result.stdout, result.stdout[-3000:]
    assert time.monotonic() - start < 78  # the 8 s limit and the same 70 s for start-up as before

    env = {**user_env, "TUNE_CIFAR_CONNECT_TIMEOUT_S": "600"}
    proc = subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space), "--address", address],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        seen = ""
        while "connecting to the Ray cluster" not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        code = proc.wait(30)
        assert code == 130 and time.monotonic() - t0 < 15, proc.stdout.read()
    finally:
        kill_session(proc.pid)
