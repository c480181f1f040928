"""On a CUDA GPU only (skipped elsewhere): mixed precision, on-device data, memory release, predict.

Run on a lent GPU machine with ``bash scripts/gpu_check.sh`` (no Ray there: nothing here imports it).
"""

from __future__ import annotations

import pytest
import torch

from conftest import run_stopped_trial, tiny_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
MIB = 2 ** 20


@pytest.fixture
def gpu_cfg(cifar10_root, tmp_path):
    from tune_cifar.config import load_config

    def make(*extra: str):
        return load_config(tiny_overrides(cifar10_root, tmp_path / "outputs", "trainer.accelerator=gpu",
                                          "trainer.precision=auto", *extra))

    return make


def test_gpu_trial_uses_mixed_precision_and_device_data(gpu_cfg):
    from tune_cifar.data import load_data
    from tune_cifar.training import fit as run_trial

    cfg = gpu_cfg("trainer.max_epochs=3", "trainer.channels_last=true")
    trainer = run_trial(cfg, load_data(cfg.data, cfg.task.task), None)
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert trainer.precision == expected
    assert all(s.x.device.type == "cuda" for s in trainer.datamodule._splits.values())  # no host batches
    assert trainer.train_dataloader.num_workers == 0
    losses = trainer.callback_metrics
    assert torch.isfinite(losses["loss/val"]) and losses["accuracy/val"] > 0.15  # 10 classes: chance 0.1


def test_stopped_trial_gives_its_gpu_memory_back(gpu_cfg):
    """As in a reused Ray worker: a trial stopped from inside a report (ASHA) leaves nothing allocated."""
    from tune_cifar.data import load_data
    from tune_cifar.training import WorkerMemory, live_models, release_memory

    cfg = gpu_cfg("trainer.max_epochs=3")
    arrays = load_data(cfg.data, cfg.task.task)
    release_memory()
    before, models_before = torch.cuda.memory_allocated(), live_models()  # what earlier tests left
    cached_before = torch.cuda.memory_reserved() - before
    stopped = run_stopped_trial(cfg, arrays, [WorkerMemory()])
    peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.memory_reserved()
    release_memory()
    assert stopped and peak > before + MIB  # the trial did hold GPU memory
    assert torch.cuda.memory_allocated() - before < MIB  # ... and gave it back
    cached = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    assert cached <= cached_before + 2 * MIB < reserved - before  # and the cache went back to the card
    memory = WorkerMemory()
    assert memory.leftover["memory/leftover_models"] == models_before
    assert memory.leftover["memory/leftover_cuda_mb"] - before / MIB < 1


def test_predict_on_gpu_agrees_with_cpu(gpu_cfg, tmp_path):
    from tune_cifar import predict, train

    cfg = gpu_cfg("trainer.max_epochs=2", "data.test_subset=64")
    result = train.run(cfg)
    ckpt = str(result["output_dir"]) + "/" + result["best_checkpoint"]
    gpu = predict.main(["--checkpoint", ckpt, "--device", "cuda", "--out", str(tmp_path / "gpu")])
    cpu = predict.main(["--checkpoint", ckpt, "--device", "cpu", "--out", str(tmp_path / "cpu")])
    assert gpu["device"].startswith("cuda") and cpu["device"] == "cpu"
    assert abs(gpu["accuracy"] - cpu["accuracy"]) <= 2 / 64  # bf16/fp16 autocast vs float32: a rare flip
