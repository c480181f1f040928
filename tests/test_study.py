"""The search's Optuna study: states and values it is told, the default study, warm starts (issue 12 items 1
and 4; the importance test itself: test_importance.py); the metric-mode and scoring-key guard rails (item 2).
A real ASHA search's study against its results.csv, and its importance line: test_search.py (one search)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from conftest import write_space

STRONG = {"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}
WEAK = {"optimizer.optimizer": "sgd", "optimizer.lr": 1e-5}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_study")
    write_cifar10(root, n_train=600, n_test=100, seed=0)
    return root


def load(tmp_path, data_root, search: dict, name="tiny.yaml", points=None, searcher="tpe"):
    from tune_cifar.search.space import load_space

    return load_space(write_space(tmp_path, data_root, search, points, searcher=searcher, name=name))


def study_of(url: str, name: str = "tiny"):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def report(searcher, trial_id: str, epoch: int, value: float, metric: str = "accuracy/val") -> None:
    searcher.on_trial_result(trial_id, {metric: value, "training_iteration": epoch})


# --------------------------------------------------------------------------- the searcher, driven directly


def test_study_is_told_what_the_search_ranks(tmp_path, data_root):
    """Completed: its best epoch (ties: the later); stopped early: PRUNED with every epoch; NaN, error,
    never reported: FAIL. The default study is the run folder's optuna.db."""
    from tune_cifar.search.study import make_searcher

    space = load(tmp_path, data_root, {"scheduler": {"name": "asha", "max_epochs": 3}})
    run_dir = tmp_path / "run"
    searcher = make_searcher(space, run_dir, "run-1")
    for t in ("done", "tied", "pruned", "nan", "error", "never"):
        assert searcher.suggest(t)
    for epoch, value in ((1, 0.5), (2, 0.7)):
        report(searcher, "done", epoch, value)
    searcher.on_trial_complete("done", {"accuracy/val": 0.6, "training_iteration": 3})  # last epoch: no result call
    for epoch, value in ((1, 0.4), (2, 0.6)):
        report(searcher, "tied", epoch, value)
    searcher.on_trial_complete("tied", {"accuracy/val": 0.6, "training_iteration": 3})
    report(searcher, "pruned", 1, 0.3)
    searcher.on_trial_complete("pruned", {"accuracy/val": 0.35, "training_iteration": 2})  # ASHA stopped it
    report(searcher, "nan", 1, 0.2)
    searcher.on_trial_complete("nan", {"accuracy/val": math.nan, "training_iteration": 2,
                                       "stop_reason": "loss/train became nan at epoch 2"})
    report(searcher, "error", 1, 0.25)
    searcher.on_trial_complete("error", error=True)
    searcher.on_trial_complete("never")  # a pending trial removed at the end (time budget)

    study = study_of(f"sqlite:///{run_dir / 'optuna.db'}")
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert {k: t.state.name for k, t in trials.items()} == {
        "done": "COMPLETE", "tied": "COMPLETE", "pruned": "PRUNED", "nan": "FAIL", "error": "FAIL", "never": "FAIL"}
    assert trials["done"].value == 0.7 and trials["done"].user_attrs["best_epoch"] == 2
    assert trials["done"].intermediate_values == {1: 0.5, 2: 0.7, 3: 0.6}
    assert trials["tied"].value == 0.6 and trials["tied"].user_attrs["best_epoch"] == 3
    assert trials["pruned"].intermediate_values == {1: 0.3, 2: 0.35} and trials["pruned"].value == 0.35
    assert trials["nan"].intermediate_values == {1: 0.2} and trials["nan"].value is None
    assert {t.user_attrs["run"] for t in study.trials} == {"run-1"}
    assert study.direction.name == "MAXIMIZE"


