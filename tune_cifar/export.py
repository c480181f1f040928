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
from typing import TYPE_CHECKING, Callable

import torch
import yaml

from .atomic import is_no_space, no_space, torch_save, write_text
from .errors import UserError

if TYPE_CHECKING:  # imported where needed so that find_best stays light
    from .classifier import Classifier

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
    classifier: Classifier
    config: dict | None  # None: no config.yaml
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


def write_export(dest: Path, source: Path | Classifier | dict, config: dict, metrics: dict | None = None,
                 hyperparameters: dict | None = None, experiment: str = "",
                 link_root: Path | None = None, before_replace: Callable[[], None] | None = None) -> Path:
    """Write an export folder of a model (a Lightning checkpoint file, a Classifier, or the
    ``{"state_dict", "hyper_parameters"}`` of one); point ``link_root/best`` at it.

    ``before_replace`` is called once the new export is complete, before it replaces the old one: if it
    raises (the search was interrupted), the new one is removed and nothing else changed."""
    from .classifier import Classifier

    if isinstance(source, (str, Path)):
        source = Classifier.from_checkpoint(source)  # checked: only a model that loads is exported
    if isinstance(source, Classifier):
        source = {"state_dict": source.state_dict(), "hyper_parameters": source.hparams_dict()}
    ckpt = source
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        if is_no_space(err):
            raise no_space(tmp.parent, err) from None
        raise
    try:
        _write_files(tmp, ckpt, config, metrics, hyperparameters, experiment)
        if before_replace is not None:
            before_replace()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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



def _write_files(tmp: Path, ckpt: dict, config: dict, metrics, hyperparameters, experiment: str) -> None:
    torch_save({"state_dict": ckpt["state_dict"], "hyper_parameters": ckpt["hyper_parameters"]}, tmp / MODEL_FILE)
    write_text(tmp / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_text(tmp / "metrics.json", json.dumps(metrics or {}, indent=2, default=float))
    write_text(tmp / "hyperparameters.json", json.dumps(hyperparameters or {}, indent=2, default=str))
    write_text(tmp / "versions.json", json.dumps(package_versions(), indent=2))
    manifest = {"format": FORMAT, "experiment": experiment, "model": MODEL_FILE,
                "classes": list(ckpt["hyper_parameters"]["input_spec"]["classes"]),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_text(tmp / MANIFEST, json.dumps(manifest, indent=2))  # last: a folder without it is no export


def point_best(root: Path, export_dir: Path) -> Path:
    """Atomically make ``root/best`` a relative link to ``export_dir``."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / BEST_LINK
    target = os.path.relpath(export_dir.resolve(), root.resolve())
    tmp = root / f".{BEST_LINK}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(target, tmp)
    except OSError as err:  # a full disk: the old link stays
        if is_no_space(err):
            raise no_space(root, err) from None
        raise
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


def read_json(path: Path) -> dict:
    """A JSON object file of an export or run folder; {} when absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    return data if isinstance(data, dict) else {}


def read_yaml(path: Path) -> dict | None:
    """A config.yaml of an export or run folder; None when absent."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections")
    return data


def read_export(path: str | Path) -> Export:
    """Load an export folder (never imports Ray or Lightning), its files checked against each other."""
    from .checkpoint import read_checkpoint
    from .classifier import Classifier
    from .data.arrays import preview

    path = Path(path)
    manifest = read_json(path / MANIFEST)
    if not manifest:
        raise UserError(f"{path} is not a tune_cifar export (no {MANIFEST})")
    if manifest.get("format") != FORMAT:
        raise UserError(f"export {path} has format {manifest.get('format')!r}; this version reads {FORMAT}")
    model_file = path / str(manifest.get("model") or MODEL_FILE)
    ckpt = read_checkpoint(model_file)
    hp = ckpt["hyper_parameters"]
    listed = manifest.get("classes")
    if listed and list(listed) != list(hp["input_spec"]["classes"]):
        raise UserError(f"{path}: {MANIFEST} lists classes {preview(listed)} but {model_file.name} has "
                        f"{preview(hp['input_spec']['classes'])}: the files come from different models")
    config = read_yaml(path / "config.yaml")
    _check_config_matches(path, hp, config)
    classifier = Classifier.from_checkpoint(model_file, ckpt)
    return Export(path=path, classifier=classifier, config=config, metrics=read_json(path / "metrics.json"),
                  hyperparameters=read_json(path / "hyperparameters.json"), manifest=manifest)


def _check_config_matches(path: Path, hp: dict, config: dict | None) -> None:
    """An export's config.yaml and model.pt must describe the same model."""
    model = (config or {}).get("model")
    if not isinstance(model, dict):
        return
    spec = hp["model_spec"]
    said = (model.get("provider_name"), model.get("model_name"))
    if said != (spec.get("provider"), spec.get("name")):
        raise UserError(f"{path}: {MODEL_FILE} holds {spec.get('provider')}/{spec.get('name')} but config.yaml "
                        f"says {said[0]}/{said[1]}: the files come from different models; re-export it")
