"""One training run: ``python -m tune_cifar.train [hydra overrides] [--config-dir DIR]``.

Fits, validates and tests; or, with ``run.predict=true``, evaluates ``run.checkpoint_path``.
Outputs go to ``outputs/<experiment>/<timestamp>/`` (config, checkpoints, TensorBoard + CSV logs).
``--config-dir DIR`` adds your own config groups (``DIR/model/my_net.yaml``: ``model=my_net``).
The builders and ``fit`` are in ``tune_cifar.training`` (the search's trials use them too).
"""

from __future__ import annotations

import json
import os
import logging
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import yaml

from .atomic import disk_full_names, write_text
from .config import Config, load_config
from .errors import UserError, check_output_dir, cli_entry
from .signals import Interrupted, Received, stop_when_asked, terminate_as_interrupt
from .packaged import with_config_dirs

if TYPE_CHECKING:
    from .data import ImageArrays

log = logging.getLogger("tune_cifar")

# Data lives in memory as uint8 tensors: loader workers are not needed, so the hint is noise.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
# A signal is reported once, by ``interrupted`` below: Lightning's own "Received SIGTERM" line is noise.
logging.getLogger("pytorch_lightning.trainer.connectors.signal_connector").setLevel(logging.WARNING)


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


def run(cfg: Config, arrays: ImageArrays | None = None, out_dir: Path | None = None,
        argv: Sequence[str] | None = None) -> dict:
    """Train (or evaluate) one configuration; returns metrics and output paths.

    Ctrl-C or SIGTERM while it fits or tests stops it at the end of the batch (``interrupted``: one line
    with the command that resumes it, built from ``argv``; exit 130)."""
    # the output folder before torch and Lightning, which are imported once the config is read: a bad override
    # or output folder is refused in a second
    check_output_dir(cfg.run.output_dir, "run.output_dir")
    import pytorch_lightning as pl

    from .classifier import Classifier
    from .data import load_data
    from .evaluation import evaluate
    from .training import build_system, check_resumable, preflight, transfer_weights

    pl.seed_everything(cfg.run.training_seed, workers=True, verbose=False)  # weights; the split: run.seed
    preflight(cfg)  # before any download or folder
    arrays = arrays if arrays is not None else load_data(cfg.data, cfg.task.task)
    ckpt_path = system = scored = None
    if cfg.run.predict:
        if not cfg.run.checkpoint_path:
            raise UserError("config: run.predict=true needs run.checkpoint_path=<file.ckpt>")
        classifier = Classifier.from_checkpoint(cfg.run.checkpoint_path)
        # the one evaluation of predict and the search (same numbers as predict --checkpoint)
        scored = evaluate(classifier, cfg, arrays,
                          hint=f" (model: {cfg.run.checkpoint_path}; choose its data with data=...)")
    else:
        system = build_system(cfg, arrays)
        if cfg.run.checkpoint_path:
            if cfg.run.resume:
                check_resumable(system, cfg.run.checkpoint_path)  # clear error before Lightning sees it
                ckpt_path = cfg.run.checkpoint_path
            else:
                skipped = transfer_weights(system, cfg.run.checkpoint_path)
                log.info("transfer learning: kept fresh weights for %s", ", ".join(skipped) or "nothing")

    # Config, data and model are checked: only now the run folder (a failed start leaves none).
    with disk_full_names(cfg.run.output_dir):  # a full disk, also in Lightning's loggers: one line naming it
        out_dir = out_dir or new_output_dir(cfg)
        return _run_into(cfg, arrays, out_dir, system, ckpt_path, scored, argv)


def _run_into(cfg: Config, arrays: ImageArrays, out_dir: Path, system, ckpt_path, scored,
              argv: Sequence[str] | None) -> dict:
    """The run's files: config.yaml, the fit (checkpoints and logs) or the evaluation, results.json;
    each file is written whole or not at all (tune_cifar.atomic)."""
    from .training import StopWhenAsked, fit, val_metrics

    write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    result: dict = {"output_dir": str(out_dir)}
    if cfg.run.predict:
        result["test"] = scored.metrics
    else:
        with stop_when_asked() as received:  # the first signal stops at the end of the batch, a second at once
            stopper = StopWhenAsked(received, raise_interrupted=True)
            try:
                trainer = fit(cfg, arrays, out_dir, [stopper], ckpt_path=ckpt_path, checkpointing=True,
                              loggers=True, system=system, summary=True)
                result["val"] = val_metrics(trainer)
                best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
                if best:
                    result["best_checkpoint"] = os.path.relpath(best, out_dir)
                    result["best_score"] = float(trainer.checkpoint_callback.best_model_score)
                test = trainer.test(system, datamodule=trainer.datamodule, ckpt_path="best" if best else None,
                                    verbose=False)
            # Interrupted: ours, at a batch's end; SystemExit: Lightning's SIGTERMException (its own stop at a
            # batch's end, which exits 0) or its exit(1) after a second Ctrl-C; KeyboardInterrupt: a second signal
            except (Interrupted, SystemExit, KeyboardInterrupt):
                if not received:
                    raise
                interrupted(cfg, out_dir, received, stopper.stage or "start-up", argv)
        result["test"] = _scalars(test[0])
    write_text(out_dir / "results.json", json.dumps(result, indent=2))
    return result


def interrupted(cfg: Config, out_dir: Path, received: Received, stage: str, argv: Sequence[str] | None) -> None:
    """Say in one line where the run stopped and how to continue it; exit 130 (results.json is not written:
    the run did not finish). ``last.ckpt`` is the one ModelCheckpoint wrote at the last validation, by default
    the end of the last whole epoch (nothing is written after the signal)."""
    from .checkpoint import read_checkpoint

    last = (out_dir / "checkpoints" / "last.ckpt").absolute()
    what = f"tune_cifar.train: interrupted by {received.name} during {stage}"
    if not last.is_file():
        print(f"{what}, before any checkpoint was written (one is written at the end of each epoch); run folder "
              f"{out_dir}; run the command again to start over", file=sys.stderr, flush=True)
        sys.exit(130)
    epoch = read_checkpoint(last).get("epoch", -1) + 1  # Lightning stores the 0-based epoch it was saved in
    kept = [a for a in (argv if argv is not None else ["<your overrides>"])
            if not a.lstrip("+~").startswith(("run.checkpoint_path=", "run.resume="))]
    again = shlex.join(["python", "-m", "tune_cifar.train", *kept, f"run.checkpoint_path={last}", "run.resume=true"])
    print(f"{what}; {last} is whole, saved at the end of epoch {epoch} of {cfg.trainer.max_epochs}; resume with: "
          f"{again}", file=sys.stderr, flush=True)
    sys.exit(130)


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nExample: python -m tune_cifar.train data=fashion_mnist model=small_cnn trainer.max_epochs=2")
        return {}
    with terminate_as_interrupt():  # until training starts, SIGTERM ends the run as Ctrl-C does (exit 130)
        cfg = load_config(with_config_dirs(argv))
        result = run(cfg, argv=argv)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result.get("test", {}).items())
    print(f"test: {summary}\noutputs: {result['output_dir']}")
    return result


if __name__ == "__main__":
    main()
