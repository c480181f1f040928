"""Ctrl-C and SIGTERM on a running ``python -m tune_cifar.train``, taken the user's way (issue 17, item 6).

The run is started in its own session (a signal to its process group is what a terminal's Ctrl-C sends
to the foreground job); once its first ``last.ckpt`` is on disk, a real signal is sent. Promised: one
line, exit 130, ``last.ckpt`` whole (the one of the last epoch boundary: nothing is written after the
signal), and the printed command resumes the run. Epochs are one batch each, so the run is at an
epoch's end or in the next one whenever the signal comes.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_overrides

MAX_EPOCHS = 1000  # never reached: the signal comes first


def _start(data_root: Path, out: Path) -> subprocess.Popen:
    args = tiny_overrides(data_root, out, f"trainer.max_epochs={MAX_EPOCHS}", "trainer.limit_train_batches=1",
                          "trainer.limit_val_batches=1", "optimizer.scheduler.name=none")
    return subprocess.Popen([sys.executable, "-m", "tune_cifar.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(path_glob: str, root: Path, proc: subprocess.Popen, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {path_glob} under {root} within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_train_with_a_whole_checkpoint_and_the_resume_command(cifar10_root, tmp_path, sig):
    from tune_cifar.checkpoint import read_checkpoint

    out = tmp_path / "outputs"
    proc = _start(cifar10_root, out)
    try:
        last = _wait_for("*/*/checkpoints/last.ckpt", out, proc)
        time.sleep(1.0)  # a few more epochs: the signal lands inside one
        os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Received SIGTERM" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"tune_cifar.train: interrupted by {sig.name} during "), line
    assert line.count("tune_cifar.train:") == 1 and "interrupted" not in stderr.replace(line, "")
    epoch = read_checkpoint(last)["epoch"] + 1  # loads whole (weights_only); the epoch it is the end of
    assert f"{last.absolute()} is whole, saved at the end of epoch {epoch} of {MAX_EPOCHS}" in line, line
    assert 1 <= epoch < MAX_EPOCHS
    assert not (last.parent.parent / "results.json").exists()  # not finished: no results that look like it

    # the printed command resumes it (here up to one more epoch)
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "tune_cifar.train"] and command[-1] == "run.resume=true"
    assert f"run.checkpoint_path={last.absolute()}" in command
    command = [sys.executable, *command[1:]]
    command[command.index(f"trainer.max_epochs={MAX_EPOCHS}")] = f"trainer.max_epochs={epoch + 1}"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = sorted(p for p in out.glob("*/*") if (p / "results.json").is_file())
    assert len(runs) == 1 and read_checkpoint(runs[0] / "checkpoints" / "last.ckpt")["epoch"] + 1 == epoch + 1
