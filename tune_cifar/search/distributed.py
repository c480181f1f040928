"""A trial trained data-parallel on ``search.resources.workers`` Ray Train workers (Lightning DDP; gloo on
CPUs, NCCL on GPUs), the way Ray's guide for Tune + Train V2 (Ray >= 2.43) runs one: the Tune trial's
function launches a ``ray.train.torch.TorchTrainer`` whose workers fit with Ray's ``RayDDPStrategy``,
``RayLightningEnvironment`` and ``prepare_trainer``. Everything else a trial does stays Tune's:

- **Resources.** The Tune trial's process only drives the Train run: it holds no CPU (``Resources.for_ray``);
  Ray Train reserves ``workers x {cpu, gpu}`` on one node (placement ``STRICT_PACK``: a trial's workers do
  not span nodes), and the driver runs at most as many trials at once as fit (``workers.trials_that_fit``).
- **Data.** Each worker gets the object-store reference of the decoded arrays and reads them without a copy
  (one copy per node, shared by every trial there); it trains on its own slice of every global batch of the
  epoch's seeded order (``data.module._EpochBatches``), validates on its own rows, and the metrics are synced.
- **Reports and decisions.** At each validation end rank 0 sends its metrics and the Lightning checkpoint (its
  bytes through the object store: the workers may be on another node than the trial's process) to the trial,
  which reports them with ``tune.report`` and a Tune checkpoint, so ASHA, checkpoint retention, the
  export, ``--resume`` and PBT see what a one-process trial gives them.
  The trial answers *go on* or *stop* (Tune stopped it); rank 0 broadcasts the answer and all workers end the fit together. Ray's own
  ``RayTrainReportCallback`` + ``TuneReportCallback`` pair is not used: it reports at train-epoch end, before
  validation, and hands Tune metrics without a Tune checkpoint (so no checkpoint retention, PBT or export)
  and without a way back to stop the workers (a stopped trial's workers would train on).
- **Starting from a checkpoint** (a retry, ``--resume``): the trial reads Tune's checkpoint and
  every worker resumes from its bytes.
- **Stopped or paused.** Ray Train reserves its workers in a placement group of its own, which Tune does not
  see (the trial holds no CPU) and which outlives a trial process that exits before the run has ended (it
  belongs to the search, not to the trial; Train's own clean-up needs Ray's dashboard). So a trial's process
  ends its run before it exits (``trial_class``: Tune's ``stop`` waits for it), and under PBT it is not kept
  for reuse (cli.py: ``reuse_actors``): a trial PBT pauses, to let the next one train or to restart it from a
  donor's checkpoint, would otherwise keep its workers, and the trial waiting for them would wait forever.
- **Failures.** A worker's exception or death ends the Train run (Train's own retries are off) and fails the
  Tune trial, which Tune retries from its last checkpoint (``search.max_failures``), as a one-process trial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import ray
import torch
from ray import tune

from ..atomic import write_bytes
from ..config import Config
from ..faults import NonFiniteLoss, resource_errors, trial_callbacks
from ..training import KeepConfiguredHyperparameters, ModelCost, WorkerMemory, fit, quiet, release_memory
from .names import CHECKPOINT_FILE, STOP_REASON, WORLD_SIZE, checkpoint_file
from .settings import names_cost
from .space import SearchSpace
from .trainable import TRIAL_TRAINER, reported_metrics

_GO, _STOP = "go", "stop"
# How long a stopped trial's process waits for its Train run to end before it exits anyway: as long as Tune
# waits for a reused process's thread (TUNE_FUNCTION_THREAD_TIMEOUT_S, below). A trial PBT pauses is stopped
# where it waits for Tune's answer to its report: its workers are told at once and end within seconds. One
# stopped in mid-epoch (Ctrl-C) would be told at the epoch's end: not worth holding Ctrl-C up for.
END_TIMEOUT_S = 60.0
_RUNS: list[threading.Event] = []  # this process's Train runs (one at a time): set when each has ended


class _Channel:
    """The trial's two queues (Ray actors of no CPU, owned by the trial: they die with it)."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.reports = Queue(1, actor_options={"num_cpus": 0})  # rank 0 -> trial: (metrics, [checkpoint ref])
        self.answers = Queue(1, actor_options={"num_cpus": 0})  # trial -> rank 0: go on or stop


