"""The config a model is used with: its training config, changed by the command line."""

from __future__ import annotations

import json

from ..config import Config, config_from_dict, parse_override, set_dotted
from ..errors import UserError
from .loading import Loaded
from .options import Options


def make_config(loaded: Loaded, options: Options) -> Config:
    """The model's training config, changed by --data-path, --batch-size and key=value overrides."""
    if loaded.config is not None:
        data = loaded.config
    else:  # a checkpoint without its run folder: defaults, the dataset and task from the checkpoint
        data = Config().to_dict()
        data["data"].update(name=loaded.hparams["input_spec"].get("dataset") or "cifar10",
                            num_classes=len(loaded.classes), dataset_path="")
        data["task"] = {k: v for k, v in loaded.hparams["task"].items() if k != "metrics"}
        data["optimizer"]["metrics"] = dict(loaded.net.task.metrics)  # written as users write them
    data = json.loads(json.dumps(data))  # deep copy
    pairs = [parse_override(item) for item in options.overrides]
    if options.data_path is not None:
        pairs.insert(0, ("data.dataset_path", options.data_path))
    if options.batch_size is not None:
        pairs.insert(0, ("data.inference_batch_size", options.batch_size))
    for key, value in pairs:
        section = data.get(key) if "." not in key else None
        if isinstance(section, dict) and not isinstance(value, dict):
            raise UserError(f"override {key}={value}: config groups cannot be swapped here; set keys instead, "
                            f"e.g. data.name=cifar100 data.num_classes=100 data.dataset_path=DIR")
        set_dotted(data, key, value)
    return config_from_dict(data)
