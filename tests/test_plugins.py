"""Extension points reach a search: a registered optimizer is searched over, in this process and, through
TUNE_CIFAR_PLUGINS, in fresh processes (a user's command, Ray's trial workers)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tune_cifar.errors import UserError

TOY_PLUGIN = '''
import torch

from tune_cifar.optim import register_optimizer


@register_optimizer("toy")
def toy(groups, cfg):
    print(f"TOY OPTIMIZER lr={cfg.lr}", flush=True)
    return torch.optim.SGD(groups, lr=cfg.lr)
'''


def _space(tmp_path: Path, data_root: Path, **search) -> Path:
    path = tmp_path / "toy_space.yaml"
    path.write_text(yaml.safe_dump({
        "base": ["data=cifar10", f"data.dataset_path={data_root}", "data.download=false", "data.val_fraction=0.25",
                 "data.train_batch_size=32", "model=small_cnn", "model.model_name=tiny_cnn",
                 "trainer.enable_progress_bar=false"],
        "params": {"optimizer.optimizer": {"choice": ["sgd", "toy"]}, "optimizer.lr": {"loguniform": [1e-3, 0.05]}},
        "search": {"experiment": "toy", "storage_path": str(tmp_path / "outputs"),
                   "scheduler": {"name": "fifo", "max_epochs": 1}, "final": {"top_k": 0}, **search},
    }, sort_keys=False))
    return path


def _plugin_env(tmp_path: Path) -> dict:
    """A user's environment with their plugin module importable and named in TUNE_CIFAR_PLUGINS."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_plugin.py").write_text(TOY_PLUGIN)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TUNE_CIFAR_PLUGINS": "toy_plugin"}


def test_a_registered_optimizer_is_searched_over(tmp_path, cifar10_root, monkeypatch):
    """Registered in this process: a space choosing it validates and a --debug trial trains with it."""
    from tune_cifar import optim
    from tune_cifar.search.cli import main
    from tune_cifar.search.space import load_space

    path = _space(tmp_path, cifar10_root)
    with pytest.raises(UserError, match=r"params.optimizer.optimizer: value 'toy' .* allowed: adam, adamw, sgd$"):
        load_space(path)
    monkeypatch.setattr(optim, "OPTIMIZERS", dict(optim.OPTIMIZERS))  # unregistered again after the test
    built = []

    @optim.register_optimizer("toy")
    def toy(groups, cfg):
        built.append(cfg.lr)
        return torch.optim.SGD(groups, lr=cfg.lr)

    assert load_space(path).params[0].dists[None].args == ("sgd", "toy")
    out = main([str(path), "--debug", "--params", json.dumps({"optimizer.optimizer": "toy", "optimizer.lr": 0.01}),
                "trainer.fast_dev_run=true"])
    assert out["values"]["optimizer.optimizer"] == "toy" and built == [0.01]  # the trial's optimizer
    assert math.isfinite(out["val"]["loss/val"])


def test_plugins_named_in_the_environment_are_registered_in_a_fresh_process(tmp_path, cifar10_root):
    path = _space(tmp_path, cifar10_root)
    cmd = [sys.executable, "-m", "tune_cifar.search", str(path), "--debug", "--params",
           '{"optimizer.optimizer": "toy"}', "trainer.fast_dev_run=true"]
    env = _plugin_env(tmp_path)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TOY OPTIMIZER lr=" in proc.stdout and '"optimizer.optimizer": "toy"' in proc.stdout
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**env, "TUNE_CIFAR_PLUGINS": "toy_plugin, no_such_plugin"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "TUNE_CIFAR_PLUGINS: cannot import no_such_plugin" in bad.stderr


@pytest.mark.slow
def test_ray_trials_get_the_plugins_of_the_driver(tmp_path, cifar10_root):
    """A real search (local Ray started by the search): each trial's worker process validates and builds the
    toy optimizer from TUNE_CIFAR_PLUGINS, and the best trial is exported."""
    path = _space(tmp_path, cifar10_root, num_samples=1, resources={"cpu": 1},
                  searcher={"points_to_evaluate": [{"optimizer.optimizer": "toy", "optimizer.lr": 0.01}]})
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(path)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=_plugin_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = tmp_path / "outputs" / "toy" / "best"
    assert json.loads((export / "hyperparameters.json").read_text())["optimizer.optimizer"] == "toy"