def test_a_loss_is_minimised_by_the_study_too(tmp_path, data_root):
    from tune_cifar.search.study import make_searcher

    space = load(tmp_path, data_root, {"metric": "loss/val", "scheduler": {"name": "fifo", "max_epochs": 2}})
    assert space.search.mode == "min"
    searcher = make_searcher(space, tmp_path, "r")
    searcher.suggest("a")
    report(searcher, "a", 1, 0.9, "loss/val")
    searcher.on_trial_complete("a", {"loss/val": 1.2, "training_iteration": 2})
    (trial,) = study_of(f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert trial.state.name == "COMPLETE" and trial.value == 0.9 and trial.user_attrs["best_epoch"] == 1


def test_an_interrupted_trial_is_closed_then_continued_on_resume(tmp_path, data_root):
    """end_run leaves nothing RUNNING; the searcher Tune restores (a pickle, as Tune saves it)
    continues the trial in a new Optuna trial with the same parameters and every epoch."""
    from tune_cifar.search.study import end_run, make_searcher

    space = load(tmp_path, data_root, {"scheduler": {"name": "asha", "max_epochs": 3}})
    searcher = make_searcher(space, tmp_path, "run-1")
    other = make_searcher(space, tmp_path, "run-2")  # another run sharing the study: left alone
    searcher.suggest("a")
    other.suggest("b")
    report(searcher, "a", 1, 0.4)
    saved = pickle.dumps(searcher)  # Tune's snapshot of the searcher
    report(searcher, "a", 2, 0.5)  # after the snapshot
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert end_run(url, "tiny", "run-1") == 1
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in study_of(url).trials}
    assert states == {"a": "FAIL", "b": "RUNNING"}

    resumed = pickle.loads(saved)
    report(resumed, "a", 2, 0.5)  # the trial continues from its checkpoint
    resumed.on_trial_complete("a", {"accuracy/val": 0.45, "training_iteration": 3})
    first, _, again = study_of(url).trials
    assert first.state.name == "FAIL" and first.user_attrs["ended"] == "interrupted"
    assert again.state.name == "COMPLETE" and again.value == 0.5 and again.params == first.params
    assert again.intermediate_values == {1: 0.4, 2: 0.5, 3: 0.45} and again.user_attrs["continues_trial"] == 0
    assert end_run(url, "tiny", "run-1") == 0


def test_trials_tune_ended_without_telling_the_searcher_are_closed_as_results_csv_says(tmp_path, data_root):
    """At the time budget Tune ends running trials without on_trial_complete: end_run tells them as
    results.csv has them (stopped early: PRUNED; completed: COMPLETE, best epoch), the rest FAIL."""
    from tune_cifar.search.study import end_run, make_searcher

    space = load(tmp_path, data_root, {"scheduler": {"name": "asha", "max_epochs": 2}})
    searcher = make_searcher(space, tmp_path, "run-1")
    for t in ("stopped", "done", "unfinished"):
        searcher.suggest(t)
        report(searcher, t, 1, 0.4)
    report(searcher, "done", 2, 0.3)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert end_run(url, "tiny", "run-1", {"stopped": "stopped early", "done": "completed",
                                          "unfinished": "unfinished"}, "max") == 3
    trials = {t.user_attrs["ray_trial_id"]: t for t in study_of(url).trials}
    assert trials["stopped"].state.name == "PRUNED" and trials["stopped"].value == 0.4
    assert trials["done"].state.name == "COMPLETE" and trials["done"].value == 0.4
    assert trials["done"].user_attrs["best_epoch"] == 1
    assert trials["unfinished"].state.name == "FAIL" and trials["unfinished"].user_attrs["ended"] == "interrupted"


def test_a_warm_start_does_not_redraw_the_earlier_points(tmp_path, data_root):
    """A second search on the same study with the same random seed samples other values."""
    from tune_cifar.search.study import make_searcher

    db = tmp_path / "shared.db"
    space = load(tmp_path, data_root, {"optuna_storage": f"sqlite:///{db}", "scheduler": {"name": "fifo",
                                                                                          "max_epochs": 1}},
                 points=[STRONG], searcher="random")
    space.search.searcher.points_to_evaluate = []

    def lrs(space, run: str) -> list[float]:
        searcher = make_searcher(space, tmp_path / run, run)
        out = []
        for i in range(3):
            out.append(searcher.suggest(f"{run}{i}")["optimizer.lr"])
            searcher.on_trial_complete(f"{run}{i}", {"accuracy/val": 0.1, "training_iteration": 1})
        return out

    first, second = lrs(space, "r1"), lrs(space, "r2")
    assert not set(first) & set(second)
    assert len(study_of(f"sqlite:///{db}").trials) == 6 and not (tmp_path / "r1" / "optuna.db").exists()
    fresh = load(tmp_path, data_root, {"optuna_storage": f"sqlite:///{tmp_path / 'new.db'}",
                                       "scheduler": {"name": "fifo", "max_epochs": 1}},
                 name="fresh.yaml", points=[STRONG], searcher="random")
    fresh.search.searcher.points_to_evaluate = []
    assert lrs(fresh, "r3") == first  # a new study: the seed itself, as before


# --------------------------------------------------------------------------- a real ASHA search


# --------------------------------------------------------------------------- guard rails (item 2)


