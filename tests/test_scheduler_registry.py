"""A scheduler registration declares its parts (registry.SchedulerParts) and every stage asks it: a toy
scheduler from a user's plugin (TUNE_CIFAR_PLUGINS) brings its own search algorithm, a trial callback, an extra
results.csv column and no Optuna study, and a ``--debug`` trial and a real search use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

TOY_SCHEDULER = '''
import os
from pathlib import Path

import pytorch_lightning as pl

from tune_cifar.search.registry import SchedulerParts, register_scheduler

MARKS = Path(os.environ["TOY_MARKS"])  # the test reads what each part left here


class Marker(pl.Callback):
    """The trial callback: a file per fit, and a metric each Ray report carries (``reported``)."""

    reported = ("toy/marked",)

    def on_fit_start(self, trainer, pl_module):
        (MARKS / f"callback_{os.getpid()}_{id(self)}").touch()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log("toy/marked", 1.0)


def build(space):
    from ray.tune.schedulers import FIFOScheduler

    (MARKS / "build").touch()
    return FIFOScheduler()


def search_alg(space):
    """Its own searcher: Ray's variant generator over a grid of each choice (every value once)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    (MARKS / "search_alg").touch()
    return BasicVariantGenerator(), {p.key: tune.grid_search(list(p.dists[None].args)) for p in space.sampled}


def columns(reports, events):
    marked = int(reports["toy/marked"].notna().sum()) if reports is not None and "toy/marked" in reports else 0
    return {"toy_marked": marked}


register_scheduler("toy_grid", SchedulerParts(build=build, search_alg=search_alg, uses_study=False,
                                              trial_callbacks=lambda cfg: [Marker()], results_columns=columns))
'''


def _space(tmp_path: Path, data_root: Path) -> Path:
    path = tmp_path / "toy_grid.yaml"
    path.write_text(yaml.safe_dump({
        "base": ["data=cifar10", f"data.dataset_path={data_root}", "data.download=false", "data.val_fraction=0.25",
                 "data.train_batch_size=32", "model=small_cnn", "model.model_name=tiny_cnn", "optimizer=sgd",
                 "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false"],
        "params": {"optimizer.lr": {"choice": [0.01, 0.02]}},
        "search": {"experiment": "toy", "storage_path": str(tmp_path / "outputs"), "num_samples": 1,
                   # one trial at a time: one Ray worker, reused, imports torch and Lightning once
                   "max_concurrent_trials": 1, "resources": {"cpu": 1}, "scheduler": {"name": "toy_grid", "max_epochs": 1},
                   "final": {"top_k": 0}},
    }, sort_keys=False))
    return path


def _env(tmp_path: Path, marks: Path) -> dict:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "toy_scheduler.py").write_text(TOY_SCHEDULER)
    marks.mkdir()
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TUNE_CIFAR_PLUGINS": "toy_scheduler", "TOY_MARKS": str(marks)}


def _run(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(tmp_path / "toy_grid.yaml"), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_plugin_schedulers_parts_are_used_by_debug_and_a_search(tmp_path, cifar10_root):
    _space(tmp_path, cifar10_root)

    marks = tmp_path / "debug_marks"
    _run(tmp_path, _env(tmp_path, marks), "--debug")
    assert len(list(marks.glob("callback_*"))) == 1  # the trial callback, in the --debug trial
    assert not (marks / "search_alg").exists()  # --debug samples one trial itself: no Ray searcher

    marks = tmp_path / "search_marks"
    proc = _run(tmp_path, _env(tmp_path, marks))
    assert (marks / "build").exists() and (marks / "search_alg").exists()  # the driver built both
    callbacks = list(marks.glob("callback_*"))  # callback_<pid>_<id>: one per trial, in Ray's worker processes
    assert len(callbacks) == 2
    # search.max_concurrent_trials=1 holds for the toy's own variant generator too (Tune would ignore it): one
    # trial at a time, so the second trial reused the first one's process
    assert len({c.name.split("_")[1] for c in callbacks}) == 1, callbacks
    run_dir = next((tmp_path / "outputs" / "toy").glob("20*"))
    table = pd.read_csv(run_dir / "results.csv")
    # the toy's grid, not the Optuna study: both values once (num_samples=1 repeats the grid once)
    assert sorted(table["optimizer.lr"]) == [0.01, 0.02]
    assert list(table["toy_marked"]) == [1, 1]  # its column, from the metric its callback had reported
    assert not (run_dir / "optuna.db").exists()  # uses_study=False: no study, no importance
    assert "importance" not in proc.stdout.lower() and (tmp_path / "outputs" / "toy" / "best").is_dir()


def test_no_study_needs_a_search_algorithm_of_its_own():
    from tune_cifar.search.registry import SchedulerParts

    with pytest.raises(ValueError, match="uses_study=False needs a search_alg"):
        SchedulerParts(build=lambda space: None, uses_study=False)