# --------------------------------------------------------------------------- the workers


def _report_callback(names: list[str], channel: _Channel):
    import pytorch_lightning as pl

    class ReportToTrial(pl.Callback):
        """Rank 0 reports each validation epoch to the trial and waits for its answer; every worker takes
        part in saving the checkpoint (Lightning gathers it, rank 0 writes) and in the answer's broadcast."""

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            folder = tempfile.mkdtemp(prefix="tune_cifar_ckpt_") if trainer.is_global_zero else None
            try:
                trainer.save_checkpoint(os.path.join(folder or tempfile.gettempdir(), CHECKPOINT_FILE))
                answer = None
                if trainer.is_global_zero:
                    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in names}
                    metrics[WORLD_SIZE] = trainer.world_size
                    data = ray.put(Path(folder, CHECKPOINT_FILE).read_bytes())
                    channel.reports.put((metrics, [data]))  # a list: Ray passes the reference, not the bytes
                    answer = channel.answers.get()
            finally:
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
            if trainer.strategy.broadcast(answer, src=0) == _STOP:
                trainer.should_stop = True  # every worker: the fit ends after this epoch

    return ReportToTrial()


def _worker(loop: dict) -> None:
    """One Ray Train worker: the trial's Lightning fit under DDP, on its shard of the data."""
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    quiet("ray.train", "ray.tune")
    # memory/* are each worker's own (what this process holds): rank 0's are reported, not an average
    warnings.filterwarnings("ignore", message=r".*'(memory|model)/.*sync_dist=True", category=UserWarning)
    space: SearchSpace = loop["space"]
    cfg = space.trial_config(loop["values"])
    torch.set_num_threads(max(1, int(space.search.resources.cpu)))
    arrays = ray.get(loop["arrays"][0])  # zero-copy: numpy views of this node's object store
    memory = WorkerMemory()
    extra = list(loop["scheduler_callbacks"](cfg)) if loop["scheduler_callbacks"] else []  # e.g. PBT's rate
    if names_cost(space.search):
        extra.append(ModelCost())  # model/* objectives: each worker measures the same model; rank 0's is reported
    names = [*reported_metrics(cfg), *memory.names, *(n for cb in extra for n in getattr(cb, "reported", ()))]
    callbacks = [KeepConfiguredHyperparameters(), memory, *extra, _report_callback(names, loop["channel"]),
                 *trial_callbacks(loop["values"], loop["trial_id"])]
    start = None
    if loop["checkpoint"]:  # every worker resumes from the same checkpoint, written to its own disk
        start = Path(tempfile.mkdtemp(prefix="tune_cifar_start_"), CHECKPOINT_FILE)
        write_bytes(start, ray.get(loop["checkpoint"][0]))  # whole or not at all (tune_cifar.atomic)
    try:
        with resource_errors():
            fit(cfg, arrays, None, callbacks, ckpt_path=start, strategy=RayDDPStrategy(),
                plugins=[RayLightningEnvironment()], devices="auto", use_distributed_sampler=False,
                prepare=prepare_trainer, **TRIAL_TRAINER)
    finally:
        if start is not None:
            shutil.rmtree(start.parent, ignore_errors=True)


# --------------------------------------------------------------------------- the trial (Tune's function)


def train_trial_workers(config: dict, space: SearchSpace, arrays: list,
                        scheduler_callbacks: Optional[Callable[[Config], list]] = None) -> None:
    """Ray Tune's entry point for one multi-worker trial; ``arrays``: [object ref of the decoded arrays];
    ``scheduler_callbacks``: as for trainable.train_trial (each worker adds them)."""
    quiet("ray.train", "ray.tune")
    # as trainable.train_trial: Ray reuses this process for a later trial only if this one's thread ends within
    # this many seconds of being stopped; ending a Train run (its workers finish the epoch, then exit) takes more
    # than Ray's default 2 s
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    values = space.values(config)
    cfg = space.trial_config(values)
    try:
        _drive(cfg, space, values, arrays, scheduler_callbacks)
    except NonFiniteLoss as err:  # as a one-process trial: failed with its reason, not retried
        tune.report({**{m: float("nan") for m in reported_metrics(cfg)}, STOP_REASON: str(err)})
    finally:
        release_memory()


