"""The search end to end on tiny CIFAR-format data: Ray + Optuna + ASHA, results.csv, export; debug mode."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_space
from tune_cifar.config import config_from_dict
from tune_cifar.data import ImageDataModule, load_data
from tune_cifar.export import find_best, read_export
from tune_cifar.timeline import TIMELINE_ENV

STRONG = {"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}
WEAK = {"optimizer.optimizer": "sgd", "optimizer.lr": 1e-5}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_search")
    write_cifar10(root, n_train=600, n_test=100, seed=0)  # enough for good and bad trials to differ at epoch 1
    return root


def space_file(tmp_path: Path, data_root: Path, search: dict, points=None) -> Path:
    return write_space(tmp_path, data_root, search, points)


def grid_results(out: dict) -> list:
    """Each trial's reported rows (Ray's progress.csv) from a finished search."""
    import pandas as pd

    return [pd.read_csv(p) for p in Path(out["ray_dir"]).glob("trial_*/progress.csv")]


def test_asha_search_stops_trials_early_and_exports_the_best(tmp_path, data_root, monkeypatch, capsys):
    import ray

    from tune_cifar.faults import TEST_FAULTS_ENV

    # Every stopped trial's teardown takes 3 s, longer than Ray waits by default (2 s) before it gives
    # up reusing the process and fails the next trial; the search must still have no error.
    monkeypatch.setenv(TEST_FAULTS_ENV, json.dumps([{"when": {}, "fault": "slow_stop", "seconds": 3}]))
    # The driver and every trial (Ray's workers inherit the variable) record their stages (tune_cifar.timeline)
    timeline = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(TIMELINE_ENV, str(timeline))

    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    # one trial at a time: one trial process, reused by every trial after a stopped one's slow teardown
    path = space_file(tmp_path, data_root, {
        "num_samples": 4, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "asha", "max_epochs": 3, "grace_period": 1, "reduction_factor": 2},
    }, points=[STRONG, {**STRONG, "optimizer.lr": 0.005}, WEAK, {**WEAK, "optimizer.optimizer": "adamw"}])
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        out = run_search(load_space(path))
        # What tune.with_parameters hands a trial (one ray.put): a read-only view of the object store.
        arrays = load_data(load_space(path).trial_config({}).data, "classification_multiclass")
        shared = ray.get(ray.remote(lambda a: not a.train_x.flags.writeable).remote(ray.put(arrays)))
    finally:
        ray.shutdown()
    assert shared

    import pandas as pd

    table = pd.read_csv(out["results"])
    from types import SimpleNamespace

    from tune_cifar.search.results import trial_statuses

    saved = SimpleNamespace(experiment_path=out["ray_dir"], filesystem=None)  # a ResultGrid's public fields
    assert trial_statuses(saved) == {t: "TERMINATED" for t in table["trial_id"]}  # Tune's saved state, read back
    assert len(table) == 4 and set(table.columns) >= {
        "trial_id", "status", "accuracy/val", "best_epoch", "epochs", "time_s", "optimizer.lr", "optimizer.optimizer"}
    assert (table["epochs"] < 3).any() and (table["status"] == "stopped early").any()  # ASHA stopped one early
    assert (table["epochs"] == 3).any() and not (table["status"] == "error").any()
    assert out["trial_epochs"] == table["epochs"].sum() < 12
    assert table["accuracy/val"].iloc[0] == table["accuracy/val"].max()  # sorted, best first

    # The run folder's Optuna study holds each trial as results.csv says (completed: COMPLETE with its
    # best-epoch value; stopped early: PRUNED with every epoch; nothing RUNNING), and the importance line
    # says why it has no ranking (4 trials: too few for its noise test, tests/test_importance.py).
    import optuna

    run_dir = Path(out["run_dir"])
    assert out["study"] == f"sqlite:///{run_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="tiny", storage=out["study"])
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(trials) == set(table["trial_id"].astype(str))
    for _, row in table.iterrows():
        t = trials[str(row["trial_id"])]
        assert t.state.name == {"completed": "COMPLETE", "stopped early": "PRUNED"}[row["status"]], row["trial_id"]
        progress = pd.read_csv(run_dir / f"trial_{row['trial_id']}" / "progress.csv")
        assert t.intermediate_values == pytest.approx(dict(zip(progress["training_iteration"],
                                                               progress["accuracy/val"])))
        assert t.user_attrs["best_epoch"] == row["best_epoch"]
        if row["status"] == "completed":
            assert t.value == pytest.approx(row["accuracy/val"])  # the value results.csv ranks by
    if table["status"].iloc[0] == "completed":  # results.csv's first row is what the export takes
        best_json = json.loads((run_dir / "best.json").read_text())
        assert study.best_trial.user_attrs["ray_trial_id"] == best_json["best_trial"] == str(table["trial_id"].iloc[0])
    printed = capsys.readouterr().out
    assert "parameter importance: needs at least 8 completed or stopped-early trials, this search has 4" in printed
    assert not (run_dir / "param_importances.png").exists()

    # Memory is released when a trial ends or ASHA stops it: Ray reuses worker processes, and a reused
    # worker starts its next trial holding no model of the last one (on a GPU also: no allocated MiB).
    pids, leftover = [], []
    for result in grid_results(out):
        pids.append(int(result["pid"].iloc[0]))
        leftover.extend(result["memory/leftover_models"])
    assert len(pids) == 4 and len(set(pids)) < len(pids)  # some trials ran in a reused worker
    assert leftover and set(leftover) == {0.0}

    # No work is done twice (issue 19, counted from the timeline): each trial validates once per epoch it
    # trained, with no sanity-check pass before training, and writes one checkpoint per epoch (what Ray
    # copies into the storage); the driver scores the exported model on the test split once.
    done = work_per_trial(timeline)
    assert set(done) == set(table["trial_id"])
    for trial, epochs in zip(table["trial_id"], table["epochs"]):
        assert done[trial]["sanity_start"] == 0, trial
        assert done[trial]["val_start"] == done[trial]["ckpt_written"] == epochs, (trial, done[trial])
    driver = [json.loads(line)["event"] for line in timeline.read_text().splitlines()
              if json.loads(line)["pid"] == os.getpid()]
    assert driver.count("scoring_start") == 1 and driver.count("export_written") == 1

    # The export: best trial at its best epoch, loadable without Ray, linked from outputs/best.
    export_dir = tmp_path / "outputs" / "tiny" / "best"
    assert find_best(tmp_path / "outputs") == export_dir.resolve()
    assert os.readlink(tmp_path / "outputs" / "best") == "tiny/best"  # relative link
    exp = read_export(export_dir)
    best = table.iloc[0]
    assert exp.metrics["trial_id"] == best["trial_id"] and exp.metrics["epoch"] == best["best_epoch"]
    assert exp.metrics["accuracy/val"] == pytest.approx(best["accuracy/val"])
    assert exp.hyperparameters["optimizer.optimizer"] == best["optimizer.optimizer"]
    assert exp.manifest["classes"][0] == "airplane" and "versions.json" in os.listdir(export_dir)
    assert exp.config["optimizer"]["lr"] == pytest.approx(best["optimizer.lr"])

    # Its model gives the test accuracy that metrics.json records (computed independently here).
    cfg = config_from_dict(exp.config)
    arrays = load_data(cfg.data, cfg.task.task)
    dm = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed)
    dm.setup("test")
    exp.classifier.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            correct += int((exp.classifier(x).argmax(1) == y).sum())
            total += len(y)
    assert total == 100
    assert correct / total == pytest.approx(exp.metrics["accuracy/test"], abs=1e-6)

    # Everything still works after the outputs folder is moved (relative paths only).
    moved = tmp_path / "moved"
    (tmp_path / "outputs").rename(moved)
    assert read_export(find_best(moved)).metrics == exp.metrics


def work_per_trial(timeline: Path) -> dict[str, dict[str, int]]:
    """Events of each trial in a TUNE_CIFAR_TIMELINE file, counted: a worker process runs its trials one
    after another, so its events between a trial_start and the next belong to that trial."""
    from collections import Counter, defaultdict

    counts: dict[str, Counter] = defaultdict(Counter)
    current: dict[int, str] = {}  # worker pid -> its trial now
    for line in timeline.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "trial_start":
            current[e["pid"]] = e["trial"]
        if e["pid"] in current:
            counts[current[e["pid"]]][e["event"]] += 1
    return counts


# slow: the registries' extension path; test_scheduler_registry.py runs a plugin's scheduler through a real
# search in the default run
@pytest.mark.slow
def test_a_registered_scheduler_and_searcher_are_one_function_each(tmp_path, data_root):
    """Registering a scheduler and a searcher by name makes them valid search settings (and named in the
    allowed values), and a search runs with them: the Tuner drives the registered objects."""
    import optuna
    import ray
    from ray.tune.schedulers import FIFOScheduler

    from tune_cifar.errors import UserError
    from tune_cifar.search.cli import run_search
    from tune_cifar.search.registry import SCHEDULERS, SEARCHERS, register_scheduler, register_searcher
    from tune_cifar.search.space import load_space

    seen = {"results": 0, "sampler": None}

    class CountingFIFO(FIFOScheduler):  # runs in the driver: it sees every reported epoch
        def on_trial_result(self, tune_controller, trial, result):
            seen["results"] += 1
            return super().on_trial_result(tune_controller, trial, result)

    @register_scheduler("toy_fifo")
    def toy_fifo(s):
        return CountingFIFO()

    @register_searcher("toy_random")
    def toy_random(s):
        seen["sampler"] = optuna.samplers.RandomSampler(seed=s.searcher.seed + 1)
        return seen["sampler"]

    try:
        with pytest.raises(UserError, match=r"search.scheduler.name='nope' is not allowed; allowed: asha, fifo, pbt, "
                                            r"toy_fifo$"):
            load_space(space_file(tmp_path, data_root, {"scheduler": {"name": "nope"}}))
        path = space_file(tmp_path, data_root, {"num_samples": 2, "max_concurrent_trials": 1,
                                                "scheduler": {"name": "toy_fifo", "max_epochs": 2},
                                                "searcher": {"name": "toy_random"}})
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="WARNING")
        try:
            out = run_search(load_space(path))
        finally:
            ray.shutdown()
    finally:
        SCHEDULERS.pop("toy_fifo", None)
        SEARCHERS.pop("toy_random", None)
    assert out["trials"] == 2 and out["trial_epochs"] == 4
    assert seen["results"] == 4  # two trials, two epochs each, all seen by the registered scheduler
    assert isinstance(seen["sampler"], optuna.samplers.RandomSampler)  # built by the registered function
    with pytest.raises(UserError, match=r"allowed: asha, fifo, pbt$"):  # unregistered again
        load_space(space_file(tmp_path, data_root, {"scheduler": {"name": "toy_fifo"}}))


DEBUG_SCRIPT = """
import sys
from tune_cifar.search import main
out = main(sys.argv[1:])
assert not [m for m in sys.modules if m == "ray" or m.startswith("ray.")], "debug mode imported Ray"
print("VALUES", out["values"])
print("VAL", out["val"])
"""


def test_debug_runs_one_trial_without_ray(tmp_path, data_root):
    path = space_file(tmp_path, data_root, {"scheduler": {"max_epochs": 1}})
    params = json.dumps({"optimizer.optimizer": "sgd", "optimizer.lr": 0.01})
    proc = subprocess.run([sys.executable, "-c", DEBUG_SCRIPT, str(path), "--debug", "--params", params,
                           "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'optimizer.lr': 0.01" in proc.stdout and "'optimizer.momentum'" in proc.stdout  # given + sampled
    assert "'accuracy/val'" in proc.stdout


def test_debug_bad_params_and_gpu_exit_2(tmp_path, data_root, capsys):
    from tune_cifar.search import main

    path = space_file(tmp_path, data_root, {})
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--debug", "--params", '{"optimizer.lr": 7}'])
    assert exit_.value.code == 2
    assert "--params: optimizer.lr=7 is outside its distribution" in capsys.readouterr().err
    if torch.cuda.is_available():
        return
    gpu = space_file(tmp_path, data_root, {"resources": {"gpu": 0.5}})
    for argv in ([str(gpu), "--debug"], [str(gpu)]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("search.resources.gpu=0.5 but this machine has no GPU; allowed: 0 (CPU trials)")


def _fake_result(tmp_path, trial_id: str, accs: list, checkpoints=(), error=None, reason=None):
    """What Ray's ResultGrid yields, reduced: curves, and (checkpoint, metrics) for the kept epochs."""
    from types import SimpleNamespace

    import pandas as pd

    from tune_cifar.search.names import STOP_REASON

    df = pd.DataFrame({"training_iteration": range(1, len(accs) + 1), "accuracy/val": accs,
                       "time_total_s": [float(i) for i in range(1, len(accs) + 1)]})
    kept = [(SimpleNamespace(path=f"{trial_id}/{e}"), {"training_iteration": e, "accuracy/val": accs[e - 1]})
            for e in checkpoints]

    def get_best_checkpoint(metric, mode):  # as ray.tune.Result: RuntimeError when there is none
        if not kept:
            raise RuntimeError("No checkpoint exists in the trial directory!")
        return max(kept, key=lambda cm: cm[1][metric])[0]

    return SimpleNamespace(metrics_dataframe=df, metrics={"trial_id": trial_id, STOP_REASON: reason}, error=error,
                           config=dict(STRONG), path=str(tmp_path / f"trial_{trial_id}"), best_checkpoints=kept,
                           get_best_checkpoint=get_best_checkpoint)


