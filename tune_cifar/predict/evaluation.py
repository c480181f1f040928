"""Dataset evaluation: the model's test split scored (metrics.json) and predicted (predictions.csv)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

# torchmetrics (through tune_cifar.metrics; never Lightning) is imported after inference, to compute
# the metrics of a dataset evaluation, and never for --images / --to.
from ..atomic import atomic_write, write_text
from ..config import Config, config_from_dict
from ..evaluation import evaluate as score
from ..metrics import metric_key
from .clock import Clock
from .inference import (class_probs, decide, effective_threshold, label_text, probabilities, top_k_cells,
                        top_k_header)
from .loading import Loaded
from .options import Options
from .output import PRINT_ROWS, make_out_dir


def compute_metrics(logits: torch.Tensor, y: torch.Tensor, loaded: Loaded, threshold: float | None,
                    task_metrics: dict) -> dict:
    """Accuracy, per-class accuracy and confusion matrix (torchmetrics) besides the task's metrics
    (``task_metrics``: tune_cifar.evaluation's, the same as train's and the search's)."""
    from torchmetrics.classification import (BinaryConfusionMatrix, MulticlassConfusionMatrix,
                                             MultilabelConfusionMatrix)

    kind, classes = loaded.kind, loaded.classes
    n = len(classes)
    probs = probabilities(logits, kind)
    target = y.long()
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
    else:
        if kind == "multiclass":
            cm = MulticlassConfusionMatrix(num_classes=n)(probs, target)
        else:
            cm = BinaryConfusionMatrix(threshold=threshold)(probs, target)
        support = cm.sum(dim=1)
        out["accuracy"] = float(cm.diagonal().sum() / cm.sum())
        out["per_class_accuracy"] = {c: (float(cm[i, i] / support[i]) if support[i] else None)
                                     for i, c in enumerate(classes)}
        out["support"] = dict(zip(classes, support.tolist()))
        out["confusion_matrix"] = {"classes": classes, "layout": "rows: true class, columns: predicted class",
                                   "matrix": cm.tolist()}
    out["metrics"] = task_metrics
    return out


def evaluate(loaded: Loaded, cfg: Config, options: Options, device: torch.device, clock: Clock) -> dict:
    threshold = effective_threshold(options, cfg, loaded.kind)
    scored = score(loaded.net, cfg, device=device, threshold=threshold, on_batch=clock.batch_done,
                   hint="; evaluate it on data with its classes (--data-path, data.* overrides)",
                   metrics=cfg.task.metrics)  # the model's config.yaml's, or as changed on the command line
    ids, logits, y = scored.ids, scored.logits, scored.y
    out_dir = make_out_dir(options, loaded)
    result = compute_metrics(logits, y, loaded, threshold, scored.metrics)
    d = cfg.data
    summary = {
        "source": {"kind": loaded.source_kind, "path": str(loaded.source), "model": loaded.model_name},
        "data": {"name": d.name, "path": d.dataset_path, "split": "test", "samples": len(y),
                 "test_subset": d.test_subset, "seed": cfg.run.seed},
        "task": loaded.kind, "threshold": threshold, "device": str(device),
        **result,
        "reported": loaded.reported,
        **({"reeval": loaded.reeval} if loaded.reeval else {}),
        "reported_on_this_split": bool(loaded.reported) and same_split(loaded, cfg),
        "timing": clock.as_dict(),
    }
    write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
    write_dataset_predictions(out_dir / "predictions.csv", ids, logits, y, loaded, threshold, options.top_k)
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
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sample", "true", "predicted", "correct", *top_k_header(k)])
        for i in range(len(y)):
            truth, pred = label_text(y[i].long(), kind, classes), label_text(preds[i], kind, classes)
            writer.writerow([int(ids[i]), truth, pred, int(truth == pred), *top_k_cells(per_class[i], k, classes)])


def reeval_line(r: dict) -> str:
    """The search's re-evaluation of the exported configuration (its metrics.json ``reeval``), in one line."""
    def num(v) -> str:
        return format(v, ".4f") if isinstance(v, (int, float)) else "n/a"

    return (f"re-evaluated by the search: {r.get('metric', 'metric')} mean {num(r.get('mean'))} ± {num(r.get('se'))} "
            f"(standard error) over n={r.get('n')} training runs of this configuration (validation split)")


def print_evaluation(s: dict, out_dir: Path) -> None:
    d = s["data"]
    print(f"model: {s['source']['path']} ({s['source']['model']}, {s['task']}"
          f"{'' if s['threshold'] is None else ', threshold ' + format(s['threshold'], 'g')})")
    print(f"data: {d['name']} test split, {d['samples']} images, on {s['device']}")
    reported = s["reported"].get(metric_key("accuracy", "test"))
    tail = ""
    if reported is not None:
        tail = (f" (recorded with the model: {reported:.4f})" if s["reported_on_this_split"]
                else f" (the model's recorded {reported:.4f} was measured on another split)")
    print(f"accuracy: {s['accuracy']:.4f}{tail}")
    if s.get("reeval"):
        print(reeval_line(s["reeval"]))
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
