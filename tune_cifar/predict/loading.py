"""What is loaded: an export folder or a training checkpoint, as a :class:`Loaded` model."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..checkpoint import read_checkpoint
from ..data.arrays import preview
from ..errors import UserError
from ..export import FORMAT, MANIFEST, MODEL_FILE, find_best
from .inference import run_precision
from .network import InferenceModel, build_network

KINDS = {
    "classification_binary": "binary",
    "classification_multiclass": "multiclass",
    "classification_multilabel": "multilabel",
}


@dataclass
class Loaded:
    """A model ready for inference, with what is known about how it was trained."""

    source: Path  # export folder or checkpoint file
    source_kind: str  # "export" or "checkpoint"
    net: InferenceModel
    hparams: dict
    config: dict | None  # the resolved training config, None when not found
    reported: dict  # test metrics recorded with the model, e.g. {"accuracy/test": 0.9}
    home: Path  # predict/<timestamp> goes here by default

    @property
    def classes(self) -> list[str]:
        return list(self.hparams["input_spec"]["classes"])

    @property
    def kind(self) -> str:
        return KINDS[self.hparams["task"]["task"]]

    @property
    def in_chans(self) -> int:
        return int(self.hparams["input_spec"]["in_chans"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.hparams["input_spec"]["image_size"]
        return int(h), int(w)

    @property
    def model_name(self) -> str:
        spec = self.hparams["model_spec"]
        return f"{spec['provider']}/{spec['name']}"

    def precision(self, cfg, device) -> str:
        """The precision to run with on ``device``: the config's, ``auto`` being the training one on a GPU."""
        return run_precision(cfg.trainer.precision, self.hparams.get("trained_precision"), device)


def _json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    return data if isinstance(data, dict) else {}


def _yaml_file(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections")
    return data


def _test_metrics(metrics: dict) -> dict:
    """Recorded test metrics: ``{"test": {...}}`` (train) or flat ``.../test`` keys (search export)."""
    if isinstance(metrics.get("test"), dict):
        metrics = metrics["test"]
    return {k: float(v) for k, v in metrics.items()
            if isinstance(k, str) and k.endswith("/test") and isinstance(v, (int, float))}


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


def load_export(path: Path) -> Loaded:
    path = Path(path)
    if not path.exists():
        raise UserError(f"export folder {path} not found; pass a folder written by tune_cifar.search "
                        f"(<output_dir>/<experiment>/best) or use --best")
    if not path.is_dir():
        raise UserError(f"--export {path} is a file, not an export folder; for a training checkpoint "
                        f"use --checkpoint {path}")
    manifest = _json_file(path / MANIFEST)
    if not manifest:
        raise UserError(f"{path} is not a tune_cifar export (no {MANIFEST}); for a training checkpoint "
                        f"use --checkpoint FILE")
    if manifest.get("format") != FORMAT:
        raise UserError(f"export {path} has format {manifest.get('format')!r}; this version reads {FORMAT}")
    model_file = path / str(manifest.get("model") or MODEL_FILE)
    ckpt = read_checkpoint(model_file)
    hp = ckpt["hyper_parameters"]
    listed = manifest.get("classes")
    if listed and list(listed) != list(hp["input_spec"]["classes"]):
        raise UserError(f"{path}: {MANIFEST} lists classes {preview(listed)} but {model_file.name} has "
                        f"{preview(hp['input_spec']['classes'])}: the files come from different models")
    config = _yaml_file(path / "config.yaml")
    _check_config_matches(path, hp, config)
    net = build_network(ckpt, model_file)
    return Loaded(path, "export", net, hp, config, _test_metrics(_json_file(path / "metrics.json")),
                  home=path.resolve().parent)


def load_checkpoint(path: Path) -> Loaded:
    path = Path(path)
    if path.is_dir():
        hint = f"--export {path}" if (path / MANIFEST).is_file() else "--checkpoint <folder>/checkpoints/best.ckpt"
        raise UserError(f"--checkpoint {path} is a folder; use {hint}")
    if not path.exists():
        raise UserError(f"checkpoint {path} not found; training writes "
                        f"outputs/<experiment>/<run>/checkpoints/best.ckpt (python -m tune_cifar.train)")
    ckpt = read_checkpoint(path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    config = _yaml_file(run_dir / "config.yaml")
    results = _json_file(run_dir / "results.json")
    best = results.get("best_checkpoint")
    reported = {}
    if isinstance(best, str) and (run_dir / best).resolve() == path.resolve():
        reported = _test_metrics(results)  # results.json's test metrics are those of best.ckpt
    net = build_network(ckpt, path)
    return Loaded(path, "checkpoint", net, ckpt["hyper_parameters"], config, reported, home=run_dir.resolve())


def load(args: argparse.Namespace) -> Loaded:
    if args.export:
        return load_export(Path(args.export))
    if args.checkpoint:
        return load_checkpoint(Path(args.checkpoint))
    return load_export(find_best(args.output_dir))
