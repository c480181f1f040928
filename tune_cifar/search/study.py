"""The Optuna side of a search: the optional persistent study, and Ray Tune's OptunaSearch with a NaN
result recorded as a failed Optuna trial.

A trial ended by a non-finite loss reports NaN as its metric; ``OptunaSearch`` would pass it to
``study.tell``, which refuses NaN and leaves the Optuna trial RUNNING forever (in a persistent
study, too). ``NanSafeOptunaSearch`` tells it as FAIL, as ``study.optimize`` does for a NaN objective.
"""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune.search.optuna import OptunaSearch

from ..errors import UserError


def optuna_storage(s):
    """The persistent Optuna storage of ``search.optuna_storage`` (None: in memory)."""
    url = getattr(s, "optuna_storage", None)
    if not url:
        return None
    import optuna

    if url.startswith("sqlite:///"):
        db = url.removeprefix("sqlite:///")
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:
        raise UserError(f"search.optuna_storage={url}: {str(err).strip().splitlines()[0][:200]}; allowed: an "
                        f"SQLAlchemy URL such as sqlite:///optuna.db or postgresql://user@host/db") from None


def study_name(s) -> str:
    return getattr(s, "optuna_study", None) or s.experiment


def check_study_direction(storage, s) -> None:
    """An existing persistent study is loaded as it is (Optuna's load_if_exists), direction included:
    refuse one that optimises the other way rather than let TPE steer toward the worst trials."""
    if storage is None:
        return
    import optuna

    try:
        study = optuna.load_study(study_name=study_name(s), storage=storage)
    except KeyError:  # no such study yet: it is created with the search's direction
        return
    want = "maximize" if s.mode == "max" else "minimize"
    have = study.direction.name.lower()
    if have != want:
        raise UserError(f"search.optuna_storage: study '{study_name(s)}' ({len(study.trials)} trials) was created "
                        f"to {have}, but search.mode={s.mode} ({s.metric}) needs {want}; choose another study "
                        f"with search.optuna_study=NAME")


class NanSafeOptunaSearch(OptunaSearch):
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if (isinstance(value, float) and not math.isfinite(value) and trial_id in self._ot_trials
                and trial_id not in self._completed_trials):
            from optuna.trial import TrialState

            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)
