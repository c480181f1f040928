"""Re-evaluation before export (search.final, issue 18): the best configurations trained again with new training
seeds, as a second Tune experiment in the run folder; the export is the best mean's configuration.

By default one search on the user's path serves the Ray assertions: run to its end in a subprocess, one trial
at a time (each trial process costs seconds of CPU: one per experiment, reused); then ``predict --best``.
Marked slow (~70 CPU-s: three commands): the same search stopped by SIGTERM while its first re-evaluation run
is held in epoch 2 (a test fault on the first training seed, each run's first attempt only), resumed and
SIGKILLed (its whole session) while the second run is held there, then resumed to the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import write_space
from tune_cifar.faults import TEST_FAULTS_ENV

TOP_K, SEEDS, EPOCHS, TRIALS, BUDGET = 2, 2, 2, 3, 16  # TRIALS: num_samples, a cap within the budget
FIRST_SEED = 43  # run.seed 42 (the config's default) + 1


# --------------------------------------------------------------------------- the pick (no Ray)


def test_the_export_is_the_best_mean_with_its_best_runs_weights():
    from tune_cifar.search.final import choose, score

    # the search ranks a (lucky 0.90) first; trained again it averages below b
    groups = [("a", [("a", 0.90), ("a1", 0.70), ("a2", 0.72)]),
              ("b", [("b", 0.85), ("b1", 0.84), ("b2", 0.86)])]
    assert choose(groups, "max") == (1, 2)  # b's mean 0.85; its weights: b2, its best run
    assert score([0.85, 0.84, 0.86]) == pytest.approx((0.85, 0.01 / math.sqrt(3), 3))
    assert choose(groups, "min") == (0, 1)  # a loss: the lowest mean, its lowest run
    # equal means: the search's order; equal values within one: the original trial
    assert choose([("a", [("a", 0.8), ("a1", 0.8)]), ("b", [("b", 0.8), ("b1", 0.8)])], "max") == (0, 0)
    # a configuration whose runs all failed is the original alone: n = 1, no standard error
    mean, se, n = score([0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(se)


def test_settings_say_when_re_evaluation_applies(tmp_path, cifar10_root, capsys):
    from tune_cifar.search import main
    from tune_cifar.search.budget import final_off, final_sizes, for_trials, reevaluates, reserved, text
    from tune_cifar.search.space import load_space

    path = write_space(tmp_path, cifar10_root, {"scheduler": {"max_epochs": 4}})
    space = load_space(path, ["search.final.top_k=3", "search.final.seeds=2"])
    assert reevaluates(space.search) and final_sizes(space.search) == (3, 2) and reserved(space.search) == 0
    # with a trial-epoch budget: at most a quarter of it, in whole runs; fewer seeds first, then configurations
    sized = {b: load_space(path, ["search.final.top_k=3", "search.final.seeds=2", f"search.budget.trial_epochs={b}"])
             for b in (96, 64, 40, 20, 8)}
    assert {b: final_sizes(sp.search) for b, sp in sized.items()} == {96: (3, 2), 64: (3, 1), 40: (2, 1),
                                                                        20: (1, 1), 8: (0, 0)}
    assert reserved(sized[64].search) == 12 and for_trials(sized[64].search) == 52
    assert text(sized[64].search, 50) == "budget: 50/52 trial-epochs (+12 kept for re-evaluation)"
    off = load_space(write_space(tmp_path, cifar10_root, {}), ["search.budget.trial_epochs=64"])
    assert not reevaluates(off.search) and reserved(off.search) == 0 and for_trials(off.search) == 64  # top_k 0
    # several objectives, PBT: off by default, without a word; asked for in so many words: refused
    pareto = load_space(write_space(tmp_path, cifar10_root, {"metric": ["accuracy/val", "model/params"],
                                                             "final": {"top_k": 0}}))
    assert "Pareto front" in final_off(pareto.search)
    from tune_cifar.search.registry import SCHEDULERS

    assert not SCHEDULERS["pbt"].reevaluates and SCHEDULERS["asha"].reevaluates  # PBT: a population
    for bad, why in [("search.final.top_k=-1", "search.final.top_k=-1 is not allowed; allowed: an integer >= 0"),
                     ("search.final.seeds=0", "search.final.seeds=0 is not allowed; allowed: an integer >= 1"),
                     ("search.final.budget_share=1", "search.final.budget_share=1.0 is not allowed; allowed: a "
                                                     "fraction in (0, 1)"),
                     ("search.final.top_k=2", "search.final.top_k=2 is not allowed here: several objectives")]:
        path = write_space(tmp_path, cifar10_root, {"metric": ["accuracy/val", "model/params"]}
                           if "here" in why else {})
        with pytest.raises(SystemExit) as exit_:
            main([str(path), bad])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and why in err, err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("key", ["run.seed", "run.train_seed"])
def test_seeds_are_not_searched(tmp_path, cifar10_root, capsys, key):
    """run.seed draws the validation split; run.train_seed is what re-evaluation varies: neither is a parameter."""
    from tune_cifar.search import main

    path = write_space(tmp_path, cifar10_root, {})
    doc = yaml.safe_load(path.read_text())
    doc["params"][key] = {"choice": [1, 2]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SystemExit) as exit_:
        main([str(path)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and f"params.{key}: {key} " in err, err
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------- one search, killed and resumed


def _rows(progress: Path) -> int:
    try:
        return len(pd.read_csv(progress))
    except (pd.errors.EmptyDataError, pd.errors.ParserError, FileNotFoundError):
        return 0


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL to every process of the session the search started (its Ray processes too)."""
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    for pid in (int(p) for p in out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _snapshot_after(folder: Path, after: float) -> bool:
    return max((f.stat().st_mtime for f in folder.glob("experiment_state-*.json")), default=0) > after + 0.1


def _start(path: Path, tmp: Path, env: dict, name: str, *args: str) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tune_cifar.search", str(path), *args], cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _until(cond, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the search ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not {what} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def _space(tmp: Path, data_root: Path) -> Path:
    return write_space(tmp, data_root, {
        "num_samples": TRIALS, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "scheduler": {"name": "asha", "max_epochs": EPOCHS, "grace_period": 1, "reduction_factor": 2},
        "searcher": {"name": "random", "seed": 0},
        # a budget: re-evaluation is held back out of it (half here, so that its 2 x 2 runs of 2 epochs fit)
        "budget": {"trial_epochs": BUDGET}, "final": {"top_k": TOP_K, "seeds": SEEDS, "budget_share": 0.5}},
        # learning rates that learn in 2 epochs on the tiny data (sampled ones may not, and tie at chance)
        points=[{"optimizer.optimizer": "adamw", "optimizer.lr": lr} for lr in (0.02, 0.01, 0.005)], searcher="random")


def _predict(tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_cifar.predict", "--best", "--output-dir", str(tmp / "outputs")],
                          cwd=tmp, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cifar10_root):
    """The search run to its end as a user runs it (one command: its trials, then their re-evaluation), one
    trial at a time (one trial process per experiment, reused); then ``predict --best``."""
    tmp = tmp_path_factory.mktemp("reeval_plain")
    path = _space(tmp, cifar10_root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_CIFAR_TEST"))}
    done = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(path)], cwd=tmp, capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = tmp / "outputs" / "tiny"
    (run,) = [d.parent for d in exp.glob("*/reeval")]
    return SimpleNamespace(tmp=tmp, run=run, exp=exp, path=path, out=done, predicted=_predict(tmp),
                           results=pd.read_csv(run / "results.csv"), runs=pd.read_csv(run / "reeval.csv"))


@pytest.fixture(scope="module")
def search(tmp_path_factory, cifar10_root):
    """The search, SIGTERM while its first re-evaluation run hangs in epoch 2 (graceful: exit 130);
    ``--resume``: that run goes on from its epoch-1 checkpoint and ends, SIGKILL to the session while the second
    run hangs in epoch 2; ``--resume`` to the end. The runs go seed by seed (final.points): the fault on the
    first seed holds each of the first TOP_K runs once, on its first attempt."""
    tmp = tmp_path_factory.mktemp("reeval")
    path = _space(tmp, cifar10_root)
    faults = [{"when": {"run.train_seed": FIRST_SEED}, "epoch": 2, "fault": "sleep", "seconds": 600, "times": 1,
               "state_dir": str(tmp / "faults")}]
    env = {**os.environ, TEST_FAULTS_ENV: json.dumps(faults), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    exp = tmp / "outputs" / "tiny"

    def rows() -> list[int]:  # each begun re-evaluation run's epochs reported
        return sorted(n for n in (_rows(p) for p in exp.glob("*/reeval/trial_*/progress.csv")) if n)

    first = _start(path, tmp, env, "first")
    try:  # the first run in epoch 2 (one at a time: the others wait)
        _until(lambda: rows() == [1], first, tmp / "first.log", "the first run hangs")
        first.send_signal(signal.SIGTERM)  # a batch scheduler's SIGTERM: Tune saves its state, the search stops
        code = first.wait(150)
    finally:
        _kill_session(first)
    (run,) = [d.parent for d in exp.glob("*/reeval")]
    main_trials = {p.parent.name: p.read_text() for p in run.glob("trial_*/progress.csv")}
    stopped = SimpleNamespace(code=code, log=(tmp / "first.log").read_text(), exported=(exp / "best").exists(),
                              results=(run / "results.csv").is_file(), plan=(run / "reeval.json").is_file())

    second = _start(path, tmp, env, "second", "--resume")
    try:  # the first run finishes, the second in epoch 2; Tune's snapshot holds that
        _until(lambda: rows() == [1, 2], second, tmp / "second.log", "the second run hangs")
        seen = time.time()
        _until(lambda: _snapshot_after(run / "reeval", seen), second, tmp / "second.log", "a snapshot")
    finally:
        _kill_session(second)
        second.wait(30)
    killed = SimpleNamespace(log=(tmp / "second.log").read_text(), exported=(exp / "best").exists(), rows=rows())

    resumed = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(path), "--resume"], cwd=tmp,
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return SimpleNamespace(tmp=tmp, run=run, exp=exp, path=path, stopped=stopped, killed=killed,
                           main_trials=main_trials, resumed=resumed,
                           results=pd.read_csv(run / "results.csv"), runs=pd.read_csv(run / "reeval.csv"))


@pytest.mark.slow  # three commands and SIGTERM/SIGKILL: ~70 CPU-s; the plain search below is the default's
def test_a_search_stopped_or_killed_during_re_evaluation_resumes_it_without_rerunning_its_trials(search):
    import optuna

    run = search.run
    # SIGTERM in the re-evaluation: exit 130, the line says where and how to go on, nothing exported
    assert search.stopped.code == 130, search.stopped.log[-3000:]
    assert "search interrupted during the re-evaluation" in search.stopped.log
    assert f"continue it with: python -m tune_cifar.search {search.path} --resume" in search.stopped.log
    assert search.stopped.plan and search.stopped.results and not search.stopped.exported
    # each --resume continued the re-evaluation; killed, nothing exported
    assert "resuming the re-evaluation" in search.killed.log and "resuming the re-evaluation" in search.resumed.stdout
    assert not search.killed.exported and search.killed.rows == [1, 2]
    # the search's trials were not run again: their folders and reports as they were, no new one
    assert {p.parent.name: p.read_text() for p in run.glob("trial_*/progress.csv")} == search.main_trials
    assert len(search.main_trials) == TRIALS == len(search.results)
    # the study holds the search's trials only: re-evaluation runs are not told to the searcher
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'optuna.db'}")
    assert len(study.trials) == TRIALS and "RUNNING" not in {t.state.name for t in study.trials}
    # every re-evaluation run trained each epoch once (the held ones continued from their epoch-1 checkpoint)
    progress = list(run.glob("reeval/trial_*/progress.csv"))
    assert len(progress) == TOP_K * SEEDS
    for p in progress:
        assert list(pd.read_csv(p)["training_iteration"]) == list(range(1, EPOCHS + 1)), p