def test_export_is_the_top_exportable_row_of_results_at_its_best_epoch(tmp_path, data_root):
    """Failed and errored trials are not exported even when their best value is higher; of tied epochs
    the later one (the checkpoint Ray keeps) is both results.csv's best_epoch and the export."""
    from tune_cifar.search.results import export_choice, results_table
    from tune_cifar.search.space import load_space

    space = load_space(space_file(tmp_path, data_root, {"scheduler": {"name": "fifo", "max_epochs": 3}}))
    grid = [_fake_result(tmp_path, "diverged", [0.6, 0.95, math.nan], [1, 2], reason="loss/train became nan"),
            _fake_result(tmp_path, "crashed", [0.97], [1], error=RuntimeError("boom")),
            _fake_result(tmp_path, "tied", [0.5, 0.9, 0.9], [2, 3]),
            _fake_result(tmp_path, "plain", [0.4, 0.8, 0.85], [2, 3])]
    table = results_table(space, grid)
    assert list(table["trial_id"]) == ["crashed", "diverged", "tied", "plain"]
    assert list(table["status"]) == ["error", "failed", "completed", "completed"]
    assert table.set_index("trial_id").loc["tied", "best_epoch"] == 3
    result, checkpoint, reported = export_choice(space, grid, table)
    assert (result.metrics["trial_id"], checkpoint.path, reported["training_iteration"]) == ("tied", "tied/3", 3)


