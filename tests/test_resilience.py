"""A search that survives: failing trials, interruption and --resume, name clashes, a Ray cluster, reports.

Faults are injected with the test-only TUNE_CIFAR_TEST_FAULTS (tune_cifar/faults.py); Ray workers
inherit it from this process (local Ray) or from ``ray start`` (the cluster test).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import run_stopped_trial, write_space
from tune_cifar.faults import TEST_FAULTS_ENV

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}


def point(lr: float) -> dict:
    return {"optimizer.optimizer": "adamw", "optimizer.lr": lr}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_resilience")
    write_cifar10(root, n_train=400, n_test=60, seed=0)
    return root


def space_file(tmp_path: Path, data_root: Path, search: dict, points=None, name: str = "tiny.yaml") -> Path:
    return write_space(tmp_path, data_root, search, points, searcher="random", name=name)


# --------------------------------------------------------------------------- no Ray


def test_non_finite_loss_ends_training_with_its_reason(tiny_cfg):
    """A real divergence (SGD with an absurd learning rate), caught by the callback every trial gets."""
    from tune_cifar.data import load_data
    from tune_cifar.faults import NonFiniteLoss, trial_callbacks
    from tune_cifar.training import fit as run_trial

    cfg = tiny_cfg("optimizer=sgd", "optimizer.lr=1e12", "optimizer.weight_decay=0", "trainer.max_epochs=2")
    with pytest.raises(NonFiniteLoss, match=r"loss/train became (nan|inf) at epoch 1, step \d+"):
        run_trial(cfg, load_data(cfg.data, cfg.task.task), None, trial_callbacks({}))


@pytest.mark.slow  # tooling, not a README promise: two fresh processes importing torch
def test_fault_injection_is_loaded_only_when_its_variable_is_set():
    """A user's trial never imports the test-only fault injection; with TUNE_CIFAR_TEST_FAULTS it does."""
    script = ("import sys; from tune_cifar.faults import trial_callbacks; "
              "cbs = trial_callbacks({'optimizer.lr': 0.1}, 't1'); "
              "print(sorted(type(c).__name__ for c in cbs), 'tune_cifar.fault_injection' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != TEST_FAULTS_ENV}
    asked_env = {**env, TEST_FAULTS_ENV: json.dumps([{"when": {"optimizer.lr": 0.1}, "fault": "raise"}])}
    # both processes at once: each spends seconds importing torch, and they do not depend on each other
    procs = [subprocess.Popen([sys.executable, "-c", script], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for e in (env, asked_env)]
    (plain, plain_err), (asked, asked_err) = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], plain_err[-2000:] + asked_err[-2000:]
    assert plain.split("\n")[0] == "['NonFiniteLossCallback'] False"
    assert asked.split("\n")[0] == "['FaultInjection', 'NonFiniteLossCallback'] True"


def test_worker_memory_counts_what_an_earlier_trial_left(tiny_cfg):
    """A trial stopped the way Ray stops one (SystemExit from inside a report) leaves no model behind;
    one still referenced is counted by the next trial's WorkerMemory and reported as memory/*."""
    from tune_cifar.data import load_data
    from tune_cifar.training import WorkerMemory, live_models, release_memory, fit as run_trial

    cfg = tiny_cfg("trainer.max_epochs=3")
    arrays = load_data(cfg.data, cfg.task.task)
    before = live_models()  # models of earlier tests in this process that pytest still holds
    stopped = run_stopped_trial(cfg, arrays, [WorkerMemory()])
    release_memory()
    assert stopped and live_models(collect=False) == before

    kept = run_trial(cfg, arrays, None, [WorkerMemory()])  # a trainer still referenced keeps its model
    memory = WorkerMemory()
    trainer = run_trial(cfg, arrays, None, [memory])
    assert trainer.callback_metrics["memory/leftover_models"].item() == before + 1 == memory.leftover[
        "memory/leftover_models"]
    assert kept.lightning_module is not trainer.lightning_module


def test_resource_errors_name_the_resource():
    import torch

    from tune_cifar.faults import ResourceExhausted, resource_errors
    from tune_cifar.search.results import describe_error

    with pytest.raises(ResourceExhausted, match="out of GPU memory.*data.train_batch_size.*search.resources.gpu"):
        with resource_errors():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(ResourceExhausted, match=r"out of host memory \(RAM\)"):
        with resource_errors():
            raise MemoryError()

    class OutOfMemoryError(Exception):  # as ray.exceptions names it
        pass

    OutOfMemoryError.__module__ = "ray.exceptions"
    assert describe_error(OutOfMemoryError("Task was killed due to the node running low on memory.\nMemory on "
                                           "the node was 15.1GB / 16GB")).startswith("out of host memory (RAM)")
    assert describe_error(RuntimeError("Traceback ...\n  x\nValueError: bad thing")) == "ValueError: bad thing"
    text = "Failure # 1 (occurred at 2026-11-27_07-55-13)\nTrainable runner reuse requires reset_config()\n"
    assert describe_error(text) == "Trainable runner reuse requires reset_config()"  # Ray's error as text


def test_same_experiment_name_is_refused_unless_resume_or_new_name(tmp_path, data_root, capsys):
    from tune_cifar.search.storage import plan_run
    from tune_cifar.search import main
    from tune_cifar.search.space import load_space

    path = space_file(tmp_path, data_root, {"num_samples": 1})
    old = tmp_path / "outputs" / "tiny" / "2026-01-01_00-00-00"
    old.mkdir(parents=True)
    (old / "search.yaml").write_text("search: {}\n")

    with pytest.raises(SystemExit) as exit_:
        main([str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tune_cifar.search: error: experiment 'tiny' already exists in ")
    assert "(1 search run, latest 2026-01-01_00-00-00 (unfinished)); add --resume to continue it, --new-name to " \
           "run this search as 'tiny_2', or choose another name with search.experiment=NAME" in err
    assert len(err.splitlines()) == 1 and sorted(os.listdir(old.parent)) == [old.name]  # nothing written

    space = load_space(path)
    plan = plan_run(space, ["data.train_subset=64"], new_name=True)
    paths, renamed = plan.paths, plan.space
    assert paths.experiment == renamed.search.experiment == renamed.base["run"]["experiment"] == "tiny_2"
    assert paths.local.parent == tmp_path / "outputs" / "tiny_2" and paths.export_dir.name == "best"
    assert plan.overrides == ("data.train_subset=64", "search.experiment=tiny_2")  # what --resume will need
    assert space.search.experiment == space.base["run"]["experiment"] == "tiny"  # the plan holds a renamed copy

    # --resume: the latest run, and the configuration must be the same.
    assert plan_run(load_space(path), resume=True).paths.local == old
    with pytest.raises(SystemExit):
        main([str(path), "--resume"])
    assert "--resume: the configuration differs from run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--resume", "search.experiment=other"])
    assert exit_.value.code == 2
    assert "--resume: no search to resume for experiment 'other'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(path), "--resume", "--new-name"])
    assert "give only one" in capsys.readouterr().err


def test_new_name_run_resumes_with_the_command_it_records(tmp_path, data_root):
    """A --new-name run (tiny_2) records search.experiment=tiny_2 in its command, so the --resume
    command it prints continues tiny_2, not the older 'tiny'."""
    import shlex

    import ray

    from tune_cifar.search.storage import resume_command
    from tune_cifar.search.cli import main, run_search
    from tune_cifar.search.space import load_space

    path = space_file(tmp_path, data_root, {"num_samples": 1, "scheduler": {"name": "fifo", "max_epochs": 1}})
    old = tmp_path / "outputs" / "tiny" / "2026-01-01_00-00-00"
    old.mkdir(parents=True)
    (old / "search.yaml").write_text("search: {}\n")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        out = run_search(load_space(path), new_name=True)
        run = Path(out["run_dir"])
        assert run.parent.name == "tiny_2"
        cmd = resume_command(SimpleNamespace(ray_dir=str(run)))
        assert cmd == f"python -m tune_cifar.search {path} search.experiment=tiny_2 --resume"
        again = main(shlex.split(cmd)[3:])  # a finished run: results and export rebuilt, same folder
    finally:
        ray.shutdown()
    assert again["run_dir"] == str(run) and sorted(os.listdir(old.parent)) == [old.name]


def test_reports_from_a_results_table(tmp_path):
    from tune_cifar.search.report import learning_curves, parallel_coordinates

    table = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["completed", "stopped early", "failed", "error"],
                          "accuracy/val": [0.5, 0.3, 0.2, math.nan], "optimizer.lr": [1e-3, 1e-2, 1e-1, 1e-4],
                          "optimizer.optimizer": ["sgd", "adamw", "sgd", "adamw"],
                          "optimizer.momentum": [0.9, math.nan, 0.8, math.nan]})
    curves = {"a": pd.DataFrame({"training_iteration": [1, 2, 3], "accuracy/val": [0.2, 0.4, 0.5]}),
              "b": pd.DataFrame({"training_iteration": [1], "accuracy/val": [0.3]}),
              "c": pd.DataFrame({"training_iteration": [1, 2], "accuracy/val": [0.2, math.nan]}),
              "d": None}
    a = learning_curves(curves, dict(zip(table.trial_id, table.status)), "accuracy/val", tmp_path / "lc.png", 3)
    b = parallel_coordinates(table, ["optimizer.optimizer", "optimizer.lr", "optimizer.momentum"], "accuracy/val",
                             "max", tmp_path / "pc.png", {"optimizer.lr"})
    for p in (a, b):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_optuna_study_is_persistent_and_warm_starts(tmp_path, data_root):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from tune_cifar.errors import UserError
    from tune_cifar.search.study import check_study_direction, optuna_storage, study_name
    from tune_cifar.search.sampler import make_sampler
    from tune_cifar.search.space import load_space

    db = tmp_path / "db" / "optuna.db"
    space = load_space(space_file(tmp_path, data_root, {"optuna_storage": f"sqlite:///{db}"}))
    s = space.search
    assert study_name(s) == "tiny"

    def searcher():
        return OptunaSearch(space=space.suggest, metric=s.metric, mode=s.mode, sampler=make_sampler(s),
                            storage=optuna_storage(s), study_name=study_name(s))

    first = searcher()
    for i in range(3):
        first.suggest(f"t{i}")
        first.on_trial_complete(f"t{i}", {s.metric: 0.1 * i})
    # A later search (a new process would do the same) finds the study: TPE starts from these trials.
    again = searcher()
    assert [t.value for t in again._ot_study.trials] == pytest.approx([0.0, 0.1, 0.2])
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")  # what optuna-dashboard reads
    assert len(loaded.trials) == 3 and set(loaded.trials[0].params) >= {"optimizer.optimizer", "optimizer.lr"}

    # The same study for the other direction: Optuna would load it as it is (maximize) and TPE would
    # steer toward high losses; refused before anything runs.
    check_study_direction(optuna_storage(s), s)
    other = load_space(space_file(tmp_path, data_root, {"optuna_storage": f"sqlite:///{db}", "metric": "loss/val",
                                                         "mode": "min"}, name="loss.yaml"))
    with pytest.raises(UserError, match=r"^search.optuna_storage: study 'tiny' \(3 trials\) was created to maximize, "
                                        r"but search.mode=min \(loss/val\) needs minimize; choose another study"):
        check_study_direction(optuna_storage(other.search), other.search)


