"""A search of several objectives (issue 20): the Pareto front exported and non-dominated against
results.csv, predict on each member and on the picked best/, search.pick satisfied and unsatisfiable,
bad input refused before any trial."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tune_cifar.errors import UserError
from tune_cifar.search.objectives import Objective, dominates

# Three fixed trials make the front hold at least two by construction: STRONG is the most accurate,
# TINY has the fewest parameters; SMALL_WEAK has STRONG's parameters and its accuracy is lower.
STRONG = {"model.model_name": "small_cnn", "optimizer.optimizer": "adamw", "optimizer.lr": 0.01}
TINY = {"model.model_name": "tiny_cnn", "optimizer.optimizer": "sgd", "optimizer.lr": 1e-5}
SMALL_WEAK = {"model.model_name": "small_cnn", "optimizer.optimizer": "sgd", "optimizer.lr": 1e-5}
OBJECTIVES = [Objective("accuracy/val", "max"), Objective("model/latency_ms", "min"), Objective("model/params", "min")]
PICK = "max accuracy/val where model/params <= 1000"  # only tiny_cnn (510 parameters) satisfies it
NEVER = "max accuracy/val where model/params < 100"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_pareto")
    write_cifar10(root, n_train=400, n_test=60, seed=0)
    return root


def space_doc(data_root: Path, out: Path, **search) -> dict:
    return {
        "base": ["data=cifar10", f"data.dataset_path={data_root}", "data.download=false", "data.val_fraction=0.25",
                 "data.train_batch_size=32", "data.inference_batch_size=128", "model=small_cnn",
                 "model.model_name=tiny_cnn", "trainer.log_every_n_steps=1"],
        "params": {"model.model_name": {"choice": ["tiny_cnn", "small_cnn"]},
                   "optimizer.optimizer": {"choice": ["sgd", "adamw"]},
                   "optimizer.lr": {"loguniform": [1e-5, 0.05]}},
        "search": {"metric": [o.name for o in OBJECTIVES], "mode": [o.mode for o in OBJECTIVES], "pick": PICK,
                   # one trial at a time: one Ray worker, reused, imports torch and Lightning once
                   "num_samples": 3, "max_concurrent_trials": 1, "resources": {"cpu": 1},
                   "scheduler": {"name": "asha", "max_epochs": 1},
                   "searcher": {"name": "tpe", "seed": 0, "points_to_evaluate": [STRONG, TINY, SMALL_WEAK]},
                   "experiment": "pareto", "storage_path": str(out), **search},
    }


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def numeric(row: dict) -> dict:
    return {o.name: float(row[o.name]) for o in OBJECTIVES}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, data_root):
    """One real search in a subprocess, as a user runs it."""
    tmp = tmp_path_factory.mktemp("pareto")
    out = tmp / "outputs"
    space = write(tmp / "pareto.yaml", space_doc(data_root, out))
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(space)], cwd=tmp, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = next((out / "pareto").glob("*/results.csv")).parent
    return {"tmp": tmp, "out": out, "space": space, "proc": proc, "run_dir": run_dir}


def test_front_is_exported_and_non_dominated_against_results_csv(searched):
    run_dir, out = searched["run_dir"], searched["out"]
    table = rows(run_dir / "results.csv")
    assert len(table) == 3 and all(o.name in table[0] for o in OBJECTIVES) and "model/flops" in table[0]
    scored = [numeric(r) for r in table if r["status"] in ("completed", "stopped early")]
    front = rows(run_dir / "pareto.csv")
    assert len(front) >= 2
    members = [numeric(r) for r in front]
    for m in members:  # nothing in results.csv beats a member
        assert not any(dominates(r, m, OBJECTIVES) for r in scored)
    ids = {r["trial_id"] for r in front}
    for r in table:  # every other trial is beaten by one
        if r["trial_id"] not in ids and r["status"] in ("completed", "stopped early"):
            assert any(dominates(m, numeric(r), OBJECTIVES) for m in members)
    # the most accurate trial and the smallest one are members, each a normal export folder
    assert max(scored, key=lambda r: r["accuracy/val"]) in members
    assert min(scored, key=lambda r: r["model/params"]) in members
    for n, r in enumerate(front, 1):
        folder = out / "pareto" / "pareto" / f"{n}_{r['trial_id']}"
        assert r["folder"] == f"pareto/{n}_{r['trial_id']}" and (folder / "export.json").is_file()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["trial_id"] == r["trial_id"] and metrics["model/params"] == float(r["model/params"])
        assert metrics["model/latency_ms_export"] > 0 and metrics["model/latency_ms"] > 0  # both figures
    assert (run_dir / "pareto_front.png").stat().st_size > 5_000
    printed = searched["proc"].stdout
    assert f"Pareto front ({len(front)} trials; max accuracy/val, min model/latency_ms, min model/params)" in printed
    assert "ASHA stopped trials on the first objective, accuracy/val, alone" in printed


def test_predict_takes_each_member_and_best_is_the_picked_one(searched):
    out, run_dir = searched["out"], searched["run_dir"]
    front = rows(run_dir / "pareto.csv")
    picked = [r for r in front if r["picked"] == "True"]
    small = [r for r in front if float(r["model/params"]) <= 1000]
    assert len(picked) == 1 and picked[0] == max(small, key=lambda r: float(r["accuracy/val"]))
    best = json.loads((out / "pareto" / "best" / "metrics.json").read_text())
    assert best["trial_id"] == picked[0]["trial_id"] and (out / "best").resolve() == (out / "pareto" / "best").resolve()
    assert f"best trial by '{PICK}': {picked[0]['trial_id']}" in searched["proc"].stdout
    # predict's command line for each member and for --best, in one process (torch is imported once)
    runs = [["--export", str(out / "pareto" / r["folder"]), "--out", str(searched["tmp"] / f"predict_{r['trial_id']}")]
            for r in front] + [["--best", "--output-dir", str(out), "--out", str(searched["tmp"] / "predict_best")]]
    script = "from tune_cifar.predict.cli import main\nfor argv in %r:\n    main(argv)\n" % runs  # exits 2 on an error
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in front:
        scored = json.loads((searched["tmp"] / f"predict_{r['trial_id']}" / "metrics.json").read_text())
        recorded = json.loads((out / "pareto" / r["folder"] / "metrics.json").read_text())
        assert scored["accuracy"] == pytest.approx(recorded["accuracy/test"])
    assert json.loads((searched["tmp"] / "predict_best" / "metrics.json").read_text())["accuracy"] == \
        pytest.approx(best["accuracy/test"])


def test_an_unsatisfiable_pick_exports_the_front_and_leaves_best_as_it_was(searched, data_root, capsys):
    """The same run finished again (its Ray results read back) with a rule no member meets."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    from tune_cifar.config import config_from_dict
    from tune_cifar.data import load_data
    from tune_cifar.search import storage
    from tune_cifar.search.results import finish, trial_statuses
    from tune_cifar.search.space import load_space

    out = searched["out"]
    before = os.readlink(out / "best"), (out / "pareto" / "best" / "metrics.json").read_text()
    space = load_space(str(searched["space"]), [f"search.pick={NEVER}"])
    plan = storage.plan_run(space, resume=True)
    grid = ResultGrid(ExperimentAnalysis(str(plan.paths.ray_dir)))
    cfg = config_from_dict(space.base)
    result = finish(plan, grid, load_data(cfg.data, cfg.task.task), trial_statuses(grid))
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if "search.pick" in ln]
    assert line == [f"search.pick '{NEVER}': no trial on the Pareto front ({len(result['pareto'])}) satisfies "
                    f"it: model/params < 100 (closest: 510)"]
    assert result["best_trial"] is None and len(result["pareto"]) >= 2
    assert all((Path(p) / "export.json").is_file() for p in result["pareto"])
    assert (os.readlink(out / "best"), (out / "pareto" / "best" / "metrics.json").read_text()) == before
    assert not any(r["picked"] == "True" for r in rows(searched["run_dir"] / "pareto.csv"))


