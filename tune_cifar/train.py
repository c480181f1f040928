"""One training run: ``python -m tune_cifar.train [hydra overrides] [--config-dir DIR]``.

Fits, validates and tests; or, with ``run.predict=true``, evaluates ``run.checkpoint_path``.
Outputs go to ``outputs/<experiment>/<timestamp>/`` (config, checkpoints, TensorBoard + CSV logs).
``--config-dir DIR`` adds your own config groups (``DIR/model/my_net.yaml``: ``model=my_net``).
The search reuses ``build_system`` and ``build_trainer`` for its trials.
"""

from __future__ import annotations

import json
import os
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch
import yaml

from .config import Config, TrainerConfig, load_config
from .data import ImageArrays, ImageDataModule, load_data
from .errors import UserError, cli_entry
from .metrics import check_metrics
from .models import ModelSpec, check_model_name
from .packaged import with_config_dirs
from .system import ClassificationSystem, InputSpec, load_system, read_checkpoint

log = logging.getLogger("tune_cifar")

# Data lives in memory as uint8 tensors: loader workers are not needed, so the hint is noise.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


# --------------------------------------------------------------------------- building blocks


def model_spec(cfg: Config, in_chans: int) -> ModelSpec:
    """ModelSpec from the model section; the head size follows the task and data."""
    m = cfg.model
    kwargs = dict(m.model_kwargs)
    pretrained = bool(kwargs.pop("pretrained", False))
    kwargs.pop("num_classes", None)
    kwargs.pop("in_chans", None)
    mods = m.modifiers
    outputs = 1 if cfg.task.task == "classification_binary" else cfg.data.num_classes
    return ModelSpec(
        provider=m.provider_name, name=m.model_name, num_classes=outputs, in_chans=in_chans,
        pretrained=pretrained, cifar_stem=mods.cifar_stem,
        first_conv_channels=mods.change_first_convolutional_layer.num_input_channels
        if mods.change_first_convolutional_layer else None,
        last_layer_outputs=mods.change_last_layer.num_outputs if mods.change_last_layer else None,
        last_layer_identity=mods.change_last_layer_to_identity,
        kwargs=kwargs,
    )


def input_spec(arrays: ImageArrays, dataset: str) -> InputSpec:
    return InputSpec(classes=tuple(arrays.classes), in_chans=arrays.in_chans,
                     image_size=tuple(arrays.image_size), mean=tuple(arrays.mean),
                     std=tuple(arrays.std), dataset=dataset)


def check_monitor(cfg: Config) -> None:
    allowed_keys = {"loss/val"} | {f"{m}/val" for m in cfg.optimizer.metrics}
    if cfg.task.monitor not in allowed_keys:
        raise UserError(f"config: task.monitor={cfg.task.monitor!r} is not logged; allowed: "
                        f"{', '.join(sorted(allowed_keys))}")


def preflight(cfg: Config) -> None:
    """The checks that need neither data nor a model: precision, monitor, metrics, model name."""
    resolve_precision(cfg.trainer)
    check_monitor(cfg)
    check_metrics(cfg)
    check_model_name(cfg.model.provider_name, cfg.model.model_name)


def build_system(cfg: Config, arrays: ImageArrays) -> ClassificationSystem:
    check_monitor(cfg)
    spec = model_spec(cfg, arrays.in_chans)
    if spec.first_conv_channels and spec.first_conv_channels != arrays.in_chans:
        raise UserError(
            f"config: model.modifiers.change_first_convolutional_layer.num_input_channels="
            f"{spec.first_conv_channels} but {cfg.data.name} images have {arrays.in_chans} channels")
    system = ClassificationSystem(spec, cfg.task, cfg.optimizer, input_spec(arrays, cfg.data.name),
                                  channels_last=cfg.trainer.channels_last)
    if cfg.trainer.compile:
        system.compile_model()
    return system


def resolve_precision(t: TrainerConfig) -> str:
    """``auto`` -> bf16-mixed / 16-mixed on GPU, 32-true on CPU; fp16 on a CPU is refused."""
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    if t.precision == "auto":
        if not on_gpu:
            return "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if t.precision == "16-mixed" and not on_gpu:
        raise UserError("config: trainer.precision=16-mixed needs a GPU; on a CPU use 32 or bf16-mixed")
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError("config: trainer.accelerator=gpu but no CUDA GPU is available; use trainer.accelerator=cpu")
    return t.precision


