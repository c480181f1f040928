"""What is loaded: an export folder or a training checkpoint, as a :class:`Loaded` model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..classifier import Classifier
from ..errors import UserError
from ..evaluation import run_precision
from ..export import MANIFEST, find_best, read_export, read_json, read_yaml
from ..metrics import in_stage
from .options import Options


@dataclass
class Loaded:
    """A model ready for inference, with what is known about how it was trained."""

    source: Path  # export folder or checkpoint file
    source_kind: str  # "export" or "checkpoint"
    net: Classifier
    config: dict | None  # the resolved training config, None when not found
    reported: dict  # test metrics recorded with the model, e.g. {"accuracy/test": 0.9}
    home: Path  # predict/<timestamp> goes here by default
    # a search's re-evaluation of the exported configuration (search.final): {"metric", "mean", "se", "n", ...}
    reeval: dict | None = None

    @property
    def hparams(self) -> dict:
        return self.net.hparams_dict()

    @property
    def classes(self) -> list[str]:
        return self.net.classes

    @property
    def kind(self) -> str:
        return self.net.kind

    @property
    def in_chans(self) -> int:
        return self.net.input_spec.in_chans

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.net.input_spec.image_size
        return int(h), int(w)

    @property
    def model_name(self) -> str:
        return self.net.model_name

    def precision(self, cfg, device) -> str:
        """The precision to run with on ``device``: the config's, ``auto`` being the training one on a GPU."""
        return run_precision(cfg.trainer.precision, self.net.extra_hparams.get("trained_precision"), device)


def _test_metrics(metrics: dict) -> dict:
    """Recorded test metrics: ``{"test": {...}}`` (train) or flat ``.../test`` keys (search export)."""
    if isinstance(metrics.get("test"), dict):
        metrics = metrics["test"]
    return {k: float(v) for k, v in metrics.items() if in_stage(k, "test") and isinstance(v, (int, float))}


def load_export(path: Path) -> Loaded:
    path = Path(path)
    if not path.exists():
        raise UserError(f"export folder {path} not found; pass a folder written by tune_cifar.search "
                        f"(<output_dir>/<experiment>/best) or use --best")
    if not path.is_dir():
        raise UserError(f"--export {path} is a file, not an export folder; for a training checkpoint "
                        f"use --checkpoint {path}")
    if not (path / MANIFEST).is_file():
        raise UserError(f"{path} is not a tune_cifar export (no {MANIFEST}); for a training checkpoint "
                        f"use --checkpoint FILE")
    exp = read_export(path)
    reeval = exp.metrics.get("reeval")
    return Loaded(path, "export", exp.classifier, exp.config, _test_metrics(exp.metrics), home=_home_of_export(path),
                  reeval=reeval if isinstance(reeval, dict) else None)


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
    config = read_yaml(run_dir / "config.yaml")
    results = read_json(run_dir / "results.json")
    best = results.get("best_checkpoint")
    reported = {}
    if isinstance(best, str) and (run_dir / best).resolve() == path.resolve():
        reported = _test_metrics(results)  # results.json's test metrics are those of best.ckpt
    net = Classifier.from_checkpoint(path, ckpt)
    return Loaded(path, "checkpoint", net, config, reported, home=run_dir.resolve())


def load(options: Options) -> Loaded:
    if options.export:
        return load_export(Path(options.export))
    if options.checkpoint:
        return load_checkpoint(Path(options.checkpoint))
    return load_export(find_best(options.output_dir))


def _home_of_export(path: Path) -> Path:
    """Where predict/<time>/ goes for an export: beside it. A Pareto-front member
    (<experiment>/pareto/<n>_<trial>/) is the exception: the search replaces the whole pareto/
    folder at its next export, so its predictions go beside pareto/, as --best's go beside best/."""
    parent = path.resolve().parent
    return parent.parent if parent.name == "pareto" else parent

