"""A search's compute budget: ``search.budget.trial_epochs``.

A **trial-epoch** is one epoch of one trial: what a trial reports once per epoch (Tune's
``training_iteration``), so an epoch of a multi-worker trial counts once, whatever its workers. It is the
unit early stopping saves: with a budget, what ASHA saves buys more configurations instead of ending the
search sooner.

- **When trials start.** A new trial starts while the epochs done, plus ``max_epochs`` for every trial
  running or waiting to run (what it may still train, its own epochs done included), are below the
  budget. Running trials are never cut short: they run to ``max_epochs`` or ASHA stops them, and a stopped
  trial gives back what it did not train, so further trials can start. Once everything is done or held and
  no trial runs, the searcher says ``Searcher.FINISHED`` and the search ends. So the search spends the
  budget and overshoots it by less than one trial: summed epochs <= budget + max_epochs - 1 (at the
  moment a trial starts, less than the budget is spoken for, and it holds ``max_epochs`` more).
- ``BudgetSearch`` is that rule as a Ray ``Searcher`` wrapping the run's searcher (as Ray's own
  ``ConcurrencyLimiter`` does): Tune saves its count with the experiment's state (``get_state``), in the
  same snapshot the trials are restored from, so ``--resume`` counts the epochs the restored trials had
  done; a trial that continues from its checkpoint is counted at the epoch it reports (not twice).
- ``num_samples`` becomes an optional cap (unset: no cap, Tune's ``num_samples=-1``).
- **A population** (a scheduler registered with ``population=True``: PBT) exists at once and every member
  trains to ``max_epochs`` (an exploit continues from its donor's epoch), so its budget is
  population x max_epochs: ``num_samples = budget // max_epochs`` (at most ``num_samples`` when given),
  set when the settings are read.
- ``search.time_budget_s`` is separate: Tune's wall-clock limit; whichever ends first ends the search.
- **Re-evaluation** (``search.final``, final.py) runs after the trials, out of the same budget: it holds back
  at most ``search.final.budget_share`` (25 %) of it, in whole runs of ``max_epochs`` (``final_sizes``: fewer
  seeds first, down to one, then fewer configurations), and the trials spend the rest (``for_trials``).

No Ray at import (settings read ``resolve``); ``wrap`` imports it.
"""

from __future__ import annotations

import functools

from ..errors import UserError

DEFAULT_TRIALS = 10  # num_samples without a budget (and without num_samples)
EPOCH = "training_iteration"  # what a trial reports once per epoch (rank 0 of a multi-worker trial)


def resolve(where: str, s, population: bool) -> None:
    """Check ``search.budget.trial_epochs`` and set ``s.num_samples``: the default number of trials
    without a budget, the population's size under a population scheduler (PBT), else the cap as given
    (None: none)."""
    budget, epochs = s.budget.trial_epochs, s.scheduler.max_epochs
    if budget is None:
        if s.num_samples is None:
            s.num_samples = DEFAULT_TRIALS
        return
    least = 2 * epochs if population else epochs
    if budget < least:
        what = (f"an integer >= {least} under {s.scheduler.name}: its budget is its population x "
                f"scheduler.max_epochs ({epochs}), and a population has 2 trials at least" if population else
                f"null, or an integer >= scheduler.max_epochs ({epochs}): one trial's epochs at least")
        raise UserError(f"{where}: search.budget.trial_epochs={budget!r} is not allowed; allowed: {what}")
    if population:
        size = budget // epochs
        s.num_samples = min(size, s.num_samples) if s.num_samples is not None else size


def limited(s) -> bool:
    """Whether trials start until the budget is spent (not a population sized by it, nor no budget)."""
    from .registry import scheduler_parts

    return s.budget.trial_epochs is not None and not scheduler_parts(s).population


def tune_num_samples(s) -> int:
    """TuneConfig's num_samples: the cap, or -1 (Tune: no limit) when only the budget ends the search."""
    return s.num_samples if s.num_samples is not None else -1


