"""The driver's side of TUNE_CIFAR_TIMELINE (tune_cifar/timeline.py, bench/search_overhead.py): a Tune
callback marking when the driver starts a trial, has its result, and ends it. None when not recording."""

from __future__ import annotations

from ..timeline import enabled, mark


def timeline_callbacks() -> list | None:
    """Tune callbacks for a Tuner's RunConfig (the search's and final.py's re-evaluation); None when off."""
    if not enabled():
        return None
    from ray import tune

    class Timeline(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            mark("driver_trial_start", trial=trial.trial_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            mark("driver_result", trial=trial.trial_id, epoch=result.get("training_iteration"))

        def on_trial_complete(self, iteration, trials, trial, **info):
            mark("driver_trial_complete", trial=trial.trial_id)

    return [Timeline()]