# --------------------------------------------------------------------------- Ray: failing trials


def test_failing_trials_are_recorded_and_the_best_of_the_rest_is_exported(tmp_path, data_root, monkeypatch):
    """Crash (retried, still failing), NaN loss (not retried), a transient crash that a retry fixes
    from its checkpoint, and a good trial; reports, TensorBoard logs, persistent study."""
    import optuna
    import ray

    from tune_cifar.export import read_export
    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    NAN, CRASH, TRANSIENT = 0.002, 0.003, 0.005
    monkeypatch.setenv(TEST_FAULTS_ENV, json.dumps([
        {"when": {"optimizer.lr": NAN}, "epoch": 2, "fault": "nan"},
        {"when": {"optimizer.lr": CRASH}, "epoch": 2, "fault": "raise"},
        {"when": {"optimizer.lr": TRANSIENT}, "epoch": 2, "fault": "raise", "times": 1,
         "state_dir": str(tmp_path / "faults")},
    ]))
    db = tmp_path / "optuna.db"
    path = space_file(tmp_path, data_root, {
        "num_samples": 4, "max_concurrent_trials": 1, "resources": {"cpu": 1}, "max_failures": 1,
        "scheduler": {"name": "fifo", "max_epochs": 2}, "optuna_storage": f"sqlite:///{db}",
    }, points=[point(lr) for lr in (NAN, CRASH, TRANSIENT, 0.01)])
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        out = run_search(load_space(path))
    finally:
        ray.shutdown()

    table = pd.read_csv(out["results"]).set_index("optimizer.lr")
    assert len(table) == 4 and table["trial_id"].is_unique
    assert table.loc[NAN, "status"] == "failed" and table.loc[NAN, "epochs"] == 2
    assert table.loc[NAN, "error"].startswith("loss/train became nan at epoch 2")
    assert table.loc[NAN, "accuracy/val"] > 0  # its first epoch still counts
    assert table.loc[CRASH, "status"] == "error"
    assert table.loc[CRASH, "error"].endswith("injected fault at epoch 2 (TUNE_CIFAR_TEST_FAULTS)")
    assert table.loc[TRANSIENT, "status"] == "completed" and table.loc[TRANSIENT, "epochs"] == 2
    assert table.loc[0.01, "status"] == "completed"

    run_dir = Path(out["run_dir"])
    trial_dir = {lr: run_dir / f"trial_{table.loc[lr, 'trial_id']}" for lr in table.index}
    assert (trial_dir[CRASH] / "error.txt").read_text().count("Failure # ") == 2  # one retry (max_failures=1)
    assert not (trial_dir[NAN] / "error.txt").exists()  # ended, not failed: no retry
    transient = pd.read_csv(trial_dir[TRANSIENT] / "progress.csv")
    assert sorted(set(transient["training_iteration"])) == [1, 2]  # the retry resumed at epoch 2

    # The best of the rest is exported.
    best = table[table["status"] == "completed"]["accuracy/val"].idxmax()
    exp = read_export(tmp_path / "outputs" / "tiny" / "best")
    assert exp.hyperparameters["optimizer.lr"] == pytest.approx(best)

    # Reports and TensorBoard logs.
    for name in ("learning_curves.png", "parallel_coordinates.png"):
        assert (run_dir / name).stat().st_size > 10_000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(trial_dir[0.01].glob("events.out.tfevents.*"))))
    acc.Reload()
    assert any(tag.endswith("accuracy/val") for tag in acc.Tags()["scalars"])

    # The persistent study holds every trial: NaN and errors as FAIL.
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    states = {t.params["optimizer.lr"]: t.state.name for t in study.trials}
    assert states == {NAN: "FAIL", CRASH: "FAIL", TRANSIENT: "COMPLETE", 0.01: "COMPLETE"}