def wrap(searcher, s):
    """The searcher Tune gets: ``searcher`` inside a BudgetSearch when trials start until the budget is spent."""
    if not limited(s):
        return searcher
    from ray.tune.search import Searcher

    if not isinstance(searcher, Searcher):  # e.g. a registered scheduler's own variant generator
        raise UserError(f"search.budget.trial_epochs: search.scheduler.name={s.scheduler.name} searches with "
                        f"{type(searcher).__name__}, not a Ray Searcher, which the budget needs to decide when trials "
                        f"start; allowed: search.num_samples without a budget with this scheduler")
    return _budget_search_class()(searcher, for_trials(s), s.scheduler.max_epochs)


def charged(epochs: int) -> int:
    """What an ended trial holds of the budget: its epochs, and one for a trial that ended before its first
    (an error at start trains little but is not free: a search whose every trial fails still ends)."""
    return max(int(epochs), 1)


def spent(s, grid) -> bool:
    """Whether the budget ended the search, counted from the trials of ``grid`` as BudgetSearch counts them
    (the epoch each last reported); False for a search that stopped before (interrupted)."""
    return limited(s) and sum(charged((r.metrics or {}).get(EPOCH) or 0) for r in grid) >= for_trials(s)


def text(s, epochs: int) -> str:
    """``budget: 37/40 trial-epochs`` (the summary, best.json's reader, the interrupted line); "" without one.
    With re-evaluation, the trials' part and what it holds back: ``budget: 29/32 trial-epochs (+8 kept for
    re-evaluation)``."""
    if s.budget.trial_epochs is None:
        return ""
    kept = reserved(s)
    return f"budget: {epochs}/{for_trials(s)} trial-epochs" + (f" (+{kept} kept for re-evaluation)" if kept else "")


# --------------------------------------------------------------------------- the re-evaluation's share


def final_off(s) -> str | None:
    """Why re-evaluation (search.final, final.py) does not apply to this search, or None when it does (its
    top_k aside)."""
    from .registry import scheduler_parts

    if len(s.objectives) > 1:
        return ("several objectives have a Pareto front, not one best configuration to re-evaluate; the front is "
                "exported as the trials found it")
    if not scheduler_parts(s).reevaluates:
        return (f"search.scheduler.name={s.scheduler.name} trains a population whose trials change hyperparameters "
                f"in mid-training, so no trial is one configuration that could be trained again from scratch")
    return None


def reevaluates(s) -> bool:
    """Whether the search re-evaluates its best configurations before the export (final.py)."""
    return s.final.top_k > 0 and final_off(s) is None


def final_sizes(s) -> tuple[int, int]:
    """(configurations, training seeds each) that re-evaluation trains: ``search.final``'s; with a trial-epoch
    budget as many runs of ``max_epochs`` as fit in ``final.budget_share`` of it, fewer seeds first (down to
    one: several configurations compared is what picks the export), then fewer configurations. (0, 0) when it
    is off or no run fits."""
    if not reevaluates(s):
        return 0, 0
    k, n = s.final.top_k, s.final.seeds
    if s.budget.trial_epochs is None:
        return k, n
    runs = int(s.budget.trial_epochs * s.final.budget_share) // s.scheduler.max_epochs
    if runs >= k * n:
        return k, n
    if runs >= k:
        return k, runs // k
    return (runs, 1) if runs else (0, 0)


def reserved(s) -> int:
    """The trial-epochs a budget holds back for re-evaluation (0 without a budget or re-evaluation)."""
    if s.budget.trial_epochs is None:
        return 0
    k, n = final_sizes(s)
    return k * n * s.scheduler.max_epochs


def for_trials(s) -> int | None:
    """The trial-epochs the search's trials may spend: the budget less what re-evaluation holds back (None
    without a budget)."""
    return None if s.budget.trial_epochs is None else s.budget.trial_epochs - reserved(s)


def __getattr__(name: str):
    """``budget.BudgetSearch``, made on first use: it subclasses Ray's Searcher, and this module is read
    without Ray (settings). A module attribute all the same, so pickle (tuner.pkl) refers to it by name."""
    if name == "BudgetSearch":
        return _budget_search_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache  # one class: pickle checks that the name gives back the same object
