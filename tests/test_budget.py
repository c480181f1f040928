"""A search spends a trial-epoch budget (issue 18): ``search.budget.trial_epochs``, on the user's path.

A budget of 6 trial-epochs, trials of at most 2 epochs, 2 at a time, ASHA. The first trial is strong and the
later ones weak (points_to_evaluate), so ASHA stops the weak ones after one epoch and the budget buys more
trials than 6 / 2. By default one search runs to its end as a user runs it (``python -m tune_cifar.search``).
Marked slow (two commands and a signal): the same search whose second trial sleeps in its first epoch (a test
fault, first attempt only); once the rest of the budget is spent the search waits for it, and is interrupted
there (Ctrl-C to the process group), then resumed with ``--resume``: the resumed search must count the 4
epochs already done, start no new trial, and end within the budget.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_space
from test_interrupt import _end, _sleeping_trials, _start, _user_env, _wait
from tune_cifar.faults import TEST_FAULTS_ENV

BUDGET, EPOCHS, SLOTS = 6, 2, 2
STRONG = {"optimizer.optimizer": "adamw", "optimizer.lr": 0.01}
SLEEPER = {"optimizer.optimizer": "sgd", "optimizer.lr": 3e-5, "optimizer.momentum": 0.9}
WEAK = [{"optimizer.optimizer": "sgd", "optimizer.lr": lr, "optimizer.momentum": 0.9} for lr in (1e-5, 2e-5, 4e-5)]


def _space(tmp: Path) -> Path:
    from cifar_files import write_cifar10

    root = tmp / "cifar10"
    write_cifar10(root, n_train=400, n_test=60, seed=0)  # enough for adamw 0.01 to beat sgd 1e-5 at epoch 1
    return write_space(tmp, root, {
        "metric": "loss/val",  # continuous: no ties at ASHA's rung (a tie passes)
        "budget": {"trial_epochs": BUDGET}, "max_concurrent_trials": SLOTS, "resources": {"cpu": 1},
        "scheduler": {"name": "asha", "max_epochs": EPOCHS, "grace_period": 1, "reduction_factor": 2},
        "checkpoints_to_keep": 1}, points=[STRONG, SLEEPER, *WEAK], searcher="random")


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    """The budget search run to its end in one command: its log and run folder."""
    tmp = tmp_path_factory.mktemp("budget_plain")
    proc, log = _start(_space(tmp), tmp)
    try:
        code = proc.wait(300)
    finally:
        _end(proc)
    exp = tmp / "outputs" / "tiny"
    (run,) = [d for d in exp.iterdir() if d.is_dir() and d.name != "best"]
    return {"second": (code, log.read_text()), "run": run, "exp": exp}


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> dict:
    """The budget search, interrupted while its last trial sleeps and resumed: the logs and the run folder."""
    tmp = tmp_path_factory.mktemp("budget")
    space = _space(tmp)
    state = tmp / "faults"
    faults = json.dumps([{"when": {"optimizer.lr": SLEEPER["optimizer.lr"]}, "epoch": 1, "fault": "sleep",
                          "seconds": 600, "times": 1, "state_dir": str(state)}])
    env = _user_env(**{TEST_FAULTS_ENV: faults})
    proc, log = _start(space, tmp, env=env)
    try:  # the budget is all done or held (the sleeper holds 2), the sleeper in its sleep
        _wait(lambda: _sleeping_trials(state) == 1 and "no new trial starts" in log.read_text(), proc, log,
              "the budget is held and the sleeper sleeps", timeout=240)
        os.killpg(proc.pid, signal.SIGINT)
        first = proc.wait(120)
    finally:
        _end(proc)
    exp = tmp / "outputs" / "tiny"
    (run,) = [d for d in exp.iterdir() if d.is_dir()]
    before = pd.read_csv(run / "results.csv")

    proc, resumed = _start(space, tmp, "--resume", env=env)
    try:
        second = proc.wait(300)
    finally:
        _end(proc)
    return {"first": (first, log.read_text()), "second": (second, resumed.read_text()), "before": before,
            "run": run, "exp": exp}


@pytest.mark.parametrize("how", ["searched", pytest.param("search", marks=pytest.mark.slow)])
def test_the_budget_buys_more_trials_than_full_ones_and_ends_within_it(how, request):
    """In one command, and (slow) interrupted and resumed."""
    search = request.getfixturevalue(how)
    code, text = search["second"]
    assert code == 0, text[-3000:]
    table = pd.read_csv(search["run"] / "results.csv")
    # README: summed epochs <= budget + max_epochs - 1 (within the bound: one trial's epochs per slot)
    assert BUDGET <= table["epochs"].sum() <= BUDGET + EPOCHS - 1 < BUDGET + SLOTS * EPOCHS, table
    assert len(table) > BUDGET // EPOCHS, table  # ASHA's savings bought trials
    assert (table["status"] == "stopped early").any() and not (table["status"] == "error").any(), table
    assert f"budget: {table['epochs'].sum()}/{BUDGET} trial-epochs" in text, text[-3000:]  # the summary
    best = json.loads((search["run"] / "best.json").read_text())
    # no re-evaluation in this search (write_space: final.top_k 0), so nothing of the budget is kept for it
    assert best["budget"] == {"trial_epochs": BUDGET, "used": int(table["epochs"].sum()), "kept_for_reeval": 0}
    assert (search["exp"] / "best" / "export.json").is_file()


def test_progress_lines_show_the_budget(searched):
    code, text = searched["second"]
    assert code == 0, text[-3000:]
    # a line as trials end (several may end between two lines): what is spent only grows, up to the total
    spent = [int(line.split()[1].split("/")[0]) for line in text.splitlines() if line.startswith("budget: ")]
    total = int(pd.read_csv(searched["run"] / "results.csv")["epochs"].sum())
    assert spent and spent == sorted(spent) and 1 <= spent[0] and spent[-1] == total, text[-3000:]
    assert text.count(f"budget: {total}/{BUDGET} trial-epochs") >= 1


@pytest.mark.slow
def test_progress_lines_and_the_interruption_show_the_budget(search):
    code, text = search["first"]
    assert code == 130, text[-3000:]
    progress = [line for line in text.splitlines() if line.startswith("budget: ")]
    # the first trial to end is the strong one (the other sleeps): 2 epochs
    assert progress and progress[0].startswith(f"budget: {EPOCHS}/{BUDGET} trial-epochs ("), text[-3000:]
    done = int(search["before"]["epochs"].sum())
    assert f"search interrupted after {len(search['before'])} trials (budget: {done}/{BUDGET} trial-epochs)" in text


@pytest.mark.slow
def test_resume_counts_the_epochs_already_done(search):
    before, (code, text) = search["before"], search["second"]
    done = int(before["epochs"].sum())
    assert done >= BUDGET - EPOCHS and (before["status"] == "unfinished").sum() == 1, before  # the sleeper
    assert f"budget: {done}/{BUDGET} trial-epochs" in text and "before this resume" in text, text[-3000:]
    after = pd.read_csv(search["run"] / "results.csv")
    sleeper = after.set_index("trial_id").loc[before.loc[before["status"] == "unfinished", "trial_id"].iloc[0]]
    assert sleeper["status"] != "unfinished" and sleeper["epochs"] >= 1, after
    if sleeper["epochs"] == EPOCHS:  # it took the rest of the budget (ASHA's rungs restart empty): no new trial
        assert set(after["trial_id"]) == set(before["trial_id"]), (before, after)
    # counted from zero, the resumed search would have started trials worth the whole budget again
    assert after["epochs"].sum() <= BUDGET + EPOCHS - 1, after


# --------------------------------------------------------------------------- the settings (no search)


def _settings(tmp_path: Path, cifar10_root: Path, search: dict):
    """The parsed search section of a tiny space; under PBT, a space of values PBT can mutate."""
    import yaml

    from tune_cifar.search.space import load_space

    path = write_space(tmp_path, cifar10_root, search)
    if search.get("scheduler", {}).get("name") == "pbt":
        doc = yaml.safe_load(path.read_text())
        doc["params"] = {"optimizer.lr": {"loguniform": [1e-5, 0.05]}}
        path.write_text(yaml.safe_dump(doc))
    return load_space(path).search


PBT = {"scheduler": {"name": "pbt", "max_epochs": 4, "perturbation_interval": 1}}


def test_num_samples_is_a_cap_with_a_budget_and_a_population_under_pbt(tmp_path, cifar10_root):
    assert _settings(tmp_path, cifar10_root, {}).num_samples == 10  # no budget: as before
    s = _settings(tmp_path, cifar10_root, {"budget": {"trial_epochs": 40}})
    assert s.num_samples is None and s.budget.trial_epochs == 40  # no cap: Tune's num_samples=-1
    assert _settings(tmp_path, cifar10_root, {"budget": {"trial_epochs": 40}, "num_samples": 7}).num_samples == 7
    assert _settings(tmp_path, cifar10_root, {"budget": {"trial_epochs": 19}, **PBT}).num_samples == 4  # 19 // 4
    assert _settings(tmp_path, cifar10_root, {"budget": {"trial_epochs": 40}, "num_samples": 3, **PBT}).num_samples == 3


@pytest.mark.parametrize("search, needle", [
    ({"budget": {"trial_epochs": 0}}, "search.budget.trial_epochs=0 is not allowed; allowed: null, or an integer >= "
                                      "scheduler.max_epochs (10): one trial's epochs at least"),
    ({"budget": {"trial_epochs": -5}}, "search.budget.trial_epochs=-5 is not allowed"),
    ({"budget": {"trial_epochs": 3}, "scheduler": {"max_epochs": 4}}, "search.budget.trial_epochs=3 is not allowed"),
    ({"budget": {"trial_epochs": 1.5}}, "search.budget.trial_epochs=1.5 must be of type int"),
    ({"budget": {"trial_epochs": True}}, "search.budget.trial_epochs=True must be of type int"),
    ({"budget": {"trial_epoch": 8}},
     "unknown key search.budget.trial_epoch (did you mean search.budget.trial_epochs?)"),
    ({"budget": {"trial_epochs": 8}, "num_samples": 0}, "search.num_samples=0 is not allowed"),
    ({"budget": {"trial_epochs": 7}, **PBT},
     "search.budget.trial_epochs=7 is not allowed; allowed: an integer >= 8 under pbt: its budget is its population x "
     "scheduler.max_epochs (4), and a population has 2 trials at least"),
], ids=["zero", "negative", "below one trial", "float", "bool", "typo", "cap 0", "pbt below two"])
def test_bad_budgets_are_refused_naming_the_key(tmp_path, cifar10_root, search, needle):
    from tune_cifar.errors import UserError

    with pytest.raises(UserError) as err:
        _settings(tmp_path, cifar10_root, search)
    assert needle in str(err.value) and "\n" not in str(err.value), err.value


# --------------------------------------------------------------------------- the rule (BudgetSearch alone)


def test_the_start_rule_spends_the_budget_and_overshoots_by_less_than_one_trial():
    """Simulated trials that end after 1..max_epochs epochs (as ASHA stops them), any number at once: the
    summed epochs stay in [budget, budget + max_epochs - 1], and the searcher ends with none running. Trials
    that fail before their first epoch still end the search (each holds one)."""
    import random

    from ray.tune.search import Searcher

    from tune_cifar.search.budget import BudgetSearch

    class Fixed(Searcher):  # one function's unit test: the wrapped searcher only hands out configs
        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    for seed in range(200):
        rng = random.Random(seed)
        epochs, slots = rng.randint(1, 8), rng.randint(1, 4)
        budget = rng.randint(epochs, 60)
        fails = seed % 10 == 0  # every trial ends before its first report
        search, running, ended, n = BudgetSearch(Fixed(), budget, epochs), {}, {}, 0
        while True:
            config = None
            while len(running) < slots:  # Tune asks while a slot is free
                n += 1
                config = search.suggest(str(n))
                if config in (None, Searcher.FINISHED):
                    break
                running[str(n)] = 0 if fails else rng.randint(1, epochs)  # the epochs it will run
            if config == Searcher.FINISHED:
                assert not running
                break
            assert running and n < 10_000  # "wait" only while a trial runs (else Tune would wait forever)
            trial = rng.choice(sorted(running))
            runs = running.pop(trial)
            for e in range(1, runs + 1):
                search.on_trial_result(trial, {"training_iteration": e})
            search.on_trial_complete(trial, {"training_iteration": runs} if runs else None, error=not runs)
            ended[trial] = runs
        total = sum(ended.values())
        if fails:
            assert total == 0 and len(ended) == budget
        else:
            assert budget <= total <= budget + epochs - 1, (seed, budget, epochs, slots, total)
        restored = BudgetSearch(Fixed(), budget, epochs)  # --resume: Tune's saved state, restored
        restored.set_state(search.get_state())
        assert restored.suggest("again") == Searcher.FINISHED
