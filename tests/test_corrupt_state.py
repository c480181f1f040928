"""--resume from a damaged or untrusted run folder (issue 11, item 4).

One finished search; then, one at a time, a state file is cut short (the searcher's state, Tune's
experiment state, the tuner, a trial's checkpoint), or replaced by a crafted pickle in a folder that
others may write to or that another user owns. Each ``--resume`` (a subprocess, as a user runs it) must
end with one line naming the file and exit 2, run no code from the folder, and change nothing that the
search produced (results, reports, export, ``outputs/best``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_space


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(working folder, space file) of one finished 2-trial search."""
    from cifar_files import write_cifar10

    work = tmp_path_factory.mktemp("corrupt")
    data = work / "data"
    write_cifar10(data, n_train=160, n_test=40, seed=0)
    space = write_space(work, data, {
        "num_samples": 2, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": 1}},  # one checkpoint per trial is all --resume reads
        [{"optimizer.optimizer": "adamw", "optimizer.lr": lr} for lr in (0.01, 0.02)], searcher="random")
    result = search(work, space)
    assert result.returncode == 0, result.stdout[-3000:]
    return work, space


def search(cwd: Path, space: Path, *args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    return subprocess.run([sys.executable, *flags, "-m", "tune_cifar.search", str(space), *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          start_new_session=True)


def tree(outputs: Path) -> dict[str, str]:
    """Every file (hash) and link (target) under outputs: what a refused --resume must leave alone."""
    out = {}
    for p in sorted(outputs.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_dir(work: Path) -> Path:
    (run,) = [d for d in (work / "outputs" / "tiny").iterdir() if d.name != "best"]
    return run


class Payload:
    """A pickle that, when unpickled, creates a file: how a tampered state would run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def refused(work: Path, space: Path, damaged: Path | None = None) -> str:
    before = tree(work / "outputs")
    result = search(work, space, "--resume", flags=("-X", "importtime"))
    assert result.returncode == 2, result.stdout[-3000:]
    assert "Traceback" not in result.stdout, result.stdout[-3000:]
    # answered from the run folder, before the seconds of torch's and Ray Tune's imports (counted, not timed)
    imported = {ln.split("|")[-1].strip() for ln in result.stdout.splitlines() if ln.startswith("import time:")}
    heavy = imported & {"torch", "ray.tune"}
    assert "tune_cifar.search.storage" in imported and not heavy, heavy
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("tune_cifar.search: error: --resume:")]
    assert len(lines) == 1, result.stdout[-3000:]
    if damaged is not None:
        assert str(damaged) in lines[0], lines[0]
    assert tree(work / "outputs") == before, "a refused --resume changed what the search produced"
    return lines[0]


@pytest.mark.parametrize("pattern", ["searcher-state-*.pkl", "experiment_state-*.json", "tuner.pkl",
                                     "trial_*/checkpoint_*/model.ckpt", "optuna.db"])
def test_a_truncated_state_file_is_named_and_nothing_changes(finished, pattern):
    work, space = finished
    target = sorted(run_dir(work).glob(pattern))[-1]
    saved = target.read_bytes()
    try:
        target.write_bytes(saved[: len(saved) // 2])
        line = refused(work, space, target)
        assert "unreadable" in line
    finally:
        target.write_bytes(saved)


def test_a_garbled_or_missing_study_is_refused_and_nothing_changes(finished):
    """The run's Optuna study (optuna.db) is read like the other state files (issue 17, item 2): garbled,
    one line naming it; deleted, refused (before: silently recreated empty, TPE starting over)."""
    work, space = finished
    db = run_dir(work) / "optuna.db"
    saved = db.read_bytes()
    try:
        db.write_bytes(b"not a database" * 100)
        assert "unreadable" in refused(work, space, db)
        db.unlink()
        assert "is missing" in refused(work, space, db)
        assert not db.exists(), "a refused --resume made a new study"
    finally:
        db.write_bytes(saved)


def test_a_study_that_cannot_be_written_is_refused(finished):
    """Root passes file permissions: the study is made immutable (chattr +i) to be unwritable."""
    work, space = finished
    db = run_dir(work) / "optuna.db"
    made = subprocess.run(["chattr", "+i", str(db)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file immutable here (chattr +i: {made.stderr.strip()[:120]})")
    try:
        assert "is not writable" in refused(work, space, db)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_a_crafted_pickle_in_a_folder_others_can_write_is_refused_unrun(finished):
    work, space = finished
    run = run_dir(work)
    target = sorted(run.glob("searcher-state-*.pkl"))[-1]
    saved = target.read_bytes()
    marker = work / "PWNED"
    mode = run.stat().st_mode
    try:
        target.write_bytes(pickle.dumps(Payload(marker)))
        os.chmod(run, mode | 0o020)  # group-writable run folder
        line = refused(work, space)
        assert f"{run} is writable by other users" in line and "trusted like code" in line
        os.chmod(run, mode)
        os.chmod(target, 0o666)  # the file itself writable by anyone
        line = refused(work, space)
        assert f"{target} is writable by other users" in line
        assert not marker.exists(), "code from the experiment folder ran"
    finally:
        os.chmod(run, mode)
        target.write_bytes(saved)
        os.chmod(target, 0o644)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_a_run_folder_owned_by_another_user_is_refused(finished):
    work, space = finished
    storage = work / "outputs"
    target = sorted(run_dir(work).glob("tuner.pkl"))[-1]
    try:
        os.chown(target, 65534, 65534)  # nobody
        line = refused(work, space)
        assert f"{target} is owned by" in line and "not by you" in line
        os.chown(target, 0, 0)
        os.chmod(storage, 0o777)  # the storage path itself open to everyone
        line = refused(work, space)
        assert f"{storage} is writable by other users" in line
    finally:
        os.chown(target, 0, 0)
        os.chmod(storage, 0o755)


def test_resume_of_the_intact_run_still_works(finished):
    """The checks refuse nothing of a healthy run: --resume of the finished search rebuilds its export."""
    work, space = finished
    result = search(work, space, "--resume")
    assert result.returncode == 0, result.stdout[-3000:]
    assert (work / "outputs" / "tiny" / "best" / "export.json").is_file()
