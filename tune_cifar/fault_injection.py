"""Test-only fault injection for search trials, read from ``TUNE_CIFAR_TEST_FAULTS`` (see tune_cifar/faults.py).

Imported by ``faults.trial_callbacks`` only when that variable is set: never in normal use. faults.py
owns the variable's name and passes it in (``env``): this module imports nothing of faults.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

FAULTS = ("raise", "nan", "oom", "exit", "sleep", "slow_stop")


class InjectedFault(RuntimeError):
    """A fault requested by TUNE_CIFAR_TEST_FAULTS (tests only)."""


def _matches(when: dict, values: dict) -> bool:
    for key, want in when.items():
        have = values.get(key)
        if isinstance(want, float) and isinstance(have, (int, float)) and not isinstance(have, bool):
            if not math.isclose(have, want, rel_tol=1e-9):
                return False
        elif have != want:
            return False
    return True


def injected_fault_rules(env: str) -> list[dict]:
    """The rules in the environment variable ``env`` (faults.TEST_FAULTS_ENV)."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return []
    rules = json.loads(raw)
    rules = rules if isinstance(rules, list) else [rules]
    for r in rules:
        if r.get("fault", "raise") not in FAULTS:
            raise ValueError(f"{env}: fault {r.get('fault')!r}; allowed: {', '.join(FAULTS)}")
    return rules


class FaultInjection(pl.Callback):
    """Apply one test fault at the start of a given epoch (see the module docstring)."""

    def __init__(self, rule: dict, trial_id: str | None, env: str):
        self.rule, self.env = rule, env
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
        if "rank" in rule and trainer.global_rank != int(rule["rank"]):  # one worker of a multi-worker trial
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
            raise InjectedFault(f"injected fault at {where} ({self.env})")
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


def fault_callbacks(env: str, values: dict, trial_id: str | None = None) -> list[pl.Callback]:
    """One ``FaultInjection`` per rule in ``env`` whose ``when`` matches the trial's sampled values."""
    return [FaultInjection(r, trial_id, env) for r in injected_fault_rules(env)
            if "stage" not in r and _matches(r.get("when", {}), values)]


def driver_fault(env: str, stage: str) -> None:
    """A ``sleep`` rule in ``env`` with ``"stage": stage`` holds the search's driver there (to interrupt it there)."""
    for rule in injected_fault_rules(env):
        if rule.get("stage") == stage and rule.get("fault") == "sleep":
            time.sleep(float(rule.get("seconds", 3600)))
