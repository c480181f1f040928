"""Trial-side fault handling: non-finite losses, clear resource errors; test-only fault injection on request.

Used inside a trial (the Ray trainable); no Ray import here.

- ``NonFiniteLossCallback`` ends a trial whose ``loss/train`` becomes NaN or inf (raises
  ``NonFiniteLoss``; the trainable reports the reason and ends the trial as *failed*, not retried).
- ``resource_errors()`` turns a CUDA out-of-memory error or a ``MemoryError`` into a
  ``ResourceExhausted`` whose message names the resource and what to change.
- ``TUNE_CIFAR_TEST_FAULTS`` (**test-only**; unset in normal use, then ``tune_cifar.fault_injection`` is
  not even imported): a JSON list
  of rules that make chosen trials fail deterministically, e.g.
  ``[{"when": {"optimizer.lr": 0.0123}, "epoch": 2, "fault": "raise", "times": 1}]``:
  at the start of epoch ``epoch`` (1-based, default 1) of a trial whose sampled values match
  ``when``, ``fault`` happens: ``raise`` (an exception), ``nan`` (weights set to NaN, so the loss
  becomes NaN), ``oom`` (a CUDA out-of-memory error), ``exit`` (the trial's process dies, as if
  killed), ``sleep`` (``seconds``, default 3600: a hung trial), ``slow_stop`` (when the scheduler
  stops the trial, its teardown takes ``seconds``, default 5, as a big model's can on a GPU). ``times`` (default: always)
  limits it to the first N attempts of the trial (``rank``: only that worker of a multi-worker trial), counted with marker files in
  ``<state_dir>/<trial id>/`` (``state_dir`` default: ``<tmp>/tune_cifar_faults``).
  A rule with ``"stage": "export"`` holds the search's driver instead (only ``sleep``), just before
  it exports the best trial (``driver_fault``: to interrupt a search there).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pytorch_lightning as pl
import torch

TEST_FAULTS_ENV = "TUNE_CIFAR_TEST_FAULTS"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or inf: the trial stops (retrying would repeat it)."""


class ResourceExhausted(RuntimeError):
    """A trial ran out of GPU or host memory; the message names the resource."""


class NonFiniteLossCallback(pl.Callback):
    """Raise ``NonFiniteLoss`` as soon as a training step's loss is not finite."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            value = float(loss.detach().float().reshape(-1)[0])
            raise NonFiniteLoss(f"loss/train became {value} at epoch {trainer.current_epoch + 1}, "
                                f"step {trainer.global_step}")


@contextlib.contextmanager
def resource_errors(device: str = "cuda") -> Iterator[None]:
    """Re-raise out-of-memory errors as ``ResourceExhausted`` naming the resource and the fix."""
    try:
        yield
    except torch.OutOfMemoryError as err:  # torch.cuda.OutOfMemoryError
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise ResourceExhausted(
            f"out of GPU memory ({detail}); lower data.train_batch_size, use a smaller model, or give each "
            f"trial more of the GPU (a larger search.resources.gpu runs fewer trials per GPU)") from err
    except MemoryError as err:
        raise ResourceExhausted(
            "out of host memory (RAM) in the trial process; lower data.train_batch_size or "
            "search.max_concurrent_trials, or use a machine with more memory") from err


def trial_callbacks(values: dict, trial_id: str | None = None) -> list[pl.Callback]:
    """The callbacks every search trial gets: the non-finite loss guard, plus test faults if asked."""
    if not os.environ.get(TEST_FAULTS_ENV, "").strip():
        return [NonFiniteLossCallback()]
    from .fault_injection import fault_callbacks  # test-only: loaded only when TUNE_CIFAR_TEST_FAULTS is set

    return [NonFiniteLossCallback(), *fault_callbacks(TEST_FAULTS_ENV, values, trial_id)]


def driver_fault(stage: str) -> None:
    """Test-only: hold the search's driver at ``stage`` if a TUNE_CIFAR_TEST_FAULTS rule asks (else nothing)."""
    if os.environ.get(TEST_FAULTS_ENV, "").strip():
        from .fault_injection import driver_fault as hold

        hold(TEST_FAULTS_ENV, stage)
