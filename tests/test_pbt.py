"""Population-based training: a mutation survives the restore of a donor's checkpoint, only keys that
can change mid-training are mutated, exploits are recorded in results.csv and the plot, the export
is a trial's own best checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl

from tune_cifar.hparams_restore import KeepConfiguredHyperparameters
from tune_cifar.system import lr_factor


class SaveAtFirstValidation(pl.Callback):
    """Saves the trainer's full state after the first epoch's validation, where Ray's
    TuneReportCheckpointCallback saves a trial's checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


class Probe(pl.Callback):
    """The optimizer's values at the first training step after the restore."""

    def __init__(self) -> None:
        self.seen = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen is None:
            sched = trainer.lr_scheduler_configs[0].scheduler
            self.seen = {"groups": [{k: v for k, v in g.items() if k != "params"}
                                    for g in trainer.optimizers[0].param_groups],
                         "step": sched.last_epoch, "base_lrs": list(getattr(sched, "base_lrs", [])),
                         "last_lr": sched.get_last_lr(), "total": int(trainer.estimated_stepping_batches),
                         "per_epoch": int(trainer.estimated_stepping_batches) // trainer.max_epochs}


def _donor_and_resume(tiny_cfg, tmp_path, schedule: list[str], keep: bool) -> dict:
    """Train with lr=0.1, momentum 0.9, weight decay 5e-4 and checkpoint after epoch 1; resume that
    checkpoint with lr=0.01, momentum 0.5, weight decay 1e-3 (a PBT exploit + explore)."""
    from tune_cifar.data import load_data
    from tune_cifar.trial import run_trial

    common = ["optimizer=sgd", "trainer.max_epochs=2", *schedule]
    donor = tiny_cfg(*common, "optimizer.lr=0.1", "optimizer.momentum=0.9", "optimizer.weight_decay=5e-4")
    arrays = load_data(donor.data, donor.task.task)
    ckpt = tmp_path / "donor.ckpt"
    run_trial(donor, arrays, None, [SaveAtFirstValidation(ckpt)])
    assert ckpt.is_file()

    mutated = tiny_cfg(*common, "optimizer.lr=0.01", "optimizer.momentum=0.5", "optimizer.weight_decay=1e-3")
    probe = Probe()
    run_trial(mutated, arrays, None, [*([KeepConfiguredHyperparameters()] if keep else []), probe], ckpt_path=ckpt)
    return {"cfg": mutated, **probe.seen}


@pytest.mark.parametrize("warmup", [0.0, 1.5])
def test_restored_optimizer_follows_the_new_config_under_a_cosine_schedule(tiny_cfg, tmp_path, warmup):
    seen = _donor_and_resume(tiny_cfg, tmp_path, ["optimizer.scheduler.name=cosine",
                                                   f"optimizer.scheduler.warmup_epochs={warmup}"], keep=True)
    sched = seen["cfg"].optimizer.scheduler
    assert seen["step"] == seen["per_epoch"] > 0  # resumed after one epoch of steps
    factor = lr_factor(seen["step"], seen["total"], int(warmup * seen["per_epoch"]), sched, seen["per_epoch"])
    assert 0 < factor < 1
    decay, no_decay = seen["groups"]
    for group in (decay, no_decay):
        assert group["lr"] == pytest.approx(0.01 * factor, rel=1e-9)  # the schedule factor of the new rate
        assert group["initial_lr"] == pytest.approx(0.01)
        assert group["momentum"] == 0.5
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert seen["base_lrs"] == pytest.approx([0.01, 0.01])
    assert seen["last_lr"] == pytest.approx([0.01 * factor] * 2)


def test_without_the_callback_the_checkpoint_undoes_the_mutation(tiny_cfg, tmp_path):
    """The trap the callback closes: Lightning restores the donor's lr, momentum and weight decay."""
    seen = _donor_and_resume(tiny_cfg, tmp_path, ["optimizer.scheduler.name=cosine"], keep=False)
    decay = seen["groups"][0]
    factor = lr_factor(seen["step"], seen["total"], 0, seen["cfg"].optimizer.scheduler, seen["per_epoch"])
    assert decay["lr"] == pytest.approx(0.1 * factor) and decay["momentum"] == 0.9
    assert decay["weight_decay"] == 5e-4 and seen["base_lrs"] == pytest.approx([0.1, 0.1])


def test_restored_optimizer_follows_the_new_config_under_onecycle(tiny_cfg, tmp_path):
    import torch

    seen = _donor_and_resume(tiny_cfg, tmp_path, ["optimizer.scheduler.name=onecycle"], keep=True)
    # OneCycleLR's rate at the restored step, computed by a fresh schedule with the new max_lr
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=seen["total"], cycle_momentum=False)
    for _ in range(seen["step"]):
        opt.step()
        ref.step()
    for group in seen["groups"]:
        assert group["max_lr"] == pytest.approx(0.01) and group["initial_lr"] == pytest.approx(0.01 / 25)
        assert group["lr"] == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        assert group["momentum"] == 0.5
    assert seen["groups"][0]["weight_decay"] == 1e-3
    assert not math.isclose(seen["groups"][0]["lr"], 0.01)  # mid-cycle, not the peak
