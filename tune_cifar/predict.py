"""Use a trained model: ``python -m tune_cifar.predict [--best | --export DIR | --checkpoint FILE]``.

No Ray and no Lightning Trainer: the network is rebuilt from its weights file, read with
``torch.load(weights_only=True)``, and run in a plain batched ``torch.inference_mode`` loop
(GPU when available, batches of ``data.inference_batch_size``).

What is loaded (one of; ``--best`` when none is given):
  --best              the latest export, ``<output-dir>/best`` (written by tune_cifar.search)
  --export DIR        an export folder (``<experiment>/best``, movable anywhere)
  --checkpoint FILE   a training checkpoint (``outputs/<experiment>/<run>/checkpoints/best.ckpt``)

What is done:
  (default)           evaluate on the test split of the dataset in the model's config:
                      metrics.json (accuracy, per-class accuracy, confusion matrix, the task's
                      metrics) and predictions.csv (sample, true, predicted, top-k probabilities)
  --images PATH ...   classify image files and folders of PNG/JPEG (converted and resized to the
                      model's input): predictions.csv; unreadable files are reported and skipped
  --to onnx|torchscript
                      write the model (uint8 NCHW images in, logits out) and model.<format>.json
                      (input, output, classes, threshold), after checking its outputs against PyTorch's

The config is the export's config.yaml (a checkpoint: its run's config.yaml), changed by
``--data-path``, ``--batch-size`` and trailing ``key=value`` overrides (e.g. ``data.test_subset=null``).
Binary and multilabel models decide with a threshold (``--threshold``, default task.threshold).
Outputs go to ``--out DIR``, by default ``<folder holding the export or run>/predict/<timestamp>/``.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # start-up is measured from here (before torch is imported)

import argparse  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterable, Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

# Light imports only, so that start-up to the first batch is little more than torch's import:
# torchmetrics and Lightning (through tune_cifar.system) are imported after inference, to compute
# the metrics of a dataset evaluation, and never for --images / --to.
from .config import Config, TaskConfig, _build, config_from_dict, set_dotted  # noqa: E402
from .checkpoint import normalization_buffers, normalize, read_checkpoint  # noqa: E402
from .errors import UserError, cli_entry  # noqa: E402
from .export import FORMAT, MANIFEST, MODEL_FILE, find_best  # noqa: E402
from .models import ModelSpec, build_model  # noqa: E402

KINDS = {
    "classification_binary": "binary",
    "classification_multiclass": "multiclass",
    "classification_multilabel": "multilabel",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # each with a model.<format>.json
PRINT_ROWS = 20  # at most this many image predictions / confusion-matrix classes are printed


# --------------------------------------------------------------------------- the network


class InferenceModel(nn.Module):
    """The trained network and its input normalisation: uint8 (or 0..255 float) [B, C, H, W] -> logits.

    Same submodule, buffers (``model``, ``mean``, ``std``) and arithmetic as
    ``ClassificationSystem.forward``, without Lightning; this is also what ``--to`` exports.
    """

    def __init__(self, model: nn.Module, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.channels_last = channels_last
        mean255, std255 = normalization_buffers(in_chans, mean, std)
        self.register_buffer("mean", mean255)
        self.register_buffer("std", std255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x, self.mean, self.std, self.channels_last))


def _preview(names: Sequence[str], n: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def build_network(ckpt: dict, path: Path) -> InferenceModel:
    """Rebuild the network from the checkpoint's hyper-parameters and load its weights strictly."""
    hp = ckpt["hyper_parameters"]
    try:
        spec = ModelSpec.from_dict(hp["model_spec"])
        inp = hp["input_spec"]
        in_chans, mean, std = int(inp["in_chans"]), list(inp["mean"]), list(inp["std"])
        if len(mean) != in_chans or len(std) != in_chans or not inp["classes"]:
            raise ValueError("input_spec mean/std/classes do not fit in_chans")
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: malformed hyper_parameters ({type(err).__name__}: {err})") from None
    net = InferenceModel(build_model(spec), in_chans, mean, std, bool(hp.get("channels_last", False)))
    state = {k: v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.") or k in ("mean", "std")}  # metric states are not weights
    what = f"{spec.provider}/{spec.name} with {spec.num_classes} outputs"
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
        detail = lines[0] if lines else str(err).strip().splitlines()[0]
        raise UserError(f"{path}: weights are from a different model than {what}: {detail[:200]}") from None
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({_preview(missing, 3)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_preview(unexpected, 3)})" if unexpected else ""]
        raise UserError(f"{path}: weights are from a different model than {what}: "
                        f"{'; '.join(p for p in parts if p)} parameter names")
    return net.eval()


# --------------------------------------------------------------------------- what is loaded


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
        raise UserError(f"{path}: {MANIFEST} lists classes {_preview(listed)} but {model_file.name} has "
                        f"{_preview(hp['input_spec']['classes'])}: the files come from different models")
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


# --------------------------------------------------------------------------- config


def parse_override(item: str) -> tuple[str, object]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or key[0] in "+~" or " " in key:
        raise UserError(f"override {item!r} must look like key=value, e.g. data.test_subset=null")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def make_config(loaded: Loaded, args: argparse.Namespace) -> Config:
    """The model's training config, changed by --data-path, --batch-size and key=value overrides."""
    if loaded.config is not None:
        data = loaded.config
    else:  # a checkpoint without its run folder: defaults, the dataset and task from the checkpoint
        data = Config().to_dict()
        data["data"].update(name=loaded.hparams["input_spec"].get("dataset") or "cifar10",
                            num_classes=len(loaded.classes), dataset_path="")
        data["task"] = dict(loaded.hparams["task"])
        data["optimizer"]["metrics"] = dict(loaded.hparams.get("optimizer", {}).get("metrics") or {"accuracy": {}})
    data = json.loads(json.dumps(data))  # deep copy
    pairs = [parse_override(item) for item in args.overrides]
    if args.data_path is not None:
        pairs.insert(0, ("data.dataset_path", args.data_path))
    if args.batch_size is not None:
        pairs.insert(0, ("data.inference_batch_size", args.batch_size))
    for key, value in pairs:
        section = data.get(key) if "." not in key else None
        if isinstance(section, dict) and not isinstance(value, dict):
            raise UserError(f"override {key}={value}: config groups cannot be swapped here; set keys instead, "
                            f"e.g. data.name=cifar100 data.num_classes=100 data.dataset_path=DIR")
        set_dotted(data, key, value)
    return config_from_dict(data)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def autocast_for(device: torch.device, precision: str):
    """Mixed precision as in training (trainer.precision); full float32 otherwise."""
    if device.type == "cuda" and precision in ("auto", "bf16-mixed", "bf16-true", "16-mixed"):
        bf16 = precision.startswith("bf16") or (precision == "auto" and torch.cuda.is_bf16_supported())
        return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)
    if device.type == "cpu" and precision in ("bf16-mixed", "bf16-true"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


# --------------------------------------------------------------------------- inference


class Clock:
    """Seconds from the import of this module to the end of the first batch, and in all."""

    def __init__(self):
        self.first_batch_s: float | None = None

    def batch_done(self) -> None:
        if self.first_batch_s is None:
            self.first_batch_s = round(time.perf_counter() - _T0, 3)

    def as_dict(self) -> dict:
        return {"startup_to_first_batch_s": self.first_batch_s, "total_s": round(time.perf_counter() - _T0, 3)}


def infer(net: nn.Module, batches: Iterable[torch.Tensor], device: torch.device, precision: str,
          clock: Clock) -> Iterator[torch.Tensor]:
    """Logits (float32, on the CPU) of each uint8 batch."""
    net.to(device).eval()
    with torch.inference_mode(), autocast_for(device, precision):
        for x in batches:
            logits = net(x.to(device, non_blocking=True)).float().cpu()
            clock.batch_done()
            yield logits


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """As ClassificationSystem.probabilities: softmax; sigmoid P(class 1) [B] (binary); sigmoid [B, K]."""
    if kind == "multiclass":
        return logits.softmax(dim=1)
    probs = logits.sigmoid()
    return probs.squeeze(1) if kind == "binary" else probs


def decide(probs: torch.Tensor, kind: str, threshold: float) -> torch.Tensor:
    """Class index [B] (multiclass: argmax; binary: P(class 1) > threshold) or multi-hot [B, K]
    (probability > threshold), the rule torchmetrics applies when training reports its metrics."""
    if kind == "multiclass":
        return probs.argmax(dim=1)
    return (probs > threshold).long()


def class_probs(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """[B, K] probability per class (binary: P(class 0), P(class 1))."""
    return torch.stack([1 - probs, probs], dim=1) if kind == "binary" else probs


def label_text(row: torch.Tensor, kind: str, classes: Sequence[str]) -> str:
    if kind == "multilabel":
        return ";".join(c for c, on in zip(classes, row.tolist()) if on)
    return classes[int(row)]


def top_k_cells(p: torch.Tensor, k: int, classes: Sequence[str]) -> list:
    values, idx = p.topk(k)
    cells: list = []
    for v, i in zip(values.tolist(), idx.tolist()):
        cells += [classes[i], f"{v:.6f}"]
    return cells


def top_k_header(k: int) -> list[str]:
    return [c for i in range(1, k + 1) for c in (f"top{i}", f"top{i}_prob")]


def effective_threshold(args: argparse.Namespace, cfg: Config, kind: str) -> float | None:
    if kind == "multiclass":
        if args.threshold is not None:
            raise UserError("--threshold applies to binary and multilabel models; this one is multiclass "
                            "(the most probable class is predicted)")
        return None
    threshold = cfg.task.threshold if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        raise UserError(f"--threshold {threshold} must be between 0 and 1")
    return threshold


# --------------------------------------------------------------------------- dataset evaluation


def load_test_split(cfg: Config, loaded: Loaded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test split exactly as training made it (row numbers, uint8 images, labels), checked
    against the model. Lightning-free: the split comes from ``data.splits`` like the DataModule's."""
    from .data.sources import group_labels, load_source
    from .data.splits import split_indices

    d = cfg.data
    arrays = load_source(d.name, d.dataset_path, download=d.download, cifar100_labels=d.cifar100_labels,
                         image_size=d.image_size, labels_csv=d.labels_csv)
    if d.label_groups:
        arrays = group_labels(arrays, d.label_groups)
    where = f"{d.name} at {d.dataset_path or 'its default folder'}"
    model_classes = loaded.classes
    if arrays.num_classes != len(model_classes):
        raise UserError(f"class-count mismatch: the model has {len(model_classes)} classes ({_preview(model_classes)}) "
                        f"but {where} has {arrays.num_classes} ({_preview(arrays.classes)}); evaluate it on data "
                        f"with its classes (--data-path, data.* overrides)")
    if list(arrays.classes) != model_classes:
        raise UserError(f"class mismatch: the model's classes are {_preview(model_classes)} but {where} has "
                        f"{_preview(arrays.classes)}")
    if arrays.multilabel != (loaded.kind == "multilabel"):
        raise UserError(f"{where} has {'multi-hot' if arrays.multilabel else 'single-class'} labels but the "
                        f"model is {loaded.kind}")
    if arrays.in_chans != loaded.in_chans:
        raise UserError(f"{where} has {arrays.in_chans}-channel images but the model takes {loaded.in_chans}")
    if arrays.image_size != loaded.image_size:
        h, w = loaded.image_size
        hint = f"; set data.image_size={h}" if h == w else ""
        raise UserError(f"{where} has {arrays.image_size[0]}x{arrays.image_size[1]} images but the model "
                        f"was trained on {h}x{w}{hint}")
    ids = split_indices(len(arrays.train_x), len(arrays.test_x), d, cfg.run.seed)["test"]
    if len(ids) == 0:
        raise UserError(f"{where} has no test images")
    return ids, arrays.test_x, arrays.test_y


def compute_metrics(logits: torch.Tensor, y: torch.Tensor, loaded: Loaded, cfg: Config,
                    threshold: float | None) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and the task's metrics (torchmetrics)."""
    import torch.nn.functional as F
    from torchmetrics.classification import (BinaryConfusionMatrix, MulticlassConfusionMatrix,
                                             MultilabelConfusionMatrix)

    from .system import build_metric

    kind, classes = loaded.kind, loaded.classes
    n = len(classes)
    probs = probabilities(logits, kind)
    target = y.long()
    task = _build(TaskConfig, dict(loaded.hparams["task"]), "task")
    if threshold is not None:
        task = dataclasses.replace(task, threshold=threshold)
    out: dict = {}
    if kind == "multilabel":
        cm = MultilabelConfusionMatrix(num_labels=n, threshold=threshold)(probs, target)  # [K, 2, 2]
        per_class = ((cm[:, 0, 0] + cm[:, 1, 1]).double() / len(y)).tolist()
        hits = decide(probs, kind, threshold) == target
        out["accuracy"] = float(np.mean(per_class))  # mean label-wise accuracy, as the task's accuracy
        out["exact_match"] = float(hits.all(dim=1).double().mean())
        out["per_class_accuracy"] = dict(zip(classes, per_class))
        out["confusion_matrix"] = {
            "classes": classes, "layout": "per class [[true negatives, false positives], "
                                          "[false negatives, true positives]]",
            "matrix": cm.tolist()}
        loss = F.binary_cross_entropy_with_logits(logits, y.float())
    else:
        if kind == "multiclass":
            cm = MulticlassConfusionMatrix(num_classes=n)(probs, target)
            loss = F.cross_entropy(logits, target, label_smoothing=task.label_smoothing)
        else:
            cm = BinaryConfusionMatrix(threshold=threshold)(probs, target)
            loss = F.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())
        support = cm.sum(dim=1)
        out["accuracy"] = float(cm.diagonal().sum() / cm.sum())
        out["per_class_accuracy"] = {c: (float(cm[i, i] / support[i]) if support[i] else None)
                                     for i, c in enumerate(classes)}
        out["support"] = dict(zip(classes, support.tolist()))
        out["confusion_matrix"] = {"classes": classes, "layout": "rows: true class, columns: predicted class",
                                   "matrix": cm.tolist()}
    task_metrics = {"loss/test": float(loss)}
    for name, kwargs in cfg.optimizer.metrics.items():
        metric = build_metric(name, kwargs, task, n)
        metric.update(probs, target)
        task_metrics[f"{name}/test"] = float(metric.compute())
    out["metrics"] = task_metrics
    return out


def evaluate(loaded: Loaded, cfg: Config, args: argparse.Namespace, device: torch.device, clock: Clock) -> dict:
    threshold = effective_threshold(args, cfg, loaded.kind)
    ids, test_x, test_y = load_test_split(cfg, loaded)
    size = cfg.data.inference_batch_size
    pin = device.type == "cuda"

    def images():
        for start in range(0, len(ids), size):
            x = torch.from_numpy(test_x[ids[start: start + size]])
            yield x.pin_memory() if pin else x

    logits = torch.cat(list(infer(loaded.net, images(), device, cfg.trainer.precision, clock)))
    y = torch.from_numpy(test_y[ids])
    out_dir = make_out_dir(args, loaded)
    result = compute_metrics(logits, y, loaded, cfg, threshold)
    d = cfg.data
    summary = {
        "source": {"kind": loaded.source_kind, "path": str(loaded.source), "model": loaded.model_name},
        "data": {"name": d.name, "path": d.dataset_path, "split": "test", "samples": len(y),
                 "test_subset": d.test_subset, "seed": cfg.run.seed},
        "task": loaded.kind, "threshold": threshold, "device": str(device),
        **result,
        "reported": loaded.reported,
        "reported_on_this_split": bool(loaded.reported) and same_split(loaded, cfg),
        "timing": clock.as_dict(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_dataset_predictions(out_dir / "predictions.csv", ids, logits, y, loaded, threshold, args.top_k)
    print_evaluation(summary, out_dir)
    summary["out_dir"] = str(out_dir)
    return summary


def same_split(loaded: Loaded, cfg: Config) -> bool:
    """Whether ``cfg`` selects the same test images as the config the model was trained with."""
    if loaded.config is None:
        return False
    ignore = ("train_batch_size", "inference_batch_size", "num_workers", "on_device", "augment")

    def key(c: Config) -> tuple:
        return {k: v for k, v in dataclasses.asdict(c.data).items() if k not in ignore}, c.run.seed

    return key(config_from_dict(loaded.config)) == key(cfg)


def write_dataset_predictions(path: Path, ids: np.ndarray, logits: torch.Tensor, y: torch.Tensor,
                              loaded: Loaded, threshold: float | None, top_k: int) -> None:
    kind, classes = loaded.kind, loaded.classes
    probs = probabilities(logits, kind)
    preds = decide(probs, kind, threshold)
    per_class = class_probs(probs, kind)
    k = min(top_k, len(classes))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample", "true", "predicted", "correct", *top_k_header(k)])
        for i in range(len(y)):
            truth, pred = label_text(y[i].long(), kind, classes), label_text(preds[i], kind, classes)
            writer.writerow([int(ids[i]), truth, pred, int(truth == pred), *top_k_cells(per_class[i], k, classes)])


def print_evaluation(s: dict, out_dir: Path) -> None:
    d = s["data"]
    print(f"model: {s['source']['path']} ({s['source']['model']}, {s['task']}"
          f"{'' if s['threshold'] is None else ', threshold ' + format(s['threshold'], 'g')})")
    print(f"data: {d['name']} test split, {d['samples']} images, on {s['device']}")
    reported = s["reported"].get("accuracy/test")
    tail = ""
    if reported is not None:
        tail = (f" (recorded with the model: {reported:.4f})" if s["reported_on_this_split"]
                else f" (the model's recorded {reported:.4f} was measured on another split)")
    print(f"accuracy: {s['accuracy']:.4f}{tail}")
    if "exact_match" in s:
        print(f"exact match (all labels right): {s['exact_match']:.4f}")
    print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in s["metrics"].items()))
    per_class = s["per_class_accuracy"]
    if len(per_class) <= PRINT_ROWS:
        print("per-class accuracy: " + ", ".join(
            f"{c} {'n/a' if v is None else format(v, '.3f')}" for c, v in per_class.items()))
        cm = s["confusion_matrix"]
        if s["task"] != "multilabel":
            width = max(5, *(len(c) for c in cm["classes"]))
            print("confusion matrix (rows: true, columns: predicted):")
            print(" " * width + " " + " ".join(f"{c[:width]:>{width}}" for c in cm["classes"]))
            for c, row in zip(cm["classes"], cm["matrix"]):
                print(f"{c[:width]:>{width}} " + " ".join(f"{v:>{width}}" for v in row))
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'predictions.csv'}")


# --------------------------------------------------------------------------- arbitrary images


def collect_images(paths: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to classify (folders searched recursively for PNG/JPEG) and (name, problem) pairs."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((str(p), f"no {'/'.join(IMAGE_SUFFIXES)} images in this folder"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append((str(p), "not found"))
    return files, problems


def read_image(path: Path, in_chans: int, size_hw: tuple[int, int]) -> np.ndarray:
    """Decode, convert to the model's channels and resize (bilinear) to uint8 [C, H, W]."""
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[in_chans]
    with Image.open(path) as img:
        img.load()
        img = img.convert(mode)
    h, w = size_hw
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def warn(message: str) -> None:
    print(f"tune_cifar.predict: warning: {message}", file=sys.stderr)


def classify_images(loaded: Loaded, cfg: Config, args: argparse.Namespace, device: torch.device,
                    clock: Clock) -> dict:
    if loaded.in_chans not in (1, 3, 4):
        raise UserError(f"--images needs a model taking 1, 3 or 4 channels; this one takes {loaded.in_chans}")
    threshold = effective_threshold(args, cfg, loaded.kind)
    files, problems = collect_images(args.images)
    for name, why in problems:
        warn(f"skipped {name}: {why}")
    batch_size = cfg.data.inference_batch_size
    # (file, probabilities [K] or None, error), in the order given; problems first
    rows: list[tuple[str, torch.Tensor | None, str]] = [(name, None, why) for name, why in problems]
    pending: list[Path] = []  # the files of the batch being classified

    def batches():
        for start in range(0, len(files), batch_size):
            good = []
            for f in files[start: start + batch_size]:
                try:
                    good.append((f, read_image(f, loaded.in_chans, loaded.image_size)))
                except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
                    detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
                    why = f"unreadable image ({type(err).__name__}{': ' + detail if detail else ''})"
                    warn(f"skipped {f}: {why}")
                    rows.append((str(f), None, why))
            if good:
                pending[:] = [f for f, _ in good]
                yield torch.from_numpy(np.stack([a for _, a in good]))

    for logits in infer(loaded.net, batches(), device, cfg.trainer.precision, clock):
        for f, p in zip(pending, probabilities(logits, loaded.kind)):
            rows.append((str(f), p, ""))
    classified = [r for r in rows if r[1] is not None]
    if not classified:
        raise UserError(f"no readable images among {len(files)} file(s) in {' '.join(args.images)} "
                        f"(PNG/JPEG; folders are searched for {'/'.join(IMAGE_SUFFIXES)})")
    order = {str(f): i for i, f in enumerate(files)}
    rows.sort(key=lambda r: order.get(r[0], -1))
    out_dir = make_out_dir(args, loaded)
    classes, kind = loaded.classes, loaded.kind
    k = min(args.top_k, len(classes))
    printed = 0
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", *top_k_header(k), "error"])
        for name, p, error in rows:
            if p is None:
                writer.writerow([name, "", *([""] * 2 * k), error])
                continue
            pred = label_text(decide(p[None], kind, threshold)[0], kind, classes)
            cells = top_k_cells(class_probs(p[None], kind)[0], k, classes)
            writer.writerow([name, pred, *cells, ""])
            if printed < PRINT_ROWS:
                print(f"{name}: {pred or '(no label above threshold)'} ({cells[0]} {float(cells[1]):.3f})")
                printed += 1
    skipped = len(rows) - len(classified)
    if len(classified) > printed:
        print(f"... {len(classified) - printed} more")
    print(f"classified {len(classified)} image(s)" + (f", skipped {skipped}" if skipped else "")
          + f"; wrote {out_dir / 'predictions.csv'}")
    return {"out_dir": str(out_dir), "classified": len(classified), "skipped": skipped,
            "predictions": str(out_dir / "predictions.csv"), "timing": clock.as_dict()}


# --------------------------------------------------------------------------- conversion


def convert(loaded: Loaded, cfg: Config, args: argparse.Namespace) -> dict:
    """Write the model as ONNX or TorchScript and check it against PyTorch on random images."""
    fmt = args.to
    net = loaded.net.to("cpu").eval()
    (h, w), c = loaded.image_size, loaded.in_chans
    gen = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, c, h, w), dtype=torch.uint8, generator=gen)
    check = torch.randint(0, 256, (3, c, h, w), dtype=torch.uint8, generator=gen)  # another batch size
    with torch.inference_mode():
        expected = net(check)
    out_dir = make_out_dir(args, loaded)
    file = out_dir / FORMATS[fmt]
    verified = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of torch.jit / the TorchScript ONNX exporter
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(net, example)
            traced.save(str(file))
            with torch.no_grad():
                got = torch.jit.load(str(file))(check)
        else:
            export_onnx(net, example, file)
            got = run_onnx(file, check)
            verified = got is not None
    info = {"format": fmt, "file": str(file), "verified": verified}
    if verified:
        diff = float((got.float() - expected.float()).abs().max())
        tol = 1e-4 * max(1.0, float(expected.abs().max()))
        if diff > tol:
            raise UserError(f"the {fmt} model disagrees with PyTorch: max |difference| {diff:.3g} > {tol:.3g}")
        info["max_abs_diff"] = diff
    io = {
        "format": fmt, "file": file.name,
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "shape": ["batch", c, h, w],
                  "channels": {1: "L", 3: "RGB", 4: "RGBA"}.get(c, c), "normalisation": "inside the model"},
        "output": {"name": "logits", "shape": ["batch", int(expected.shape[1])],
                   "to_probabilities": "softmax" if loaded.kind == "multiclass" else "sigmoid"},
        "task": loaded.kind, "classes": loaded.classes,
        "threshold": None if loaded.kind == "multiclass" else effective_threshold(args, cfg, loaded.kind),
        "source": str(loaded.source), "model": loaded.model_name,
    }
    described = out_dir / f"model.{fmt}.json"
    described.write_text(json.dumps(io, indent=2))
    check_text = (f"outputs match PyTorch (max |difference| {info['max_abs_diff']:.2g})" if verified
                  else "not checked: onnxruntime is not installed (pip install onnxruntime)")
    print(f"wrote {file} ({fmt}: uint8 NCHW images in, logits out; {check_text}) and {described}")
    info["out_dir"] = str(out_dir)
    return info