def test_a_loss_metric_without_a_mode_is_minimised(tmp_path, data_root):
    from tune_cifar.config import load_config

    assert load(tmp_path, data_root, {"metric": "loss/val"}).search.mode == "min"
    assert load(tmp_path, data_root, {}).search.mode == "max"  # accuracy/val, the default
    assert load(tmp_path, data_root, {"metric": "loss/val", "mode": "max"}).search.mode == "max"  # explicit wins
    # tune_cifar.train: best.ckpt follows task.monitor_mode, now resolved from the metric's name
    assert load_config(["task.monitor=loss/val"]).task.monitor_mode == "min"
    assert load_config([]).task.monitor_mode == "max"
    assert load_config(["task.monitor=loss/val", "task.monitor_mode=max"]).task.monitor_mode == "max"
    # a space file's base monitor (no search.metric) is minimised too; its mode goes with it only
    import yaml

    from tune_cifar.search.space import load_space

    path = write_space(tmp_path, data_root, {}, name="base_loss.yaml")
    doc = yaml.safe_load(path.read_text())
    doc["base"].append("task.monitor=loss/val")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_space(path).search.mode == "min"
    assert load_space(path, ["search.metric=accuracy/val"]).search.mode == "max"


@pytest.mark.parametrize("key, spec, extra", [
    ("data.val_fraction", {"choice": [0.1, 0.2]}, []),
    ("data.val_subset", {"choice": [100, 200]}, []),
    ("data.test_subset", {"choice": [50, 60]}, []),
    ("run.seed", {"choice": [1, 2]}, []),
    ("trainer.limit_val_batches", {"choice": [1, 2]}, []),
    ("trainer.limit_test_batches", {"uniform": [0.5, 1.0]}, []),
    ("data.inference_batch_size", {"choice": [64, 128]}, ["trainer.limit_val_batches=2"]),
])
def test_keys_that_change_the_scored_images_are_refused(tmp_path, data_root, capsys, key, spec, extra):
    import yaml

    from tune_cifar.search import main

    path = write_space(tmp_path, data_root, {})
    doc = yaml.safe_load(path.read_text())
    doc["params"][key] = spec
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SystemExit) as exit_:
        main([str(path), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"tune_cifar.search: error: {path}: params.{key}: {key} "
                                                         f"changes the ")
    assert err.endswith("and trials must be compared on the same images; set it in base (one value for the "
                        "whole search)")
    assert not (tmp_path / "outputs").exists()


def test_train_subset_and_batch_size_may_be_searched(tmp_path, data_root):
    """data.train_subset leaves the validation images alone (their own random stream)."""
    import yaml

    from tune_cifar.search.space import load_space

    path = write_space(tmp_path, data_root, {})
    doc = yaml.safe_load(path.read_text())
    doc["params"]["data.train_subset"] = {"choice": [100, 200]}
    doc["params"]["data.inference_batch_size"] = {"choice": [64, 128]}  # no batch limit: every val image
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert {p.key for p in load_space(path).params} >= {"data.train_subset", "data.inference_batch_size"}


@pytest.mark.parametrize("change", ["bounds", "missing"])
def test_a_study_of_another_space_is_refused_before_anything_is_written(tmp_path, data_root, change):
    """search.optuna_storage + search.optuna_study naming a study whose parameters were drawn from other
    distributions (or a parameter this space lacks): one line naming the parameter, exit 2, no run folder,
    nothing added to the study (before: Optuna's traceback, a RUNNING trial, a half-made run folder)."""
    import os
    import subprocess
    import sys

    import optuna
    from optuna.distributions import FloatDistribution

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name="old", storage=url, direction="maximize")
    name, dist = (("optimizer.lr", FloatDistribution(1e-4, 0.1, log=True)) if change == "bounds"
                  else ("optimizer.weight_decay", FloatDistribution(0.0, 0.1)))
    old.add_trial(optuna.trial.create_trial(params={name: 0.01}, distributions={name: dist}, value=0.5))
    space = write_space(tmp_path, data_root, {"optuna_storage": url, "optuna_study": "old",
                                              "scheduler": {"name": "fifo", "max_epochs": 1}})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(space)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("tune_cifar.search: error:")]
    assert "Traceback" not in proc.stderr and f"samples {name}" in line and "study 'old'" in line, line
    if change == "bounds":
        assert "loguniform [0.0001, 0.1], this space from loguniform [1e-05, 0.05]" in line, line
    assert not (tmp_path / "outputs").exists(), "a refused search made a run folder"
    trials = optuna.load_study(study_name="old", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"]
