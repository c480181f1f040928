"""Config-key reflection for search spaces: which dotted keys exist and which the search owns.
Whether every sampled value makes a valid config is checked per parameter: ``params.check_values``.

No Ray here.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing

from ..config import Config
from ..errors import UserError, allowed


# Set by the search itself, never sampled: key -> what to use instead.
RESERVED = {
    "trainer.max_epochs": "search.scheduler.max_epochs",
    "trainer.val_check_interval": "nothing (trials validate once per epoch)",
    "trainer.check_val_every_n_epoch": "nothing (trials validate once per epoch)",
    "trainer.devices": "search.resources.gpu",
    "trainer.accelerator": "search.resources.gpu",
    "task.monitor": "search.metric",
    "task.monitor_mode": "search.mode",
}
# Not a hyperparameter: one value for the whole search (in base); re-evaluation (search.final, final.py) trains
# the best configurations again with training seeds of its own.
TRAIN_SEED = "run.train_seed"
# The dataset is read once in the driver and shared by all trials: these cannot vary per trial (nor the
# options the registered sources need, e.g. data.cifar100_labels: data.sources.source_keys()).
LOADED_ONCE = ("data.name", "data.dataset_path", "data.download", "data.image_size", "data.label_groups",
               "data.num_classes", "task.task")
# Keys that change which images score a trial: trials are only comparable on the same validation (and
# test) images. data.train_subset is allowed: the val and test rows have random streams of their own.
SCORING = {
    "data.val_fraction": "the validation split",
    "data.val_subset": "the validation images",
    "data.test_subset": "the test images the export is scored on",
    "run.seed": "the validation split (it seeds the split)",
    "trainer.limit_val_batches": "the validation images",
    "trainer.limit_test_batches": "the test images the export is scored on",
}


def check_scoring(where: str, key: str, base: dict) -> None:
    """Refuse a parameter that would score trials on different images (one value in base instead)."""
    what = SCORING.get(key)
    limited = [k for k in ("limit_val_batches", "limit_test_batches") if base["trainer"].get(k) not in (None, 1.0)]
    if key == "data.inference_batch_size" and limited:  # a batch limit times the batch size: other images
        what = f"the scored images, with trainer.{limited[0]}={base['trainer'][limited[0]]!r}"
    if what:
        raise UserError(f"{where}: {key} changes {what}, and trials must be compared on the same images; "
                        f"set it in base (one value for the whole search)")


def _hint_fields(cls) -> dict:
    return typing.get_type_hints(cls)


def _unwrap(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def check_key(where: str, key: str) -> None:
    """``key`` must name a config value (any sub-key of a free dict such as model_kwargs is fine)."""
    cls, parts = Config, key.split(".")
    for i, part in enumerate(parts):
        hints = _hint_fields(cls)
        if part not in hints:
            section = ".".join(parts[:i]) or "the top level"
            close = difflib.get_close_matches(part, hints, n=1)
            hint = f" (did you mean {'.'.join(parts[:i] + close)}?)" if close else ""
            raise UserError(f"{where}: unknown config key {key}{hint}; allowed under {section}: {allowed(hints)}")
        hint = _unwrap(hints[part])
        if hint is dict:
            return
        if dataclasses.is_dataclass(hint):
            cls = hint
        elif i < len(parts) - 1:
            raise UserError(f"{where}: {'.'.join(parts[: i + 1])} is a value, not a section")


def get_dotted(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
