"""The wheel works outside the repository: built, installed (not editable) into a fresh folder, run from
a temporary folder with a user's environment. Its configs and search spaces come from the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _user_env(target: Path) -> dict:
    """A user's environment: the installed wheel on PYTHONPATH, the venv's interpreter for the
    dependencies. The venv's editable install of a checkout comes after PYTHONPATH in the import
    order; the test asserts that ``tune_cifar`` is imported from ``target``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TUNE_CIFAR"))}
    env["PYTHONPATH"] = str(target)
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources and ``pip install --target`` it (no deps)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "tune_cifar", src / "tune_cifar", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, cwd=root)
    (wheel,) = (root / "dist").glob("tune_cifar-*.whl")
    target = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, cwd=root)
    return target


def _start(target: Path, cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=_user_env(target), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_wheel_ships_configs_and_spaces(installed):
    files = {p.relative_to(installed).as_posix() for p in (installed / "tune_cifar").rglob("*") if p.is_file()}
    ours = {p.relative_to(REPO).as_posix() for d in ("conf", "search_spaces")
            for p in (REPO / "tune_cifar" / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert ours and ours <= files
    assert "tune_cifar/conf/config.yaml" in files and "tune_cifar/search_spaces/cpu_small.yaml" in files


def test_installed_wheel_trains_and_searches_outside_the_repo(installed, cifar10_root, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    # config groups of the user's own, next to ours (--config-dir), used by name: a model and a data group
    mine = work / "my_configs" / "model"
    mine.mkdir(parents=True)
    (mine / "my_net.yaml").write_text("defaults:\n  - small_cnn\n  - _self_\nmodel_name: tiny_cnn\n")
    (work / "my_configs" / "data").mkdir()
    (work / "my_configs" / "data" / "tiny_cifar.yaml").write_text(
        f"defaults:\n  - cifar10\n  - _self_\ndataset_path: {cifar10_root}\ndownload: false\n")

    # The four commands do not depend on each other: they run at once (each spends seconds importing torch).
    where = _start(installed, work, "-c", "import tune_cifar, tune_cifar.config as c; "
                                          "print(tune_cifar.__file__); print(c.CONFIG_DIR)")
    train = _start(installed, work, "-m", "tune_cifar.train", "--config-dir", "my_configs", "model=my_net",
                   "data=cifar10", f"data.dataset_path={cifar10_root}", "data.download=false",
                   "trainer.accelerator=cpu", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
                   "run.output_dir=outputs")
    # a bundled space by name (no such file here), --debug: one trial without Ray, on the user's data group
    search = _start(installed, work, "-m", "tune_cifar.search", "cpu_small", "--debug", "trainer.fast_dev_run=true",
                    "--config-dir", "my_configs", "data=tiny_cifar", "data.train_subset=100", "data.val_subset=50",
                    "data.test_subset=50", '--params={"model.model_name": "tiny_cnn"}', "--output-dir", "searches")
    # a name that is neither a file here nor bundled
    missing = _start(installed, work, "-m", "tune_cifar.search", "nope", "--debug")
    where, train, search, missing = map(_done, (where, train, search, missing))

    assert where.returncode == 0, where.stderr
    module_file, config_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(installed) and Path(config_dir).is_relative_to(installed)

    assert train.returncode == 0, train.stderr[-3000:]
    assert "accuracy/test=" in train.stdout
    (config_yaml,) = (work / "outputs").rglob("config.yaml")
    assert "model_name: tiny_cnn" in config_yaml.read_text()

    assert search.returncode == 0, search.stderr[-3000:]
    assert "debug trial:" in search.stdout and "validation: accuracy/val=" in search.stdout
    (config_yaml,) = (work / "searches" / "fashion_cpu_small").glob("debug_*/config.yaml")
    assert f"dataset_path: {cifar10_root}" in config_yaml.read_text()

    # the missing name: one line naming the bundled ones, exit 2
    from tune_cifar.packaged import bundled_spaces

    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "tune_cifar.search: error: nope: no such search-space file here and no bundled space of that name; "
        f"bundled: {', '.join(bundled_spaces())}"]  # the wheel's spaces are the checkout's