def test_re_evaluated_configurations_have_their_mean_in_results_csv(searched):
    table, runs = searched.results, searched.runs
    # reeval.csv: each chosen configuration once per new training seed, every run to its full epochs (FIFO)
    assert len(runs) == TOP_K * SEEDS and set(runs["status"]) == {"completed"} and set(runs["epochs"]) == {EPOCHS}
    assert sorted(runs["train_seed"].unique()) == [FIRST_SEED + j for j in range(SEEDS)]
    chosen = table[table["status"].isin(["completed", "stopped early"])].head(TOP_K)["trial_id"].astype(str)
    assert sorted(runs["configuration"].astype(str).unique()) == sorted(chosen)
    assert runs.groupby("configuration").size().eq(SEEDS).all()
    # results.csv: mean, standard error and n over the original trial and its runs, on those rows only
    scored = table[table["reeval_n"].notna()]
    assert sorted(scored["trial_id"].astype(str)) == sorted(chosen) and set(scored["reeval_n"]) == {SEEDS + 1}
    for row in scored.to_dict("records"):
        values = pd.Series([row["accuracy/val"],
                            *runs[runs["configuration"].astype(str) == str(row["trial_id"])]["accuracy/val"]])
        assert row["reeval_mean"] == pytest.approx(values.mean())
        assert row["reeval_se"] == pytest.approx(values.std(ddof=1) / math.sqrt(len(values)))
    assert table["reeval_mean"].isna().sum() == TRIALS - TOP_K
    out = searched.out.stdout
    assert f"re-evaluation: the top {TOP_K} configurations by accuracy/val" in out
    assert f"{TOP_K * SEEDS} of {TOP_K * SEEDS} more trials" in out
    # paid out of the budget: the runs' epochs were held back, and all epochs stay within it (+ a trial's - 1)
    kept = TOP_K * SEEDS * EPOCHS
    assert f"/{BUDGET - kept} trial-epochs (+{kept} kept for re-evaluation)" in out
    assert table["epochs"].sum() + runs["epochs"].sum() <= BUDGET + EPOCHS - 1


