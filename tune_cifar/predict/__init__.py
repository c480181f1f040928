"""Use a trained model: ``python -m tune_cifar.predict [--best | --export DIR | --checkpoint FILE]``.

No Ray and no Lightning Trainer: the network is rebuilt from its weights file (``torch.load(weights_only=True)``)
and run in a plain batched ``torch.inference_mode`` loop. It loads ``--best`` (``<output-dir>/best``, the
default), an export folder (``--export``) or a training checkpoint (``--checkpoint``); then it evaluates the
model on its dataset's test split (metrics.json, predictions.csv), classifies image files (``--images``) or
converts it to ONNX / TorchScript (``--to``). The config is the model's config.yaml changed by ``--data-path``,
``--batch-size`` and ``key=value`` overrides; outputs go to ``--out`` or ``<folder holding the export, or run folder>/predict/<time>/``.

Modules, in the order of a run: cli (arguments, main; the arguments become one frozen options.Options that the
library functions take), loading (export or checkpoint, as a
tune_cifar.classifier.Classifier),
settings (config), inference (decisions; batches run by tune_cifar.evaluation), then evaluation
(tune_cifar.evaluation's test metrics, plus confusion matrix and predictions.csv), images
(image files) or conversion (ONNX / TorchScript); output: the output folder and warnings.
"""

from __future__ import annotations

# First: start-up is measured from here, before torch is imported. Light imports only, so that
# start-up to the first batch is little more than torch's import (see evaluation.py).
from .clock import Clock  # noqa: I001
from .cli import main
from .inference import infer, pick_device
from .loading import Loaded, load, load_checkpoint, load_export
from .options import Options

__all__ = ["Clock", "Loaded", "Options", "infer", "load", "load_checkpoint", "load_export", "main", "pick_device"]