# --------------------------------------------------------------------------- Ray: interruption and resume


def _finished_trials(exp: Path, epochs: int) -> dict[str, int]:
    """trial id -> rows in its progress.csv, for trials that reported their last epoch."""
    out = {}
    for progress in exp.glob("*/trial_*/progress.csv"):
        try:
            df = pd.read_csv(progress)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if len(df) and (df["training_iteration"] >= epochs).any():
            out[progress.parent.name.removeprefix("trial_")] = len(df)
    return out


def _rows(progress: Path) -> int:
    try:
        return len(pd.read_csv(progress))
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return 0


def _start(path: Path, cwd: Path, *args: str) -> subprocess.Popen:
    """The search in a session of its own; Tune snapshots the experiment every second (Ray's setting,
    default about every 10 s)."""
    log = open(cwd / f"search_{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(path), *args], cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"})


def _wait_for_snapshot(run: Path, after: float, timeout: float = 30) -> None:
    """Until Tune's experiment state in ``run`` was written after time ``after``."""
    deadline = time.monotonic() + timeout
    while max((f.stat().st_mtime for f in run.glob("experiment_state-*.json")), default=0) <= after + 0.1:
        assert time.monotonic() < deadline, f"no snapshot of the experiment in {timeout} s"
        time.sleep(0.2)


