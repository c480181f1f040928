"""The Ray Tune function trainable: one trial is one Lightning fit, reported once per validation epoch.

The driver passes the parsed space and the decoded dataset with ``tune.with_parameters``
(one copy in Ray's object store, read zero-copy by every trial).
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from ray import tune
from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

from ..atomic import is_no_space
from ..config import Config
from ..data import ImageArrays
from ..metrics import logged_keys
from ..faults import NonFiniteLoss, resource_errors, trial_callbacks
from .. import timeline
from .names import CHECKPOINT_FILE, STOP_REASON, checkpoint_file
from .settings import names_cost
from .space import SearchSpace
from ..training import KeepConfiguredHyperparameters, ModelCost, WorkerMemory, fit, quiet, release_memory


_trials_here = 0  # trials this process has started: a reused Ray worker's set-up is cheaper than a fresh one's

# What every trial's Trainer gets beyond the config. No sanity check: Lightning validates 2 batches before
# training to catch a broken validation early, but a trial validates (and reports) at the end of every
# epoch anyway, so in a search of many trials that check repeats work once per trial; a validation that
# fails still ends the trial, at its first epoch's end. (train and search --debug keep it.)
TRIAL_TRAINER = {"num_sanity_val_steps": 0}


def reported_metrics(cfg: Config) -> list[str]:
    """What each report holds: the validation loss and metrics (Lightning's names, e.g. accuracy/val)."""
    return logged_keys(cfg.task, "val")


def drop_partial_checkpoint(trial_dir: str | None) -> None:
    """Remove the trial's newest checkpoint folder if its checkpoint is not whole (a full disk cut Ray's copy
    into the storage short; Tune had not registered it). Local storage only."""
    if not trial_dir or "://" in trial_dir or not Path(trial_dir).is_dir():
        return
    folders = sorted(Path(trial_dir).glob("checkpoint_*"))
    if folders and not is_whole(checkpoint_file(folders[-1])):
        shutil.rmtree(folders[-1], ignore_errors=True)


def is_whole(file: Path) -> bool:
    """Whether a checkpoint file is a whole zip archive (torch.save's format)."""
    try:
        with zipfile.ZipFile(file) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def train_trial(config: dict, space: SearchSpace, arrays: ImageArrays,
                scheduler_callbacks: Optional[Callable[[Config], list]] = None) -> None:
    """Ray's entry point for one trial; ``config`` is what the searcher suggested. ``scheduler_callbacks``:
    the scheduler registration's ``trial_callbacks`` (registry.py), given by the driver (a scheduler registered
    only there is unknown in this worker)."""
    global _trials_here
    _trials_here += 1
    if timeline.enabled():
        timeline.mark("trial_start", trial=tune.get_context().get_trial_id(), n=_trials_here,
                      process_start=timeline.process_start())
    quiet("ray.train", "ray.tune")
    # Ray reuses this process for a later trial only if this one's thread ends within this many seconds
    # of being stopped, else that later trial fails; Lightning's teardown and freeing GPU memory can
    # take longer than Ray's default 2 s. Read by Ray in this process when it reuses it.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    values = space.values(config)
    cfg = space.trial_config(values)
    torch.set_num_threads(max(1, int(space.search.resources.cpu)))
    failure, stopped, exit_code = None, False, None
    try:
        extra = list(scheduler_callbacks(cfg)) if scheduler_callbacks else []
        if names_cost(space.search):
            extra.append(ModelCost())  # model/* objectives: measured once at the start, reported every epoch
        _fit(cfg, arrays, values, extra)
    except NonFiniteLoss as err:
        failure = str(err)
    except SystemExit as stop:  # how Ray ends a trial it stops (ASHA), from inside tune.report
        stopped, exit_code = True, stop.code
    except Exception as err:
        if is_no_space(err):  # Ray's copy of the checkpoint into the storage was cut short: not left there
            drop_partial_checkpoint(tune.get_context().get_trial_dir())
        raise
    # Here no frame or traceback holds the trial any more (Lightning's callbacks hold the model too, via
    # their log methods: they live in _fit), so its model, optimizer state and on-device data can go.
    timeline.mark("fit_left")
    release_memory()
    timeline.mark("trial_end", trial=tune.get_context().get_trial_id(), stopped=stopped)
    if stopped:
        sys.exit(exit_code)
    if failure:  # end the trial as failed, with its reason; not retried (it would repeat)
        tune.report({**{m: float("nan") for m in reported_metrics(cfg)}, STOP_REASON: failure})


def _fit(cfg: Config, arrays: ImageArrays, values: dict, extra: list = ()) -> None:
    """One Lightning fit reporting each validation epoch; a retried trial resumes from its checkpoint,
    a PBT trial from its donor's (with its own, mutated, optimizer values: KeepConfiguredHyperparameters).
    ``extra``: the scheduler's callbacks (e.g. PBT's learning rate); each one's ``reported`` metric names
    join the report."""
    memory = WorkerMemory()  # before the model exists: counts what an earlier trial in this worker left
    added = [name for cb in extra for name in getattr(cb, "reported", ())]
    report = TuneReportCheckpointCallback(metrics=[*reported_metrics(cfg), *memory.names, *added],
                                          filename=CHECKPOINT_FILE, on="validation_end")
    callbacks = [KeepConfiguredHyperparameters(), memory, *extra, report,
                 *trial_callbacks(values, tune.get_context().get_trial_id())]
    if timeline.enabled():  # bench/search_overhead.py: the trial's stages, and when its report returned
        callbacks = [TimelineMarks(), *callbacks, ReportReturned()]
    checkpoint = tune.get_checkpoint()
    with resource_errors():
        if checkpoint is None:
            fit(cfg, arrays, None, callbacks, **TRIAL_TRAINER)
            return
        with checkpoint.as_directory() as directory:
            fit(cfg, arrays, None, callbacks, ckpt_path=checkpoint_file(directory), **TRIAL_TRAINER)


class TimelineMarks(pl.Callback):
    """With TUNE_CIFAR_TIMELINE (tune_cifar/timeline.py, bench/search_overhead.py): marks a trial's stages.
    First of the trial's callbacks, so its ``val_end`` comes before the report callback saves and reports."""

    def on_fit_start(self, trainer, pl_module):
        timeline.mark("fit_start")  # config, model, data module and Trainer built

    def on_sanity_check_start(self, trainer, pl_module):
        timeline.mark("sanity_start")

    def on_sanity_check_end(self, trainer, pl_module):
        timeline.mark("sanity_end")

    def on_train_start(self, trainer, pl_module):
        timeline.mark("train_start")  # after the sanity check and a restore

    def on_train_epoch_start(self, trainer, pl_module):
        timeline.mark("epoch_start", epoch=trainer.current_epoch)

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            timeline.mark("val_start", epoch=trainer.current_epoch)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            timeline.mark("val_end", epoch=trainer.current_epoch)

    def on_train_end(self, trainer, pl_module):
        timeline.mark("train_end")


class ReportReturned(pl.Callback):
    """Last of the trial's callbacks: marks when the report returned (checkpoint written and copied into
    the storage, the driver's answer received)."""

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            timeline.mark("report_end", epoch=trainer.current_epoch)
