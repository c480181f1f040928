"""Shared fixtures: tiny generated CIFAR-format data and a composed-then-shrunk config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("PL_DISABLE_FORK", "1")
os.environ.setdefault("TUNE_CIFAR_OFFLINE_PROBE_TIMEOUT", "2")

# The longest files first (CPU-s on an idle machine: python bench/cpu_per_test.py): scripts/test.sh hands files to
# its two pytest processes in collection order (--no-loadscope-reorder), so the run does not end on one process
# still in a long file while the other is idle (longest first). Files not named keep their order, after these.
LONGEST_FIRST = ("test_interrupt.py", "test_resilience.py", "test_workers.py", "test_cluster.py", "test_bad_input.py",
                 "test_full_disk.py", "test_corrupt_state.py", "test_reeval.py", "test_budget.py", "test_search.py",
                 "test_pareto.py", "test_scheduler_registry.py", "test_concurrent.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="real Fashion-MNIST missing: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, n_train=200, n_test=60, seed=0)
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar100

    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root, n_train=300, n_test=100, seed=0)
    return root


def tiny_overrides(data_root: Path, out: Path, *extra: str) -> list[str]:
    """Compose the real config, then shrink it: tiny model, one small epoch, CPU."""
    return [
        "data=cifar10", f"data.dataset_path={data_root}", "data.download=false",
        "data.train_batch_size=32", "data.inference_batch_size=64",
        "model=small_cnn", "model.model_name=tiny_cnn",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", f"run.output_dir={out}", "optimizer=adamw", "optimizer.lr=0.02",
        *extra,
    ]


@pytest.fixture
def tiny_cfg(cifar10_root, tmp_path):
    from tune_cifar.config import load_config

    def make(*extra: str):
        return load_config(tiny_overrides(cifar10_root, tmp_path / "outputs", *extra))

    return make


def run_stopped_trial(cfg, arrays, callbacks: list) -> bool:
    """A trial stopped the way Ray stops one (ASHA): SystemExit from inside its first report.

    Caught as tune_cifar.trainable does (pytest.raises would keep the traceback, and the model with
    it); returns whether it was stopped."""
    import sys

    import pytorch_lightning as pl

    from tune_cifar.training import fit as run_trial

    class StopAtReport(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            sys.exit(0)

    try:
        run_trial(cfg, arrays, None, [*callbacks, StopAtReport()])
    except SystemExit:
        return True
    return False


def write_space(tmp_path: Path, data_root: Path, search: dict, points=None, searcher: str = "tpe",
                name: str = "tiny.yaml") -> Path:
    """A tiny search-space file over generated CIFAR data (tiny_cnn, optimizer and lr)."""
    doc = {
        "base": ["data=cifar10", f"data.dataset_path={data_root}", "data.download=false",
                 "data.val_fraction=0.25", "data.train_batch_size=32", "data.inference_batch_size=128",
                 "model=small_cnn", "model.model_name=tiny_cnn", "trainer.log_every_n_steps=1"],
        "params": {
            "optimizer.optimizer": {"choice": ["sgd", "adamw"]},
            "optimizer.lr": {"loguniform": [1e-5, 0.05]},
            "optimizer.momentum": {"uniform": [0.8, 0.95], "when": {"optimizer.optimizer": "sgd"}},
        },
        # no re-evaluation unless a test asks for it (search.final): it would add trials to every search
        "search": {"experiment": "tiny", "storage_path": str(tmp_path / "outputs"), "final": {"top_k": 0}, **search},
    }
    if points:
        doc["search"]["searcher"] = {"name": searcher, "seed": 0, "points_to_evaluate": points}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
