"""Ray Tune's OptunaSearch, with a NaN result recorded as a failed Optuna trial.

A trial ended by a non-finite loss reports NaN as its metric; ``OptunaSearch`` would pass it to
``study.tell``, which refuses NaN and leaves the Optuna trial RUNNING forever (in a persistent
study, too). Here it is told as FAIL, as ``study.optimize`` does for a NaN objective.
"""

from __future__ import annotations

import math

from ray.tune.search.optuna import OptunaSearch


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
