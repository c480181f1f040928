"""Names the search's modules share, so that none imports another just for a name (no import circles):
what a trial reports and where its checkpoint lies (trainable writes them, results reads them), and the
attributes of an Optuna trial (study writes them, importance and results read them). No Ray here."""

from __future__ import annotations

from pathlib import Path

STOP_REASON = "stop_reason"  # in the last report of a trial ended by a non-finite loss
CHECKPOINT_FILE = "model.ckpt"  # inside each Ray checkpoint directory
# A re-evaluation run's config key (final.py): {"of": the configuration's trial id, "seed": its training seed,
# "values": the configuration's sampled values}
REEVAL = "reeval"
WORLD_SIZE = "world_size"  # reported by a multi-worker trial (distributed.py): the processes it trained on

# User attributes of each Optuna trial: the results.csv trial_id, the run folder's name, its best epoch,
# and how the trial ended (see study.py)
RAY_TRIAL, RUN, BEST_EPOCH, ENDED = "ray_trial_id", "run", "best_epoch", "ended"
# several objectives: {epoch: [value per objective]} (Optuna keeps no intermediate values for them)
EPOCH_VALUES = "epoch_values"
STUDY_FILE = "optuna.db"  # the default study, in the run folder


def study_name(s) -> str:
    """The Optuna study's name: ``search.optuna_study``, else the experiment's."""
    return getattr(s, "optuna_study", None) or s.experiment


def checkpoint_file(directory: str | Path) -> Path:
    """The Lightning checkpoint inside a Ray checkpoint directory of a trial."""
    return Path(directory) / CHECKPOINT_FILE


def epoch_values(frozen) -> dict[int, list[float]]:
    """{epoch: [value per objective]} of an Optuna trial: its intermediate values (one objective) or its
    ``epoch_values`` attribute (several)."""
    stored = frozen.user_attrs.get(EPOCH_VALUES)
    if stored:
        return {int(e): list(v) for e, v in stored.items()}
    return {e: [v] for e, v in frozen.intermediate_values.items()}