def test_the_export_is_the_best_mean_and_predict_shows_it(searched):
    from tune_cifar.export import read_export

    table, runs = searched.results, searched.runs
    scored = table[table["reeval_n"].notna()].set_index(table["trial_id"].astype(str)[table["reeval_n"].notna()])
    # the best mean; of equal means the configuration the search ranked first (the plan's order)
    order = [c["trial_id"] for c in json.loads((searched.run / "reeval.json").read_text())["configurations"]]
    top_mean = scored["reeval_mean"].max()
    best = scored.loc[next(c for c in order if scored.loc[c, "reeval_mean"] == pytest.approx(top_mean))]
    exp = read_export(searched.exp / "best")
    reeval = exp.metrics["reeval"]
    assert reeval["n"] == SEEDS + 1 and reeval["trial_id"] == best.name
    assert reeval["mean"] == pytest.approx(best["reeval_mean"]) and reeval["se"] == pytest.approx(best["reeval_se"])
    # its weights: the configuration's run with the best validation value, the original trial first among equals
    mine = runs[runs["configuration"].astype(str) == best.name]
    candidates = [(best.name, best["accuracy/val"], None),
                  *zip(mine["trial_id"].astype(str), mine["accuracy/val"], mine["train_seed"])]
    top = max(v for _, v, _ in candidates)
    weights, value, seed = next(c for c in candidates if c[1] == top)
    assert reeval["weights_from"] == weights == exp.metrics["trial_id"]
    assert exp.metrics["accuracy/val"] == pytest.approx(value)
    assert exp.config["run"]["train_seed"] == (None if seed is None else int(seed))  # the seed it trained with
    assert exp.config["run"]["seed"] == 42  # the validation split: the search's
    best_json = json.loads((searched.run / "best.json").read_text())
    assert best_json["best_trial"] == best.name
    # predict --best prints it, and keeps it in its metrics.json
    assert searched.predicted.returncode == 0, searched.predicted.stderr[-2000:]
    assert (f"re-evaluated by the search: accuracy/val mean {reeval['mean']:.4f} ± {reeval['se']:.4f} "
            f"(standard error) over n={SEEDS + 1}") in searched.predicted.stdout
    (written,) = (searched.exp / "predict").glob("*/metrics.json")
    assert json.loads(written.read_text())["reeval"]["mean"] == pytest.approx(reeval["mean"])
