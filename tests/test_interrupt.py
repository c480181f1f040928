"""Ctrl-C and SIGTERM on a running search, taken the user's way (issue 11, item 1).

Each test starts ``python -m tune_cifar.search`` as a user would (its own session, so a signal to its
process group is what a terminal's Ctrl-C sends to the foreground job), waits until the search is at a
given moment, sends a real signal, and reads what is on disk: trials ``unfinished``, nothing exported,
an earlier export and ``outputs/best`` untouched, the exact ``--resume`` command printed, exit 130.
Trials are held at a chosen epoch by the test-only fault ``sleep`` (tune_cifar/faults.py). Each search
process (with its Ray and trial processes) costs seconds of CPU, so the Ctrl-C test is one search taken
through three commands (interrupted mid-epoch and before a first report with two trials running, resumed and
interrupted in its export, resumed to the end), and the SIGTERM test runs one trial at a time (the second
waits for the slot): it meets one running trial and one not yet begun.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_space
from tune_cifar.faults import TEST_FAULTS_ENV

EPOCHS = 2  # the sleep faults hold epoch 1 or 2; a third epoch proved nothing more
LRS = (0.01, 0.02)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_interrupt")
    write_cifar10(root, n_train=200, n_test=60, seed=0)
    return root


def _space(tmp_path: Path, data_root: Path, at_once: int = 1) -> Path:
    points = [{"optimizer.optimizer": "adamw", "optimizer.lr": lr} for lr in LRS]
    return write_space(tmp_path, data_root, {
        "num_samples": 2, "max_concurrent_trials": at_once, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": EPOCHS}}, points, searcher="random")


def _previous_export(tmp_path: Path) -> tuple[Path, dict]:
    """An earlier search's export and the outputs/best link to it: an interrupted search must not touch them."""
    old = tmp_path / "outputs" / "older" / "best"
    old.mkdir(parents=True)
    (old / "export.json").write_text('{"experiment": "older"}')
    (tmp_path / "outputs" / "best").symlink_to(Path("older") / "best")
    return old, _snapshot(tmp_path / "outputs")


def _snapshot(outputs: Path) -> dict:
    return {"link": os.readlink(outputs / "best"), "export": (outputs / "older" / "best" / "export.json").read_bytes()}


def _user_env(**extra: str) -> dict:
    """This process's environment (a user's shell, plus PYTHONPATH for the worktree) and the test's faults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    return {**env, **extra}


def _start(space: Path, cwd: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    log = cwd / f"search_{time.monotonic_ns()}.log"
    proc = subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space), *args], cwd=cwd,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=env or _user_env())
    return proc, log


def _sleep_faults(state: Path, epochs: tuple[int, ...]) -> str:
    """Trial i (by learning rate, LRS) sleeps in ``epochs[i]`` on its first attempt; the others never do."""
    return json.dumps([{"when": {"optimizer.lr": lr}, "epoch": epoch, "fault": "sleep", "seconds": 600, "times": 1,
                        "state_dir": str(state)} for lr, epoch in zip(LRS, epochs)])


def _wait(cond, proc: subprocess.Popen, log: Path, what: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the search ended ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def _sleeping_trials(state: Path) -> int:
    """Trials inside their injected sleep (the fault leaves a marker per trial when it starts)."""
    return len([d for d in state.glob("*") if any(d.glob(".test_fault_*"))]) if state.is_dir() else 0


def _end(proc: subprocess.Popen) -> None:
    """Kill whatever of the search's session is left (its Ray processes)."""
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    for pid in (int(p) for p in out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _check_interrupted(tmp_path: Path, proc: subprocess.Popen, log: Path, before: dict, space: Path,
                       statuses: set[str]) -> pd.DataFrame:
    try:
        code = proc.wait(120)
    finally:
        _end(proc)
    text = log.read_text()
    assert code == 130, text[-3000:]
    exp = tmp_path / "outputs" / "tiny"
    (run,) = [d for d in exp.iterdir() if d.name not in ("best", "best.tmp", "best.old")]
    assert not (exp / "best").exists() and not (exp / "best.tmp").exists(), "an interrupted search exported"
    assert _snapshot(tmp_path / "outputs") == before, "outputs/best or the earlier export changed"
    assert not (run / "best.json").exists()
    assert f"continue it with: python -m tune_cifar.search {space} --resume" in text, text[-2000:]
    table = pd.read_csv(run / "results.csv")
    assert set(table["status"]) == statuses, table
    # the run's study: every trial of results.csv in it, none left RUNNING (interrupted ones are closed; a
    # point the searcher gave out for a trial Tune had not begun is closed too)
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'optuna.db'}").trials
    assert "RUNNING" not in {t.state.name for t in trials}, trials
    assert set(table["trial_id"].astype(str)) <= {t.user_attrs.get("ray_trial_id") for t in trials}, trials
    return table