def export_onnx(net: nn.Module, example: torch.Tensor, file: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("--to onnx needs the onnx package: pip install 'tune_cifar[onnx]' "
                        "(onnx, onnxscript, onnxruntime)") from None
    names = dict(input_names=["images"], output_names=["logits"])
    try:  # the TorchScript-based exporter: fast, needs only onnx
        torch.onnx.export(net, (example,), str(file), dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **names)
        return
    except Exception as err:  # noqa: BLE001 - removed or failing: try the torch.export-based one
        first = err
    try:
        torch.onnx.export(net, (example,), str(file), dynamo=True,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, **names)
    except Exception as err:  # noqa: BLE001
        why = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"ONNX export failed ({why}; TorchScript-based exporter: "
                        f"{str(first).strip().splitlines()[0][:120]})") from None


def run_onnx(file: Path, x: torch.Tensor) -> torch.Tensor | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


# --------------------------------------------------------------------------- CLI


def make_out_dir(args: argparse.Namespace, loaded: Loaded) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        parent = loaded.home / "predict"
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        out, n = parent / stamp, 1
        while out.exists():
            n += 1
            out = parent / f"{stamp}_{n}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {out} ({err.strerror}); pass --out DIR") from None
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tune_cifar.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Use a trained model without Ray: evaluate it on its test set, classify images "
                    "or convert it to ONNX / TorchScript.",
        epilog="examples:\n"
               "  python -m tune_cifar.predict --best\n"
               "  python -m tune_cifar.predict --export outputs/fashion_cpu_small/best data.test_subset=null\n"
               "  python -m tune_cifar.predict --best --images photos/ cat.jpg --top-k 3\n"
               "  python -m tune_cifar.predict --checkpoint outputs/x/2025-01-01_00-00-00/checkpoints/best.ckpt\n"
               "  python -m tune_cifar.predict --best --to onnx --out deploy/")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--best", action="store_true", help="the latest export, <output-dir>/best (the default)")
    src.add_argument("--export", metavar="DIR", help="an export folder")
    src.add_argument("--checkpoint", metavar="FILE", help="a training checkpoint (.ckpt)")
    p.add_argument("--output-dir", default="outputs", metavar="DIR",
                   help="where --best looks for best/ (default: outputs)")
    p.add_argument("--out", metavar="DIR",
                   help="where results go (default: <folder holding the export or run>/predict/<timestamp>)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--images", nargs="+", metavar="PATH", help="classify these images / folders of PNG/JPEG")
    what.add_argument("--to", choices=sorted(FORMATS), help="write the model in this format instead of predicting")
    p.add_argument("--data-path", metavar="DIR", help="same as data.dataset_path=DIR")
    p.add_argument("--threshold", type=float, help="binary/multilabel models predict a class when its "
                                                   "probability is above this (default: task.threshold)")
    p.add_argument("--top-k", type=_positive_int, default=5, help="probabilities listed per image (default 5)")
    p.add_argument("--batch-size", type=_positive_int, help="same as data.inference_batch_size=N")
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:N")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="changes to the model's config, e.g. data.test_subset=null trainer.precision=32")
    return p.parse_args(list(argv))


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    clock = Clock()
    loaded = load(args)
    if loaded.config is not None and (args.images or args.to):
        try:  # images need no data config: a config of an older version should not block them
            config_from_dict(loaded.config)
        except UserError as err:
            warn(f"the model's config.yaml does not validate ({err}); using the task settings saved "
                 f"with the weights")
            loaded.config = None
    cfg = make_config(loaded, args)
    if args.to:
        return convert(loaded, cfg, args)
    device = pick_device(args.device)
    if args.images:
        return classify_images(loaded, cfg, args, device, clock)
    return evaluate(loaded, cfg, args, device, clock)


if __name__ == "__main__":
    main()