def _budget_search_class():
    from ray.tune.search import Searcher

    class BudgetSearch(Searcher):
        """Starts trials while the budget is not spoken for (module docstring); Tune saves and restores its
        state with the experiment's (``get_state``/``set_state``, as Ray's ConcurrencyLimiter's)."""

        def __init__(self, searcher, budget: int, max_epochs: int) -> None:
            self.searcher = searcher  # Tune walks ``.searcher`` to save and restore each wrapper's state
            self.budget, self.max_epochs = budget, max_epochs
            self.done: dict[str, int] = {}  # trial id -> epochs reported, every trial started
            self.live: set[str] = set()  # started and not ended: each holds max_epochs
            self.full = False  # the last answer was "wait": said once per wait
            super().__init__(metric=searcher.metric, mode=searcher.mode)

        # ---------------------------------------------------------------- the count

        def epochs(self) -> int:
            return sum(self.done.values())

        def held(self) -> int:
            """Epochs done by ended trials (``charged``) + max_epochs for every live one."""
            ended = sum(charged(n) for t, n in self.done.items() if t not in self.live)
            return ended + self.max_epochs * len(self.live)

        def _report(self, trial_id: str, result: dict | None) -> None:
            epoch = (result or {}).get(EPOCH)
            if isinstance(epoch, (int, float)):
                self.done[trial_id] = max(self.done.get(trial_id, 0), int(epoch))

        def line(self) -> str:
            running = f", {len(self.live)} running" if self.live else ""
            return (f"budget: {self.epochs()}/{self.budget} trial-epochs ({len(self.done)} trials started"
                    f"{running})")

        # ---------------------------------------------------------------- Tune's hooks

        def suggest(self, trial_id: str):
            if self.held() >= self.budget:
                if not self.live:
                    print(f"{self.line()}: spent, no more trials", flush=True)
                    return Searcher.FINISHED
                if not self.full:
                    self.full = True
                    print(f"{self.line()}: the running trials may train the rest; no new trial starts unless one "
                          f"ends early", flush=True)
                return None  # ask again when a trial ends (ASHA may give epochs back)
            config = self.searcher.suggest(trial_id)
            if config not in (None, Searcher.FINISHED):
                self.full = False
                self.done.setdefault(trial_id, 0)
                self.live.add(trial_id)
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self._report(trial_id, result)
            self.searcher.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self._report(trial_id, result)  # the last epoch of a trial ASHA stops arrives only here
            self.live.discard(trial_id)
            print(self.line(), flush=True)
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

        # ---------------------------------------------------------------- what a wrapper passes on

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            from ray.tune.search.util import _set_search_properties_backwards_compatible

            return _set_search_properties_backwards_compatible(self.searcher.set_search_properties, metric, mode,
                                                               config, **spec)

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            return self.searcher.set_max_concurrency(max_concurrent)

        def add_evaluated_point(self, *args, **kwargs):
            return self.searcher.add_evaluated_point(*args, **kwargs)

        def on_pause(self, trial_id: str) -> None:
            self.searcher.on_pause(trial_id)

        def on_unpause(self, trial_id: str) -> None:
            self.searcher.on_unpause(trial_id)

        def save(self, checkpoint_path: str) -> None:
            self.searcher.save(checkpoint_path)

        def restore(self, checkpoint_path: str) -> None:
            self.searcher.restore(checkpoint_path)

        def get_state(self) -> dict:
            return {"budget": self.budget, "max_epochs": self.max_epochs, "done": dict(self.done),
                    "live": sorted(self.live)}

        def set_state(self, state: dict) -> None:
            """Tune restores a run (``--resume``): the count of its snapshot, the one its trials restart from."""
            self.done, self.live = dict(state["done"]), set(state["live"])
            print(f"{self.line()} before this resume", flush=True)

    BudgetSearch.__qualname__ = "BudgetSearch"  # what pickle looks up in this module
    return BudgetSearch