def build_trainer(cfg: Config, out_dir: Path | None, callbacks: Sequence[pl.Callback] = (),
                  checkpointing: bool = True, loggers: bool = True, **overrides) -> pl.Trainer:
    """The Lightning Trainer used by both ``train`` and the search's trials."""
    t = cfg.trainer
    precision = resolve_precision(t)
    callbacks = list(callbacks)
    logger = False
    if out_dir is not None and loggers and not t.fast_dev_run:
        from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

        logger = [TensorBoardLogger(str(out_dir), name="tensorboard", version=""),
                  CSVLogger(str(out_dir), name="csv", version="")]
    if checkpointing and out_dir is not None and not t.fast_dev_run:
        from pytorch_lightning.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=str(out_dir / "checkpoints"), filename="best",
                                         monitor=cfg.task.monitor, mode=cfg.task.monitor_mode,
                                         save_last=True, auto_insert_metric_name=False))
    if t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = not t.deterministic
    kwargs = dict(
        accelerator=t.accelerator, devices=t.devices, max_epochs=t.max_epochs,
        val_check_interval=t.val_check_interval, check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps, fast_dev_run=t.fast_dev_run,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches, precision=precision, deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val, enable_progress_bar=t.enable_progress_bar,
        enable_checkpointing=checkpointing and not t.fast_dev_run, logger=logger, callbacks=callbacks,
        default_root_dir=str(out_dir) if out_dir else None,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def transfer_weights(system: ClassificationSystem, path: str) -> list[str]:
    """Load matching weights from a checkpoint (a new head stays fresh); returns skipped keys."""
    state = read_checkpoint(path)["state_dict"]
    own = system.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    system.load_state_dict(keep, strict=False)
    return sorted(set(own) - set(keep))


def new_output_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(cfg.run.output_dir) / cfg.run.experiment / stamp
    n = 1
    while out.exists():
        n += 1
        out = Path(cfg.run.output_dir) / cfg.run.experiment / f"{stamp}_{n}"
    out.mkdir(parents=True)
    return out


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()}


# --------------------------------------------------------------------------- the run


def run(cfg: Config, arrays: ImageArrays | None = None, out_dir: Path | None = None) -> dict:
    """Train (or evaluate) one configuration; returns metrics and output paths."""
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    preflight(cfg)  # before any download or folder
    arrays = arrays if arrays is not None else load_data(cfg.data, cfg.task.task)
    datamodule = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed)
    ckpt_path = None
    if cfg.run.predict:
        if not cfg.run.checkpoint_path:
            raise UserError("config: run.predict=true needs run.checkpoint_path=<file.ckpt>")
        system = load_system(cfg.run.checkpoint_path)
        spec = system.input_spec
        arrays.check_fits(list(spec.classes), system.kind == "multilabel", spec.in_chans, spec.image_size,
                          where=f"{cfg.data.name} at {cfg.data.dataset_path or 'its default folder'}",
                          hint=f" (model: {cfg.run.checkpoint_path}; choose its data with data=...)")
    else:
        system = build_system(cfg, arrays)
        if cfg.run.checkpoint_path:
            if cfg.run.resume:
                read_checkpoint(cfg.run.checkpoint_path)  # clear error before Lightning sees it
                ckpt_path = cfg.run.checkpoint_path
            else:
                skipped = transfer_weights(system, cfg.run.checkpoint_path)
                log.info("transfer learning: kept fresh weights for %s", ", ".join(skipped) or "nothing")

    # Config, data and model are checked: only now the run folder (a failed start leaves none).
    out_dir = out_dir or new_output_dir(cfg)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    result: dict = {"output_dir": str(out_dir)}
    if cfg.run.predict:
        trainer = build_trainer(cfg, out_dir, checkpointing=False)
        result["test"] = _scalars(trainer.test(system, datamodule=datamodule, verbose=False)[0])
    else:
        trainer = build_trainer(cfg, out_dir)
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
        result["val"] = _scalars({k: v for k, v in trainer.callback_metrics.items() if k.endswith("/val")})
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            result["best_checkpoint"] = os.path.relpath(best, out_dir)
            result["best_score"] = float(trainer.checkpoint_callback.best_model_score)
        test = trainer.test(system, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)
        result["test"] = _scalars(test[0])
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    return result


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nExample: python -m tune_cifar.train data=fashion_mnist model=small_cnn trainer.max_epochs=2")
        return {}
    cfg = load_config(with_config_dirs(argv))
    result = run(cfg)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result.get("test", {}).items())
    print(f"test: {summary}\noutputs: {result['output_dir']}")
    return result


if __name__ == "__main__":
    main()