def test_interrupted_trial_waiting_for_a_retry_is_unfinished_not_error(tmp_path, data_root):
    """Its last error stays on the result, but Tune holds it PENDING and --resume continues it."""

    from tune_cifar.search.results import results_table
    from tune_cifar.search.space import load_space

    space = load_space(space_file(tmp_path, data_root, {"scheduler": {"name": "fifo", "max_epochs": 3}}))
    grid = [_fake_result(tmp_path, "retry", [0.5], [1], error=RuntimeError("boom")),
            _fake_result(tmp_path, "dead", [0.4], [1], error=RuntimeError("boom"))]
    statuses = {"retry": "PENDING", "dead": "ERROR"}  # what results.trial_statuses reads from Tune's saved state
    table = results_table(space, grid, statuses).set_index("trial_id")
    assert table.loc["retry", "status"] == "unfinished" and table.loc["dead", "status"] == "error"


def test_nothing_to_export_is_one_clear_error_and_results_are_kept(tmp_path, data_root):
    """No completed trial with a checkpoint: a UserError, results.csv kept."""
    import pandas as pd

    from tune_cifar.errors import UserError
    from tune_cifar.search.storage import plan_run
    from tune_cifar.search.results import finish
    from tune_cifar.search.space import load_space

    space = load_space(space_file(tmp_path, data_root, {"scheduler": {"name": "fifo", "max_epochs": 1}}))
    grid = [_fake_result(tmp_path, "a", [0.5]), _fake_result(tmp_path, "b", [0.7], [1], reason="loss/train: nan")]
    plan = plan_run(space)
    with pytest.raises(UserError, match=r"^no completed or early-stopped trial reported accuracy/val with a "
                                        r"checkpoint, nothing exported"):
        finish(plan, grid, arrays=None)
    assert list(pd.read_csv(plan.paths.local / "results.csv")["trial_id"]) == ["b", "a"]