# --------------------------------------------------------------------------- bad input, before any trial


@pytest.mark.parametrize("search, says", [
    ({"mode": ["max", "min"]}, "search.metric has 3 names (accuracy/val, model/latency_ms, model/params) but "
                               "search.mode has 2 (max, min); allowed: one mode per metric"),
    ({"metric": ["accuracy/val", "model/latency"], "mode": None}, "search.metric='model/latency' is not allowed; "
                                                                 "allowed: accuracy/val, loss/val, model/flops"),
    ({"metric": ["accuracy/val", "accuracy/val"], "mode": None}, "search.metric names accuracy/val twice"),
    ({"metric": ["model/params", "accuracy/val"], "mode": None}, "search.metric starts with model/params, a model "
                                                                "cost that is the same every epoch"),
    ({"pick": "max accuracy/val where latency <= 5"}, "search.pick='max accuracy/val where latency <= 5' names "
                                                      "latency, which the search does not record"),
    ({"pick": "accuracy/val where model/params <= 5"}, "is malformed; allowed: 'max|min METRIC [where METRIC OP"),
    ({"pick": "max accuracy/val where model/params = 5"}, "condition 'model/params = 5' is malformed"),
    ({"scheduler": {"name": "pbt", "max_epochs": 2}, "max_concurrent_trials": None,
      "searcher": {"name": "random"}}, "search.metric lists 3 objectives, but search.scheduler.name=pbt searches "
                                       "with its own algorithm"),
    ({"metric": "accuracy/val", "mode": None},
     "search.pick='max accuracy/val where model/params <= 1000' chooses among the Pareto front of several "
     "objectives, but search.metric is one"),
])
def test_bad_objectives_are_refused_before_any_trial(tmp_path, data_root, search, says):
    from tune_cifar.search.space import load_space

    doc = space_doc(data_root, tmp_path / "outputs")
    doc["search"].update(search)
    if doc["search"]["scheduler"]["name"] == "pbt":
        doc["params"] = {"optimizer.lr": {"loguniform": [1e-5, 0.05]}}
    with pytest.raises(UserError) as err:
        load_space(str(write(tmp_path / "bad.yaml", doc)))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_bad_objectives_on_the_command_line_exit_2_with_nothing_made(tmp_path, data_root):
    out = tmp_path / "outputs"
    space = write(tmp_path / "bad.yaml", space_doc(data_root, out))
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(space), "search.mode=[max,min]"],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err[-3000:]
    assert "search.metric has 3 names" in err and "search.mode has 2 (max, min)" in err
    assert not out.exists()