def _wait_for(proc: subprocess.Popen, exp: Path, epochs: int, n: int, timeout: float = 120) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = _finished_trials(exp, epochs)
        if len(done) >= n:
            return done
        assert proc.poll() is None, f"the search ended early ({proc.returncode})"
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} trials finished in {timeout} s")


def _kill_session(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to every process of the session the search started (its Ray processes too)."""
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    for pid in (int(p) for p in out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def test_killed_search_resumes_without_losing_or_rerunning_trials(tmp_path, data_root, monkeypatch):
    """SIGKILL of the search and its Ray processes with 2 trials finished and the third hung in epoch 2 (a test
    fault, first attempt only; one trial at a time, so the fourth is not begun), once Tune's snapshot holds
    that; --resume keeps the finished trials, continues the hung one from its epoch-1 checkpoint and runs
    the fourth."""
    from tune_cifar.search import main

    epochs, n, fast, hung = 2, 4, (0.01, 0.011, 0.012), (0.02,)
    monkeypatch.setenv(TEST_FAULTS_ENV, json.dumps([
        {"when": {"optimizer.lr": lr}, "epoch": 2, "fault": "sleep", "times": 1, "state_dir": str(tmp_path / "f")}
        for lr in hung]))
    path = space_file(tmp_path, data_root, {
        "num_samples": n, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": epochs}, "searcher": {"name": "random", "seed": 0}},
        points=[point(lr) for lr in (*fast[:2], *hung, fast[2])])
    exp = tmp_path / "outputs" / "tiny"
    proc = _start(path, tmp_path)
    try:
        _wait_for(proc, exp, epochs, 2)
        (run,) = [d for d in exp.iterdir() if d.name != "best"]

        def hung_rows() -> list[int]:
            return sorted(_rows(p) for p in run.glob("trial_*/progress.csv") if _rows(p) < epochs)

        while hung_rows() != [1]:
            assert proc.poll() is None, "the search ended early"
            time.sleep(0.2)
        _wait_for_snapshot(run, after=time.time())  # Tune's snapshot: what --resume continues from
    finally:
        _kill_session(proc, signal.SIGKILL)
        proc.wait(30)
    before = _finished_trials(exp, epochs)
    assert len(before) == 2 and hung_rows() == [1] and not (run / "results.csv").exists()

    out = main([str(path), "--resume"])
    table = pd.read_csv(out["results"])
    assert out["run_dir"] == str(run) and len(table) == n and table["trial_id"].is_unique
    assert set(before) <= set(table["trial_id"].astype(str)) and set(table["status"]) == {"completed"}
    for progress in run.glob("trial_*/progress.csv"):  # no epoch ran twice: finished trials not re-run,
        assert list(pd.read_csv(progress)["training_iteration"]) == [1, 2], progress  # the hung one resumed
    assert (exp / "best" / "export.json").is_file()
    # The run folder's Optuna study: the hung trial went on in its Optuna trial, nothing RUNNING.
    _assert_study_closed(run, table)


def _assert_study_closed(run: Path, table: pd.DataFrame) -> list:
    """Nothing RUNNING in the run's study; each trial of results.csv COMPLETE once (ray_trial_id)."""
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'optuna.db'}").trials
    assert "RUNNING" not in {t.state.name for t in trials}
    complete = [t.user_attrs["ray_trial_id"] for t in trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(table["trial_id"].astype(str))
    return trials


@pytest.mark.slow
def test_sigterm_then_kill_then_resume_keeps_every_trial_once(tmp_path, data_root, capsys):
    """SIGTERM (graceful, exit 130), --resume, SIGKILL of everything, --resume again: 6 trials, each once."""
    from tune_cifar.search import main

    epochs, n = 2, 6
    path = space_file(tmp_path, data_root, {
        "num_samples": n, "max_concurrent_trials": 2, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": epochs}, "searcher": {"name": "random", "seed": 0}})
    exp = tmp_path / "outputs" / "tiny"
    try:
        first = _start(path, tmp_path)
        done1 = _wait_for(first, exp, epochs, 1)
        first.send_signal(signal.SIGTERM)  # like Ctrl-C: Tune saves the state and stops
        assert first.wait(60) == 130
        log1 = next(tmp_path.glob("search_*.log")).read_text()
        assert "search interrupted after" in log1 and "--resume" in log1
        (run,) = [d for d in exp.iterdir() if d.name != "best"]
        before = pd.read_csv(run / "results.csv")  # written for what ran
        assert 1 <= len(before) < n and not (exp / "best").exists()
        import optuna  # the interrupted trials are closed in the study (FAIL, ended: interrupted)

        trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'optuna.db'}").trials
        assert "RUNNING" not in {t.state.name for t in trials}
        assert {t.user_attrs["ended"] for t in trials if t.state.name == "FAIL"} == {"interrupted"}
        done1 = _finished_trials(exp, epochs)

        second = _start(path, tmp_path, "--resume")
        done2 = _wait_for(second, exp, epochs, len(done1) + 1)
        _kill_session(second, signal.SIGKILL)  # the process killed, Ray with it: no chance to save anything
        second.wait(30)
    finally:
        for proc in [p for p in (locals().get("first"), locals().get("second")) if p is not None]:
            _kill_session(proc, signal.SIGKILL)
    done2 = _finished_trials(exp, epochs)

    out = main([str(path), "--resume"])
    table = pd.read_csv(out["results"])
    assert out["run_dir"] == str(run) and len(table) == n and table["trial_id"].is_unique
    assert set(done2) <= set(table["trial_id"].astype(str))
    finished = _finished_trials(exp, epochs)
    for trial in done1:  # finished before the graceful stop, which saved Tune's state: not re-run
        assert finished[trial] == epochs, trial
    for trial in set(done2) - set(done1):  # finished before the kill: Tune's last snapshot may predate
        assert epochs <= finished[trial] <= 2 * epochs, trial  # that, and it trains on from there
    assert set(table["status"]) == {"completed"} and (exp / "best" / "export.json").is_file()
    assert (run / "learning_curves.png").stat().st_size > 10_000
    trials = _assert_study_closed(run, table)  # an interrupted trial went on in a new Optuna trial
    assert any("continues_trial" in t.user_attrs for t in trials if t.state.name == "COMPLETE")
    print(f"finished trials: {len(done1)} after SIGTERM, {len(done2)} after SIGKILL, {len(table)} at the end")


# --------------------------------------------------------------------------- Ray: an existing cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_ray_token_cache() -> None:
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture
def ray_head():
    """A real local Ray head (``ray start --head --block``), stopped by signalling only its own processes."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ["RAY_AUTH_MODE"] = "token"  # Ray 2.60 clusters use token authentication
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")  # short: Ray's socket paths have a length limit
    log = open(Path(temp) / "head.log", "w")
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
         *(f"--{opt}={_free_port()}" for opt in ("dashboard-port", "dashboard-agent-listen-port",
                                                 "dashboard-agent-grpc-port", "metrics-export-port",
                                                 "runtime-env-agent-port", "ray-client-server-port"))],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in (Path(temp) / "head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (Path(temp) / "head.log").read_text()
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block stops its processes; never `ray stop` (all of them)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        _kill_session(head, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_ray_token_cache()  # later local Ray clusters use the default token again


def test_search_on_an_existing_ray_cluster_with_uri_storage(tmp_path, data_root, ray_head, capsys):
    """--address joins the cluster; a file:// storage_path goes through Ray's URI storage (as s3:// would)."""
    from tune_cifar.export import find_best, read_export
    from tune_cifar.search import main

    shared, local = tmp_path / "shared", tmp_path / "local"
    path = space_file(tmp_path, data_root, {
        "num_samples": 2, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "fifo", "max_epochs": 1}, "storage_path": f"file://{shared}",
        "local_path": str(local)}, points=[GOOD, point(0.002)])

    # Trial resources that no node has: a clear error, not an endless wait.
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--address", ray_head, "search.resources.cpu=4"])
    assert exit_.value.code == 2
    assert (f"search.resources.cpu=4 per trial but no node of the Ray cluster at {ray_head} has 4 CPUs "
            f"(the most on one node: 2); allowed: at most 2") in capsys.readouterr().err

    out = main([str(path), "--address", ray_head])
    run = Path(out["run_dir"])
    assert run.parent == local / "tiny" and len(pd.read_csv(out["results"])) == 2
    ray_run = shared / "tiny" / run.name  # trials and checkpoints on the shared storage
    assert len(list(ray_run.glob("trial_*/checkpoint_*/model.ckpt"))) == 2
    for name in ("search.yaml", "results.csv", "best.json", "learning_curves.png", "parallel_coordinates.png"):
        assert (ray_run / name).read_bytes() == (run / name).read_bytes(), name  # reports copied next to them
    exp = read_export(find_best(local))
    assert exp.metrics["trial_id"] == out["best_trial"] and "accuracy/test" in exp.metrics
