"""``--debug``: one trial in this process without Ray (breakpoints work), with loggers and a best checkpoint."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from ..atomic import write_text
from ..errors import UserError
from .interrupt import stop_when_asked
from .registry import scheduler_parts
from .sampler import sample
from .space import SearchSpace, check_measurable


def _stamp(parent: Path, prefix: str = "") -> str:
    stamp = prefix + time.strftime("%Y-%m-%d_%H-%M-%S")
    name, n = stamp, 1
    while (parent / name).exists():
        n += 1
        name = f"{stamp}_{n}"
    return name


def debug(space: SearchSpace, params: str | None) -> dict:
    """One trial in-process: given (--params) and sampled values, loggers and a best checkpoint."""
    import torch

    from ..data import load_data
    from ..training import ModelCost, StopWhenAsked, fit, val_metrics
    from .settings import names_cost

    try:
        given = json.loads(params) if params else {}
    except json.JSONDecodeError as err:
        raise UserError(f"--params is not valid JSON: {err}") from None
    if not isinstance(given, dict):
        raise UserError('--params must be a JSON object like {"optimizer.lr": 0.01}')
    space.check_gpus(torch.cuda.device_count())
    values = sample(space, given, seed=space.search.searcher.seed)
    print(f"debug trial: {json.dumps(values, default=str)}", flush=True)
    if space.search.resources.workers > 1:
        print(f"--debug trains in one process: search.resources.workers={space.search.resources.workers} is "
              f"ignored (the batch stays data.train_batch_size)", flush=True)
    cfg = space.trial_config(values)
    make = scheduler_parts(space.search).trial_callbacks  # what the scheduler's trials need (registry.py)
    extra = list(make(cfg)) if make else []
    arrays = load_data(cfg.data, cfg.task.task)
    check_measurable(space, arrays)
    exp_dir = Path(space.search.storage_path) / space.search.experiment
    out_dir = exp_dir / _stamp(exp_dir, "debug_")
    out_dir.mkdir(parents=True)
    write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    with stop_when_asked() as received:
        try:
            costs = [ModelCost()] if names_cost(space.search) else []  # model/* objectives: measured as in a trial
            trainer = fit(cfg, arrays, out_dir, [*extra, *costs, StopWhenAsked(received)],
                          checkpointing=True, loggers=True)
        except (KeyboardInterrupt, SystemExit):  # a second signal: Lightning turns it into its own exit(1)
            if not received:
                raise
    if received:
        print(f"tune_cifar.search: interrupted; the debug trial's outputs so far: {out_dir}", file=sys.stderr,
              flush=True)
        sys.exit(130)
    metrics = {**val_metrics(trainer), **(costs[0].values if costs else {})}
    print("validation: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    print(f"outputs: {out_dir}")
    return {"values": values, "val": metrics, "output_dir": str(out_dir)}