# --------------------------------------------------------------------------- the Optuna study, driven directly


def test_the_study_of_several_objectives_is_told_each_trials_best_epoch(tmp_path, data_root):
    """No intermediate values with several objectives: each epoch's values go to epoch_values; completed:
    COMPLETE with the values of its best epoch by the first objective; stopped early: PRUNED; NaN: FAIL;
    end_run closes a trial Tune ended without telling the searcher; importance sees one objective at a time."""
    import optuna

    from tune_cifar.search.importance import objective_trials
    from tune_cifar.search.space import load_space
    from tune_cifar.search.study import end_run, make_searcher

    doc = space_doc(data_root, tmp_path / "outputs", metric=["accuracy/val", "model/latency_ms"], mode=None,
                    scheduler={"name": "asha", "max_epochs": 3})
    doc["search"]["searcher"]["points_to_evaluate"] = []
    space = load_space(str(write(tmp_path / "two.yaml", doc)))
    searcher = make_searcher(space, tmp_path, "run-1")
    for t in ("done", "pruned", "nan", "left"):
        assert searcher.suggest(t)

    def epoch(trial_id, n, acc, ms):
        searcher.on_trial_result(trial_id, {"accuracy/val": acc, "model/latency_ms": ms, "training_iteration": n})

    epoch("done", 1, 0.5, 2.0)
    epoch("done", 2, 0.7, 2.1)
    searcher.on_trial_complete("done", {"accuracy/val": 0.6, "model/latency_ms": 1.9, "training_iteration": 3})
    epoch("pruned", 1, 0.3, 1.0)
    searcher.on_trial_complete("pruned", {"accuracy/val": 0.35, "model/latency_ms": 1.1, "training_iteration": 2})
    searcher.on_trial_complete("nan", {"accuracy/val": float("nan"), "model/latency_ms": 1.0, "training_iteration": 1,
                                       "stop_reason": "loss/train became nan at epoch 1"})
    for n, acc in ((1, 0.2), (2, 0.4), (3, 0.3)):
        epoch("left", n, acc, 0.5)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert end_run(url, "pareto", "run-1", {"left": "completed"}, "max") == 1

    study = optuna.load_study(study_name="pareto", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert {k: t.state.name for k, t in trials.items()} == {
        "done": "COMPLETE", "pruned": "PRUNED", "nan": "FAIL", "left": "COMPLETE"}
    assert trials["done"].values == [0.7, 2.1] and trials["done"].user_attrs["best_epoch"] == 2
    assert trials["done"].user_attrs["epoch_values"] == {"1": [0.5, 2.0], "2": [0.7, 2.1], "3": [0.6, 1.9]}
    assert trials["done"].intermediate_values == {}  # Optuna's are single-objective
    assert trials["pruned"].values is None and trials["pruned"].user_attrs["epoch_values"] == {
        "1": [0.3, 1.0], "2": [0.35, 1.1]}
    assert trials["left"].values == [0.4, 0.5] and trials["left"].user_attrs["best_epoch"] == 2

    def seen(k):
        return {t.state.name + str(t.value or t.intermediate_values) for t in objective_trials(study.trials, k)}

    # the first objective as with one; any other by its value alone, a stopped trial at its best epoch
    assert seen(0) == {"COMPLETE0.7", "COMPLETE0.4", "PRUNED{1: 0.3, 2: 0.35}"}
    assert seen(1) == {"COMPLETE2.1", "COMPLETE0.5", "COMPLETE1.1"}


def test_debug_measures_the_model_costs_of_its_trial(tmp_path, data_root, capsys):
    from tune_cifar.search.debug import debug
    from tune_cifar.search.space import load_space

    space = load_space(str(write(tmp_path / "pareto.yaml", space_doc(data_root, tmp_path / "outputs"))))
    out = debug(space, json.dumps(TINY))
    assert out["val"]["model/params"] == 510 and out["val"]["model/flops"] > 0 and out["val"]["model/latency_ms"] > 0
    assert "model/latency_ms=" in capsys.readouterr().out


def test_nsga2_is_a_registered_searcher_of_several_objectives(tmp_path, data_root):
    """searcher.name: nsga2 drives the study with Optuna's NSGA-II (population searcher.n_startup_trials):
    the first generation is drawn, then trials are bred from the completed ones."""
    import optuna

    from tune_cifar.search.space import load_space
    from tune_cifar.search.study import make_searcher

    doc = space_doc(data_root, tmp_path / "outputs", scheduler={"name": "fifo", "max_epochs": 1},
                    searcher={"name": "nsga2", "seed": 0, "n_startup_trials": 2})
    searcher = make_searcher(load_space(str(write(tmp_path / "nsga2.yaml", doc))), tmp_path, "run-1")
    assert isinstance(searcher._ot_study.sampler, optuna.samplers.NSGAIISampler)
    for i in range(5):
        config = searcher.suggest(f"t{i}")
        assert config["model.model_name"] in ("tiny_cnn", "small_cnn")
        searcher.on_trial_complete(f"t{i}", {"accuracy/val": 0.1 * i, "model/latency_ms": 1.0 + i,
                                             "model/params": 510.0 * (i + 1), "training_iteration": 1})
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5 and len(study.best_trials) == 5
    assert {t.system_attrs.get("NSGAIISampler:generation") for t in study.trials} >= {0, 1}  # bred after the first
