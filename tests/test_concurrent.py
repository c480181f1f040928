"""Two searches of one experiment at once (issue 17, item 3), with real processes.

A first search runs (its trial held asleep by the test-only fault ``sleep``); a second one with the same
experiment in the same output folder, and a ``--resume`` of it, are refused in one line naming the
holder, exit 2, nothing made. Then the first search gets SIGKILL (it and its Ray processes): the kernel
releases its lock, so the next search is not blocked by it (it gets the usual "already exists" answer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_space
from test_interrupt import _end, _sleeping_trials, _start, _user_env, _wait
from tune_cifar.faults import TEST_FAULTS_ENV


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_concurrent")
    write_cifar10(root, n_train=160, n_test=40, seed=0)
    return root


def _search(space: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_cifar.search", str(space), *args], cwd=cwd,
                          env=_user_env(), capture_output=True, text=True, timeout=300, start_new_session=True)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in text, text[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("tune_cifar.search: error:")]
    return line


def test_a_second_search_of_a_running_experiment_is_refused_and_a_killed_one_blocks_nothing(data_root, tmp_path):
    space = write_space(tmp_path, data_root, {
        "num_samples": 1, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": 1}},
        [{"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}], searcher="random")
    state = tmp_path / "faults"
    rules = [{"when": {"optimizer.lr": 0.01}, "epoch": 1, "fault": "sleep", "seconds": 600, "times": 1,
              "state_dir": str(state)}]
    first, log = _start(space, tmp_path, env=_user_env(**{TEST_FAULTS_ENV: json.dumps(rules)}))
    outputs = tmp_path / "outputs"
    try:
        _wait(lambda: _sleeping_trials(state) == 1, first, log, "its trial sleeps")
        before = sorted(str(p) for p in outputs.rglob("*") if "trial_" not in str(p))
        for args in ((), ("--resume",)):
            line = _error_line(_search(space, tmp_path, *args))
            assert f"experiment 'tiny' in {outputs} is in use by another search (pid {first.pid})" in line, line
            assert "--new-name to run this search as 'tiny_2'" in line, line
        after = sorted(str(p) for p in outputs.rglob("*") if "trial_" not in str(p))
        assert [p for p in after if p not in before and "experiment_state" not in p
                and "search_gen_state" not in p and "searcher-state" not in p] == [], "a refused search made files"
        assert not (outputs / "tiny_2").exists()
        os.killpg(first.pid, signal.SIGKILL)  # the search, as a machine loss would end it
        first.wait(30)
    finally:
        _end(first)
    # the kernel released the killed search's lock: the next search is told the experiment exists, not in use
    line = _error_line(_search(space, tmp_path))
    assert "experiment 'tiny' already exists" in line and "in use" not in line, line


def test_new_name_takes_a_name_no_running_search_holds(data_root, tmp_path):
    """--new-name while another process holds the experiment (and its first free name): the next name."""
    from tune_cifar.errors import UserError
    from tune_cifar.search import claim
    from tune_cifar.search.space import load_space
    from tune_cifar.search.storage import plan_run

    outputs = tmp_path / "outputs"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from tune_cifar.search import claim; "
         f"assert claim.claim(Path({str(outputs)!r}), 'tiny') and claim.claim(Path({str(outputs)!r}), 'tiny_2'); "
         "print('held', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True, env=_user_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        space = load_space(write_space(tmp_path, data_root, {"num_samples": 1}))
        with pytest.raises(UserError, match=rf"experiment 'tiny' in {outputs} is in use by another search "
                                            rf"\(pid {holder.pid}\); wait for it to end, add --new-name"):
            plan_run(space)
        plan = plan_run(space, new_name=True)
        assert plan.paths.experiment == plan.space.search.experiment == "tiny_3"
        assert plan.overrides == ("search.experiment=tiny_3",)
    finally:
        holder.kill()
        holder.wait()
        claim.release_all()
    assert not (outputs / claim.LOCKS / "tiny.lock").exists() or claim.claim(outputs, "tiny")  # the kernel let go
    claim.release_all()
