"""Data-parallel trials (search.resources.workers: 2, Ray Train workers on CPUs, gloo) on the user's path:
a search in a subprocess reports, stops, exports and predicts; a killed worker's trial is retried from its
checkpoint; --resume after the whole search was killed. Plus the batch sharding and the refused inputs."""

from __future__ import annotations

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

STRONG = {"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}
WEAK = {"optimizer.optimizer": "sgd", "optimizer.lr": 1e-5}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_workers")
    write_cifar10(root, n_train=600, n_test=100, seed=0)  # as test_search: good and bad trials differ at epoch 1
    return root


def _space(tmp_path: Path, data_root: Path, search: dict, points: list) -> Path:
    return write_space(tmp_path, data_root, {"resources": {"cpu": 1, "workers": 2}, **search}, points)


def _pbt_space(tmp_path: Path, data_root: Path) -> Path:
    """2 trials of 2 workers under PBT (the learning rate only: a key a restored trial can change): strong
    and weak, so that the weak one is exploited at the first interval."""
    import yaml

    pbt = write_space(tmp_path, data_root, {"resources": {"cpu": 1, "workers": 2}, "num_samples": 2, "scheduler": {
        "name": "pbt", "max_epochs": 2, "perturbation_interval": 1, "quantile_fraction": 0.5}}, name="pbt.yaml")
    doc = yaml.safe_load(pbt.read_text())
    doc["base"] += ["optimizer=adamw", "optimizer.scheduler.name=none"]
    doc["params"] = {"optimizer.lr": {"loguniform": [1e-5, 0.05]}}
    doc["search"]["searcher"] = {"name": "random", "seed": 0,
                                 "points_to_evaluate": [{"optimizer.lr": 0.01}, {"optimizer.lr": 1e-5}]}
    pbt.write_text(yaml.safe_dump(doc, sort_keys=False))
    return pbt


def _env(**extra: str) -> dict:
    """A user's shell (no Ray or test-fault variables of ours), plus the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    return {**env, **extra}


def _search(space: Path, cwd: Path, *args: str, env: dict | None = None, timeout: float = 900):
    return subprocess.run([sys.executable, "-m", "tune_cifar.search", str(space), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env or _env())


def _trial_rows(run: Path) -> dict[str, list[int]]:
    out = {}
    for progress in run.glob("trial_*/progress.csv"):
        try:
            out[progress.parent.name.removeprefix("trial_")] = list(pd.read_csv(progress)["training_iteration"])
        except (pd.errors.EmptyDataError, pd.errors.ParserError, KeyError):
            out[progress.parent.name.removeprefix("trial_")] = []
    return out


# --------------------------------------------------------------------------- the data of each worker


def test_workers_train_on_the_batches_of_one_process_and_validate_every_row_once():
    from tune_cifar.data.module import _EpochBatches, _shard_batches

    for epoch in (0, 3):
        one = _EpochBatches(103, 8, True, seed=5)
        parts = [_EpochBatches(103, 8, True, seed=5, rank=r, world=2) for r in (0, 1)]
        for s in (one, *parts):
            s.set_epoch(epoch)
        whole = list(one)
        halves = [list(p) for p in parts]
        assert len(whole) == len(halves[0]) == len(halves[1]) == 103 // 8
        for batch, a, b in zip(whole, *halves):  # step k of the two workers = step k of one process
            assert len(a) == len(b) == 4 and a + b == batch
    for n in (1, 7, 64, 65, 129):
        shards = [_shard_batches(n, 16, r, 2) for r in (0, 1)] if n > 1 else [_shard_batches(n, 16, 0, 1)]
        assert len({len(s) for s in shards}) == 1  # the same number of batches on every worker
        rows = sorted(i for s in shards for batch in s for i in batch)
        assert rows == list(range(n))  # every validation row once


@pytest.mark.slow
def test_lightning_ddp_of_two_processes_keeps_them_in_step(tmp_path):
    """bench/ddp_smoke.py on CPUs (scripts/gpu_check.sh runs it on a GPU): two DDP processes without Ray end
    with the same weights and the same synced validation metrics, and the loss falls."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "bench" / "ddp_smoke.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checks = json.loads(done.stdout.strip().splitlines()[-1])["checks"]
    assert all(checks.values()), checks


# --------------------------------------------------------------------------- refused before any trial


BAD = [("search.resources.workers=0", "search.resources.workers=0 is not allowed; allowed: an integer >= 1"),
       ("data.train_batch_size=1", "data.train_batch_size=1 is smaller than the number of workers"),
       ("data.train_batch_size=33", "data.train_batch_size=33 is not a multiple of 2"),
       ("search.resources.gpu=0.5", "search.resources.gpu=0.5 is not allowed; allowed: 0 or 1 with")]


def test_bad_worker_settings_are_refused_when_the_space_is_read(tmp_path, data_root):
    from tune_cifar.errors import UserError
    from tune_cifar.search.space import load_space

    space = _space(tmp_path, data_root, {"num_samples": 1}, [STRONG])
    for override, message in BAD:
        with pytest.raises(UserError, match=message.replace(".", r"\.")):
            load_space(space, [override])
    load_space(_pbt_space(tmp_path, data_root))  # PBT takes multi-worker trials (its test: below)
    searched = tmp_path / "searched.yaml"  # a searched global batch: every value a multiple of the workers
    doc = __import__("yaml").safe_load(space.read_text())
    for spec, ok in (({"choice": [32, 48, 33]}, False), ({"qint": [32, 128, 16]}, True), ({"int": [32, 128]}, False)):
        doc["params"]["data.train_batch_size"] = spec
        searched.write_text(__import__("yaml").safe_dump(doc, sort_keys=False))
        if ok:
            load_space(searched)
        else:
            with pytest.raises(UserError, match="data.train_batch_size"):
                load_space(searched)


@pytest.mark.parametrize("override, message", [
    BAD[0], *(pytest.param(*case, marks=pytest.mark.slow) for case in BAD[1:3])])
def test_bad_worker_settings_are_one_line_before_anything(tmp_path, data_root, override, message):
    space = _space(tmp_path, data_root, {"num_samples": 1, "scheduler": {"name": "fifo", "max_epochs": 1}}, [STRONG])
    done = _search(space, tmp_path, override, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # starts Ray (the check needs the cluster's resources)
def test_more_workers_than_the_machine_has_cpus_is_refused(tmp_path, data_root):
    space = _space(tmp_path, data_root, {"num_samples": 1, "scheduler": {"name": "fifo", "max_epochs": 1}}, [STRONG])
    cpus = os.cpu_count()
    done = _search(space, tmp_path, f"search.resources.workers={cpus + 1}", f"data.train_batch_size={(cpus + 1) * 16}",
                   timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert (f"search.resources: {cpus + 1} workers x cpu 1 = {cpus + 1} CPUs per trial (its workers share one "
            f"node) but no node of this machine has {cpus + 1}") in line, done.stderr
    assert not list((tmp_path / "outputs").glob("tiny/*/trial_*"))


# --------------------------------------------------------------------------- searches


def test_two_worker_search_reports_exports_and_predicts(tmp_path, data_root):
    """The cheap one: one trial of 2 workers, 1 epoch; its export is the usual folder and predict uses it."""
    space = _space(tmp_path, data_root, {"num_samples": 1, "scheduler": {"name": "fifo", "max_epochs": 1}}, [STRONG])
    done = _search(space, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "each trial on 2 data-parallel workers" in done.stdout
    (run,) = [d for d in (tmp_path / "outputs" / "tiny").iterdir() if d.name != "best"]
    table = pd.read_csv(run / "results.csv")
    assert list(table["status"]) == ["completed"] and list(table["world_size"]) == [2]
    progress = pd.read_csv(next(run.glob("trial_*/progress.csv")))
    assert list(progress["world_size"]) == [2] and progress["accuracy/val"].notna().all()
    reported = json.loads((tmp_path / "outputs" / "tiny" / "best" / "metrics.json").read_text())
    predicted = subprocess.run([sys.executable, "-m", "tune_cifar.predict", "--best", "--output-dir",
                                str(tmp_path / "outputs"), "--out", str(tmp_path / "pred")],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env())
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(reported["accuracy/test"], abs=1e-6)


@pytest.mark.slow
def test_two_worker_search_asha_stops_the_weak_trial(tmp_path, data_root):
    space = _space(tmp_path, data_root, {
        "num_samples": 2, "scheduler": {"name": "asha", "max_epochs": 2, "grace_period": 1, "reduction_factor": 2}},
        [STRONG, WEAK])
    done = _search(space, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "outputs" / "tiny").iterdir() if d.name != "best"]
    table = pd.read_csv(run / "results.csv").set_index("optimizer.optimizer")
    assert table.loc["adamw", "status"] == "completed" and table.loc["adamw", "epochs"] == 2
    assert table.loc["sgd", "status"] == "stopped early" and table.loc["sgd", "epochs"] == 1
    assert set(table["world_size"]) == {2}
    assert (tmp_path / "outputs" / "tiny" / "best" / "export.json").is_file()


@pytest.mark.slow
def test_two_worker_pbt_search_exploits_and_exports(tmp_path, data_root):
    """PBT over trials of 2 workers: on 2 CPUs one trial's workers fit at a time, so PBT is synchronous and the
    trials take turns. A paused trial must give its workers' CPUs back (else the next one waits for them
    without end, as it did before distributed.trial_class), an exploit restarts the weak trial from the
    strong one's checkpoint, and the search ends and exports."""
    if os.cpu_count() < 2:
        pytest.skip("2 workers x 1 CPU need 2 CPUs")
    done = _search(_pbt_space(tmp_path, data_root), tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "outputs" / "tiny").iterdir() if d.name != "best"]
    events = [json.loads(line) for line in (run / "pbt_exploits.jsonl").read_text().splitlines()]
    table = pd.read_csv(run / "results.csv").set_index("trial_id")
    assert events and table["exploits"].sum() == len(events), (events, table.to_string())
    for e in events:  # the exploited trial went on from its donor's checkpoint, on 2 workers again
        assert e["donor"] in table.loc[e["trial_id"], "cloned_from"]
    assert set(table["world_size"]) == {2} and set(table["status"]) == {"completed"}, table.to_string()
    assert (tmp_path / "outputs" / "tiny" / "best" / "export.json").is_file()


@pytest.mark.slow
def test_a_killed_worker_process_is_retried_from_the_trial_checkpoint(tmp_path, data_root):
    """Worker rank 1 of the trial dies at the start of epoch 2 (the process exits, as if killed); Tune retries
    the trial (search.max_failures: 1) from its epoch-1 checkpoint: epoch 1 is not trained again."""
    state = tmp_path / "faults"
    faults = json.dumps([{"when": {}, "epoch": 2, "fault": "exit", "rank": 1, "times": 1, "state_dir": str(state)}])
    space = _space(tmp_path, data_root, {"num_samples": 1, "max_failures": 1,
                                         "scheduler": {"name": "fifo", "max_epochs": 2}}, [STRONG])
    done = _search(space, tmp_path, env=_env(TUNE_CIFAR_TEST_FAULTS=faults))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(state.glob("*/.test_fault_*"))) == 1  # the worker did die once
    (run,) = [d for d in (tmp_path / "outputs" / "tiny").iterdir() if d.name != "best"]
    table = pd.read_csv(run / "results.csv")
    assert list(table["status"]) == ["completed"] and list(table["epochs"]) == [2]
    assert list(_trial_rows(run).values()) == [[1, 2]]  # resumed at epoch 2 from the checkpoint
    assert (tmp_path / "outputs" / "tiny" / "best" / "export.json").is_file()


@pytest.mark.slow
def test_resume_after_the_search_and_its_workers_were_killed(tmp_path, data_root):
    """SIGKILL to the search's whole session while its 2-worker trial hangs in epoch 2 (rank 0 sleeps, first
    attempt only); --resume continues the trial from its epoch-1 checkpoint and exports."""
    state = tmp_path / "faults"
    faults = json.dumps([{"when": {}, "epoch": 2, "fault": "sleep", "seconds": 600, "rank": 0, "times": 1,
                          "state_dir": str(state)}])
    space = _space(tmp_path, data_root, {"num_samples": 1, "scheduler": {"name": "fifo", "max_epochs": 2}}, [STRONG])
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space)], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env=_env(TUNE_CIFAR_TEST_FAULTS=faults, TUNE_GLOBAL_CHECKPOINT_S="1"))
    exp = tmp_path / "outputs" / "tiny"
    try:
        deadline = time.monotonic() + 600
        while not list(state.glob("*/.test_fault_*")):  # rank 0 sleeps in epoch 2: epoch 1 was reported
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the trial never reached epoch 2"
            time.sleep(0.5)
        time.sleep(3)  # Tune's snapshot of the experiment (every second here) after the report
    finally:
        out = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        for pid in (int(p) for p in out.split()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)
    (run,) = [d for d in exp.iterdir() if d.name != "best"]
    assert list(_trial_rows(run).values()) == [[1]] and not (run / "results.csv").exists()

    done = _search(space, tmp_path, "--resume", env=_env(TUNE_CIFAR_TEST_FAULTS=faults))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(run / "results.csv")
    assert list(table["status"]) == ["completed"] and list(table["world_size"]) == [2]
    assert list(_trial_rows(run).values()) == [[1, 2]]  # epoch 1 not trained again
    assert (exp / "best" / "export.json").is_file()


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_resume_finishes_the_trial(tmp_path, data_root):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while the 2-worker trial is in epoch 2:
    the search ends with 130 and no process of its session is left (the trial's Ray Train workers included);
    --resume continues the trial from its epoch-1 checkpoint."""
    state = tmp_path / "faults"
    faults = json.dumps([{"when": {}, "epoch": 2, "fault": "sleep", "seconds": 600, "rank": 0, "times": 1,
                          "state_dir": str(state)}])
    space = _space(tmp_path, data_root, {"num_samples": 1, "scheduler": {"name": "fifo", "max_epochs": 2}}, [STRONG])
    log = tmp_path / "first.log"
    proc = subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(space)], cwd=tmp_path,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=_env(TUNE_CIFAR_TEST_FAULTS=faults))
    try:
        deadline = time.monotonic() + 600
        while not list(state.glob("*/.test_fault_*")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the trial never reached epoch 2"
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(180) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    deadline = time.monotonic() + 60
    while subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split():
        assert time.monotonic() < deadline, "processes of the interrupted search are still running"
        time.sleep(1)
    assert "search interrupted" in log.read_text()

    done = _search(space, tmp_path, "--resume", env=_env(TUNE_CIFAR_TEST_FAULTS=faults))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "outputs" / "tiny").iterdir() if d.name != "best"]
    assert list(pd.read_csv(run / "results.csv")["status"]) == ["completed"]
    assert list(_trial_rows(run).values()) == [[1, 2]]
