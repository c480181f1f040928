"""Exported models: a self-contained folder that predict loads without Ray or config files.

Layout of ``<output_dir>/<experiment>/best/`` (all paths inside are relative)::

    export.json           manifest: format, experiment, metric, created, file names
    model.pt              {"state_dict", "hyper_parameters"}; torch.load(weights_only=True) reads it
    config.yaml           the trial's resolved config
    metrics.json          the metrics of the exported trial (best epoch) and test metrics if known
    hyperparameters.json  the sampled hyperparameters of the trial
    versions.json         package versions that produced it

``<output_dir>/best`` is a relative symbolic link to the latest export.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from .checkpoint import read_checkpoint
from .errors import UserError

if TYPE_CHECKING:  # .system imports Lightning; imported where needed so that find_best stays light
    from .system import ClassificationSystem

FORMAT = 1
MODEL_FILE = "model.pt"
MANIFEST = "export.json"
BEST_LINK = "best"
_PACKAGES = ("tune_cifar", "torch", "torchvision", "pytorch-lightning", "timm", "torchmetrics",
             "ray", "optuna", "hydra-core")


@dataclass
class Export:
    """A loaded export."""

    path: Path
    system: ClassificationSystem
    config: dict
    metrics: dict
    hyperparameters: dict
    manifest: dict


def package_versions() -> dict:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_export(dest: Path, checkpoint: Path, config: dict, metrics: dict | None = None,
                 hyperparameters: dict | None = None, experiment: str = "",
                 link_root: Path | None = None) -> Path:
    """Write an export folder from a Lightning checkpoint; point ``link_root/best`` at it."""
    ckpt = read_checkpoint(checkpoint)
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"state_dict": ckpt["state_dict"], "hyper_parameters": ckpt["hyper_parameters"]},
               tmp / MODEL_FILE)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=2, default=float))
    (tmp / "hyperparameters.json").write_text(json.dumps(hyperparameters or {}, indent=2, default=str))
    (tmp / "versions.json").write_text(json.dumps(package_versions(), indent=2))
    manifest = {"format": FORMAT, "experiment": experiment, "model": MODEL_FILE,
                "classes": list(ckpt["hyper_parameters"]["input_spec"]["classes"]),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    # Replace the old export only once the new one is complete.
    old = dest.with_name(dest.name + ".old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    if link_root is not None:
        point_best(Path(link_root), dest)
    return dest


def point_best(root: Path, export_dir: Path) -> Path:
    """Atomically make ``root/best`` a relative link to ``export_dir``."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / BEST_LINK
    target = os.path.relpath(export_dir.resolve(), root.resolve())
    tmp = root / f".{BEST_LINK}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


def find_best(output_dir: str | Path = "outputs") -> Path:
    """The latest export, or a UserError saying what was looked for and how to make one."""
    link = Path(output_dir) / BEST_LINK
    if not (link / MANIFEST).is_file():
        raise UserError(
            f"no exported model at {link} (looked for {link / MANIFEST}); run a search first: "
            f"python -m tune_cifar.search search_spaces/cpu_small.yaml, or pass --export DIR / --checkpoint FILE")
    return link.resolve()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"export file {path} is not valid JSON: {err}") from None


def read_export(path: str | Path) -> Export:
    """Load an export folder (never imports Ray)."""
    from .system import load_system

    path = Path(path)
    manifest = _read_json(path / MANIFEST)
    if not manifest:
        raise UserError(f"{path} is not a tune_cifar export (no {MANIFEST})")
    if manifest.get("format") != FORMAT:
        raise UserError(f"export {path} has format {manifest.get('format')!r}; this version reads {FORMAT}")
    system = load_system(path / manifest.get("model", MODEL_FILE))
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    except yaml.YAMLError as err:
        raise UserError(f"export file {path / 'config.yaml'} is not valid YAML: {str(err).splitlines()[0]}") from None
    return Export(path=path, system=system, config=config or {}, metrics=_read_json(path / "metrics.json"),
                  hyperparameters=_read_json(path / "hyperparameters.json"), manifest=manifest)
