"""Trial-side fault handling: non-finite losses, clear resource errors, and test-only fault injection.

Used inside a trial (the Ray trainable); no Ray import here.

- ``NonFiniteLossCallback`` ends a trial whose ``loss/train`` becomes NaN or inf (raises
  ``NonFiniteLoss``; the trainable reports the reason and ends the trial as *failed*, not retried).
- ``resource_errors()`` turns a CUDA out-of-memory error or a ``MemoryError`` into a
  ``ResourceExhausted`` whose message names the resource and what to change.
- ``TUNE_CIFAR_TEST_FAULTS`` (**test-only**; unset in normal use, then nothing happens): a JSON list
  of rules that make chosen trials fail deterministically, e.g.
  ``[{"when": {"optimizer.lr": 0.0123}, "epoch": 2, "fault": "raise", "times": 1}]``:
  at the start of epoch ``epoch`` (1-based, default 1) of a trial whose sampled values match
  ``when``, ``fault`` happens: ``raise`` (an exception), ``nan`` (weights set to NaN, so the loss
  becomes NaN), ``oom`` (a CUDA out-of-memory error), ``exit`` (the trial's process dies, as if
  killed), ``sleep`` (``seconds``, default 3600: a hung trial), ``slow_stop`` (when the scheduler
  stops the trial, its teardown takes ``seconds``, default 5, as a big model's can on a GPU). ``times`` (default: always)
  limits it to the first N attempts of the trial, counted with marker files in
  ``<state_dir>/<trial id>/`` (``state_dir`` default: ``<tmp>/tune_cifar_faults``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
import torch

TEST_FAULTS_ENV = "TUNE_CIFAR_TEST_FAULTS"
FAULTS = ("raise", "nan", "oom", "exit", "sleep", "slow_stop")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or inf: the trial stops (retrying would repeat it)."""


class ResourceExhausted(RuntimeError):
    """A trial ran out of GPU or host memory; the message names the resource."""


class InjectedFault(RuntimeError):
    """A fault requested by TUNE_CIFAR_TEST_FAULTS (tests only)."""


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


# --------------------------------------------------------------------------- test-only fault injection


def _matches(when: dict, values: dict) -> bool:
    for key, want in when.items():
        have = values.get(key)
        if isinstance(want, float) and isinstance(have, (int, float)) and not isinstance(have, bool):
            if not math.isclose(have, want, rel_tol=1e-9):
                return False
        elif have != want:
            return False
    return True


def injected_fault_rules() -> list[dict]:
    raw = os.environ.get(TEST_FAULTS_ENV, "").strip()
    if not raw:
        return []
    rules = json.loads(raw)
    rules = rules if isinstance(rules, list) else [rules]
    for r in rules:
        if r.get("fault", "raise") not in FAULTS:
            raise ValueError(f"{TEST_FAULTS_ENV}: fault {r.get('fault')!r}; allowed: {', '.join(FAULTS)}")
    return rules


class FaultInjection(pl.Callback):
    """Apply one test fault at the start of a given epoch (see the module docstring)."""

    def __init__(self, rule: dict, trial_id: str | None):
        self.rule = rule
        state = Path(rule.get("state_dir") or Path(tempfile.gettempdir()) / "tune_cifar_faults")
        self.marker_dir = state / trial_id if trial_id else None

    def _attempts_so_far(self) -> int:
        if self.marker_dir is None:
            return 0
        return len(list(self.marker_dir.glob(".test_fault_*")))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.rule.get("fault") == "slow_stop" and isinstance(exception, SystemExit):  # Ray's stop
            time.sleep(float(self.rule.get("seconds", 5)))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        rule = self.rule
        if rule.get("fault") == "slow_stop" or trainer.current_epoch + 1 != int(rule.get("epoch", 1)):
            return
        times = rule.get("times")
        if times is not None:
            if self._attempts_so_far() >= int(times):
                return
            if self.marker_dir is not None:
                self.marker_dir.mkdir(parents=True, exist_ok=True)
                (self.marker_dir / f".test_fault_{time.time_ns()}").touch()
        fault, where = rule.get("fault", "raise"), f"epoch {trainer.current_epoch + 1}"
        if fault == "raise":
            raise InjectedFault(f"injected fault at {where} ({TEST_FAULTS_ENV})")
        if fault == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 GiB (injected at {where})")
        if fault == "exit":
            os._exit(17)
        if fault == "sleep":
            time.sleep(float(rule.get("seconds", 3600)))
            return
        with torch.no_grad():  # "nan": the next training step's loss is NaN
            for p in pl_module.parameters():
                p.fill_(float("nan"))


def trial_callbacks(values: dict, trial_id: str | None = None) -> list[pl.Callback]:
    """The callbacks every search trial gets: the non-finite loss guard, plus test faults if asked."""
    faults = [FaultInjection(r, trial_id) for r in injected_fault_rules() if _matches(r.get("when", {}), values)]
    return [NonFiniteLossCallback(), *faults]