def _signal_when_it_sleeps(tmp_path, data_root, epochs: tuple[int, ...], send):
    """A search whose trial i sleeps in ``epochs[i]`` (first attempt only; one trial per entry at once, the
    other waits for its slot), an earlier export in place; ``send(proc)`` once they all sleep.
    Returns (space, proc, log, the earlier export's bytes, fault state)."""
    space = _space(tmp_path, data_root, len(epochs))
    _, before = _previous_export(tmp_path)
    state = tmp_path / "faults"
    proc, log = _start(space, tmp_path, env=_user_env(**{TEST_FAULTS_ENV: _sleep_faults(state, epochs)}))
    try:
        _wait(lambda: _sleeping_trials(state) == len(epochs), proc, log, f"trials sleep in epochs {epochs}")
        send(proc)
    except BaseException:
        _end(proc)
        raise
    return space, proc, log, before, state


def _ctrl_c(proc) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group


def test_ctrl_c_mid_epoch_and_before_a_first_report_then_during_the_final_export(tmp_path, data_root):
    """One search, three commands, the user's way:
    1. Ctrl-C (SIGINT to the process group) with two trials running: one past its epoch-1 checkpoint, inside
       epoch 2; the other inside epoch 1, before its first report. Both unfinished, nothing exported.
    2. The printed --resume continues the first from its checkpoint and starts the second again; every trial
       done, the driver is held in its export (the test-only driver fault) and Ctrl-C'd there: nothing
       exported, the earlier export stays.
    3. --resume again rebuilds the results and exports."""
    space, proc, log, before, state = _signal_when_it_sleeps(tmp_path, data_root, (2, 1), _ctrl_c)
    table = _check_interrupted(tmp_path, proc, log, before, space, {"unfinished"})
    assert sorted(table["epochs"]) == [0, 1], table  # mid epoch 2; before the first report

    # the faults fired once each: no sleep now; the driver sleeps in its export instead
    hold = [{"stage": "export", "fault": "sleep", "seconds": 600}, *json.loads(_sleep_faults(state, (2, 1)))]
    proc, log = _start(space, tmp_path, "--resume", env=_user_env(**{TEST_FAULTS_ENV: json.dumps(hold)}))
    try:
        _wait(lambda: "exporting" in log.read_text(), proc, log, "the resumed search exports")
        time.sleep(1)
        _ctrl_c(proc)
    except BaseException:
        _end(proc)
        raise
    table = _check_interrupted(tmp_path, proc, log, before, space, {"completed"})
    assert len(table) == 2, table
    exp = tmp_path / "outputs" / "tiny"
    (run,) = [d for d in exp.iterdir() if d.is_dir()]
    for progress in run.glob("trial_*/progress.csv"):
        # each epoch reported once: the first trial went on from its epoch-1 checkpoint
        assert list(pd.read_csv(progress)["training_iteration"]) == [1, 2], progress

    proc, log = _start(space, tmp_path, "--resume")
    try:
        assert proc.wait(300) == 0, log.read_text()[-3000:]
    finally:
        _end(proc)
    assert (exp / "best" / "export.json").is_file()
    assert os.readlink(tmp_path / "outputs" / "best") == os.path.join("tiny", "best")


def test_sigterm_to_the_driver_mid_epoch(tmp_path, data_root):
    """A batch scheduler's SIGTERM, to the driver process only, with the first trial inside epoch 2 and the
    second not yet started (it waits for the one slot)."""
    space, proc, log, before, _ = _signal_when_it_sleeps(tmp_path, data_root, (2,),
                                                         lambda p: p.send_signal(signal.SIGTERM))
    table = _check_interrupted(tmp_path, proc, log, before, space, {"unfinished"})
    assert len(table) == 1 and list(table["epochs"]) == [1]


def test_debug_interrupted_is_one_line_and_exit_130(tmp_path, data_root):
    space = _space(tmp_path, data_root)
    proc, log = _start(space, tmp_path, "--debug", "search.scheduler.max_epochs=500")
    try:
        # inside the training loop: epoch 1 saved its checkpoint, 499 epochs to go (polled, not a fixed sleep)
        _wait(lambda: any((tmp_path / "outputs" / "tiny").glob("debug_*/checkpoints/last.ckpt")), proc, log,
              "the debug trial's first epoch ends")
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(60)
    finally:
        _end(proc)
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    ours = [line for line in text.splitlines() if line.startswith("tune_cifar.search: interrupted")]
    assert len(ours) == 1 and "debug_" in ours[0], text[-3000:]  # names the trial's outputs folder