def trial_class(function):
    """Tune's trainable for a multi-worker trial (``function``: train_trial_workers with its parameters): Ray's
    class for a function trainable whose ``stop`` returns once the trial's Train run has ended, so that its
    placement group is gone before Tune starts the trial that needs the same resources."""
    from ray.tune.trainable.function_trainable import wrap_function

    class MultiWorkerTrial(wrap_function(function)):
        def cleanup(self):
            try:
                super().cleanup()  # wakes the trial's thread: tune.report raises SystemExit, the workers are told
            finally:
                _wait_for_runs()

    MultiWorkerTrial.__name__ = MultiWorkerTrial.__qualname__ = function.__name__  # trial names as before
    return MultiWorkerTrial


def _wait_for_runs() -> None:
    """Until this process's Train runs have ended (or END_TIMEOUT_S). A module function, not in the class
    above: Ray sends that class by value, with copies of the globals it names, and ``_RUNS`` must be this
    module's own."""
    deadline = time.monotonic() + END_TIMEOUT_S
    for ended in list(_RUNS):
        ended.wait(max(0.0, deadline - time.monotonic()))


def _drive(cfg: Config, space: SearchSpace, values: dict, arrays: list, scheduler_callbacks) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    r = space.search.resources
    checkpoint = tune.get_checkpoint()
    start = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = [ray.put(checkpoint_file(directory).read_bytes())]
    channel = _Channel()
    trial_id = tune.get_context().get_trial_id()
    scratch = tempfile.mkdtemp(prefix="tune_cifar_train_")  # Ray Train's run folder: a marker file, no state
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"space": space, "values": values, "arrays": arrays, "checkpoint": start,
                           "channel": channel, "trial_id": trial_id,
                           "scheduler_callbacks": scheduler_callbacks},
        torch_config=TorchConfig(backend="nccl" if r.gpu > 0 else "gloo"),
        scaling_config=ScalingConfig(num_workers=r.workers, use_gpu=r.gpu > 0,
                                     resources_per_worker={"CPU": r.cpu, **({"GPU": r.gpu} if r.gpu else {})},
                                     placement_strategy="STRICT_PACK"),
        run_config=RunConfig(name=f"trial_{trial_id}", storage_path=scratch,
                             failure_config=FailureConfig(max_failures=0)),  # Tune retries the trial
    )
    outcome: dict = {}

    def run() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the trial's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name="ray-train-run", daemon=True)
    ended = threading.Event()
    _RUNS.append(ended)
    thread.start()
    try:
        while True:
            try:
                metrics, data = channel.reports.get(timeout=1.0)
            except Exception:  # ray.util.queue.Empty: nothing yet
                if not thread.is_alive():
                    break
                continue
            folder = Path(tempfile.mkdtemp(prefix="tune_cifar_report_"))
            try:
                write_bytes(checkpoint_file(folder), ray.get(data[0]))  # never a cut-short checkpoint to Ray
                try:
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))
                except SystemExit:  # Tune stops this trial (ASHA, PBT, the end of the search)
                    channel.answers.put(_STOP)
                    thread.join()
                    raise
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            channel.answers.put(_GO)
        thread.join()
    finally:
        ended.set()  # the run has ended (joined above), or this function fails
        _RUNS.remove(ended)
        shutil.rmtree(scratch, ignore_errors=True)
    if "error" in outcome:
        raise _worker_error(outcome["error"])


def _worker_error(err: BaseException) -> BaseException:
    """A worker's NonFiniteLoss as itself (the trial then ends as failed, not retried); else the error."""
    for failure in getattr(err, "worker_failures", {}).values():
        if isinstance(failure, NonFiniteLoss) or "NonFiniteLoss" in str(failure):
            text = str(failure).strip().splitlines()
            return NonFiniteLoss(next((ln.split("NonFiniteLoss: ", 1)[1] for ln in reversed(text)
                                       if "NonFiniteLoss: " in ln), text[-1] if text else "loss/train not finite"))
    return err