def test_results_table_shows_peak_gpu_memory_of_gpu_trials(tmp_path, data_root):
    """GPU trials report memory/cuda_peak_mb (training.WorkerMemory): results.csv gets peak_gpu_mb."""
    from types import SimpleNamespace

    import pandas as pd

    from tune_cifar.search.results import results_table
    from tune_cifar.search.space import load_space

    space = load_space(space_file(tmp_path, data_root, {"scheduler": {"name": "fifo", "max_epochs": 2}}))

    def result(trial_id: str, acc: float, peaks=None):  # what Ray's ResultGrid yields, reduced
        df = pd.DataFrame({"training_iteration": [1, 2], "accuracy/val": [acc / 2, acc], "time_total_s": [1.0, 2.0],
                           **({"memory/cuda_peak_mb": peaks} if peaks else {})})
        return SimpleNamespace(metrics_dataframe=df, metrics={"trial_id": trial_id}, error=None,
                               path=str(tmp_path / f"trial_{trial_id}"), config=dict(STRONG))

    gpu = results_table(space, [result("a", 0.4, [100.0, 130.56]), result("b", 0.6, [90.0, 95.0])])
    assert list(gpu["trial_id"]) == ["b", "a"] and list(gpu["peak_gpu_mb"]) == [95.0, 130.6]
    assert list(gpu.columns).index("peak_gpu_mb") == list(gpu.columns).index("time_s") + 1
    assert "peak_gpu_mb" not in results_table(space, [result("c", 0.5)]).columns  # CPU trials
