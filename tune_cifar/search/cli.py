"""Hyperparameter search: ``python -m tune_cifar.search SPACE.yaml [overrides] [options]``.

Runs Ray Tune trials (Optuna TPE or random search, ASHA or FIFO scheduling) over the
parameters of a search-space file (schema: search_spaces/README.md), then exports the best
trial's best checkpoint. Overrides are Hydra-style for the base config (``model=small_cnn``,
``data.train_subset=5000``) or ``search.key=value`` for the file's search section.

Outputs under ``<storage_path>/<experiment>/``: ``<timestamp>/`` (Ray's trials, results.csv,
search.yaml) and ``best/`` (the export); ``<storage_path>/best`` links to the latest export.
``--debug`` runs one trial in this process without Ray (breakpoints work).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

from . import resilience
from ..errors import UserError, cli_entry
from .space import SearchSpace, load_space, sample

log = logging.getLogger("tune_cifar")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tune_cifar.search", description=__doc__.split("\n")[0],
                                epilog="Example: python -m tune_cifar.search search_spaces/cpu_small.yaml "
                                       "search.num_samples=4 data.train_subset=2000")
    p.add_argument("space_file", help="search-space YAML file (see search_spaces/README.md)")
    p.add_argument("overrides", nargs="*", help="key=value for the base config, or search.key=value")
    p.add_argument("--debug", action="store_true", help="run one trial in this process, without Ray")
    p.add_argument("--params", help='with --debug: JSON {"dotted.key": value, ...}; the rest is sampled')
    p.add_argument("--address", help="join this Ray cluster: auto or HOST:PORT (default: start Ray locally)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest run of this experiment (interrupted or killed): same command + --resume")
    p.add_argument("--new-name", action="store_true",
                   help="if the experiment exists, run this search as <experiment>_2 (the first free name)")
    p.add_argument("--num-samples", type=int, help="same as search.num_samples=N")
    p.add_argument("--output-dir", help="same as search.storage_path=DIR (default: run.output_dir)")
    return p.parse_intermixed_args(list(argv))  # overrides may follow options


def _stamp(parent: Path, prefix: str = "") -> str:
    stamp = prefix + time.strftime("%Y-%m-%d_%H-%M-%S")
    name, n = stamp, 1
    while (parent / name).exists():
        n += 1
        name = f"{stamp}_{n}"
    return name


# --------------------------------------------------------------------------- debug (no Ray)


def debug(space: SearchSpace, params: str | None) -> dict:
    """One trial in-process: given (--params) and sampled values, loggers and a best checkpoint."""
    import torch

    from ..data import load_data
    from ..training import fit, val_metrics

    try:
        given = json.loads(params) if params else {}
    except json.JSONDecodeError as err:
        raise UserError(f"--params is not valid JSON: {err}") from None
    if not isinstance(given, dict):
        raise UserError('--params must be a JSON object like {"optimizer.lr": 0.01}')
    space.check_gpus(torch.cuda.device_count())
    values = sample(space, given, seed=space.search.searcher.seed)
    print(f"debug trial: {json.dumps(values, default=str)}", flush=True)
    cfg = space.trial_config(values)
    arrays = load_data(cfg.data, cfg.task.task)
    exp_dir = Path(space.search.storage_path) / space.search.experiment
    out_dir = exp_dir / _stamp(exp_dir, "debug_")
    out_dir.mkdir(parents=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    trainer = fit(cfg, arrays, out_dir, checkpointing=True, loggers=True)
    metrics = val_metrics(trainer)
    print("validation: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    print(f"outputs: {out_dir}")
    return {"values": values, "val": metrics, "output_dir": str(out_dir)}


# --------------------------------------------------------------------------- the search (Ray)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def start_ray(address: str | None):
    """Join ``address``, or start a quiet local Ray (no dashboard); returns True if we started it."""
    import ray

    # Checkpointing every epoch with num_to_keep makes Tune warn about frequent state snapshots.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    if address:
        resilience.connect(address)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True


def run_search(space: SearchSpace, address: str | None = None, overrides: Sequence[str] = (),
               resume: bool = False, new_name: bool = False) -> dict:
    """Run the trials (or ``resume`` the experiment's latest run), write results.csv and the reports,
    export the best trial; returns a summary dict (``interrupted: True`` if stopped before the end)."""
    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from ..config import config_from_dict
    from ..data import load_data
    from .space import make_sampler
    from .study import NanSafeOptunaSearch
    from .trainable import train_trial

    s = space.search
    space.base["trainer"]["enable_progress_bar"] = False  # Ray's table is the progress display
    named = s.experiment
    paths = resilience.plan_run(space, resume=resume, new_name=new_name)  # refuses to reuse a name silently
    if paths.experiment != named:  # --new-name: search.yaml's command (for --resume) names the new one
        overrides = [*overrides, f"search.experiment={paths.experiment}"]
    if paths.resume:
        resilience.check_resume(paths, space, overrides)
    else:
        resilience.check_study_direction(resilience.optuna_storage(s), s)
    run_dir = paths.local
    if not address:
        space.check_gpus(torch.cuda.device_count())
    cfg = config_from_dict(space.base)
    arrays = load_data(cfg.data, cfg.task.task)  # read and decoded once, shared via the object store

    started = start_ray(address)
    try:
        if address:
            space.check_gpus(ray.cluster_resources().get("GPU", 0), "the Ray cluster")
        resilience.check_resources(s, f"the Ray cluster at {address}" if address else "this machine")
        trainable = tune.with_resources(tune.with_parameters(train_trial, space=space, arrays=arrays),
                                        s.resources.for_ray())
        if paths.resume:
            print(f"resuming {paths.ray_dir}", flush=True)
            tuner = tune.Tuner.restore(paths.ray_dir, trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        else:
            points = [space.to_optuna(p, "points_to_evaluate") for p in s.searcher.points_to_evaluate]
            searcher = NanSafeOptunaSearch(
                space=space.suggest, metric=s.metric, mode=s.mode, sampler=make_sampler(s),
                points_to_evaluate=points or None, storage=resilience.optuna_storage(s),
                study_name=resilience.study_name(s))  # a persistent study if search.optuna_storage is set
            if s.scheduler.name == "asha":
                scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.scheduler.max_epochs,
                                          grace_period=s.scheduler.grace_period,
                                          reduction_factor=s.scheduler.reduction_factor)
            else:
                scheduler = FIFOScheduler()
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=s.metric, mode=s.mode, search_alg=searcher, scheduler=scheduler,
                    num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent_trials,
                    time_budget_s=s.time_budget_s, trial_dirname_creator=_trial_dirname,
                    reuse_actors=True),  # a trial reuses a finished trial's process (torch already imported)
                run_config=tune.RunConfig(
                    name=paths.name, storage_path=paths.storage,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=s.checkpoints_to_keep,
                                                            checkpoint_score_attribute=s.metric,
                                                            checkpoint_score_order=s.mode),
                    failure_config=tune.FailureConfig(max_failures=s.max_failures), verbose=1),
            )
        if not paths.resume:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "search.yaml").write_text(yaml.safe_dump(resilience.search_record(space, overrides),
                                                                sort_keys=False))
            resilience.upload_reports(paths)
        start = time.monotonic()
        with resilience.graceful_signals():  # SIGTERM like Ctrl-C: Tune saves its state, --resume continues
            grid = tuner.fit()
        interrupted = resilience.interrupted(grid, s, time.monotonic() - start)
    finally:
        if started:
            ray.shutdown()
    return finish(space, grid, paths, arrays, interrupted=interrupted)


# --------------------------------------------------------------------------- after the search


PEAK_METRIC = "memory/cuda_peak_mb"  # training.WorkerMemory.PEAK (not imported: training loads Lightning)
PEAK_GPU = "peak_gpu_mb"  # its results.csv column: what a trial needs, to choose search.resources.gpu


EXPORTED = ("completed", "stopped early")  # failed, errored and unfinished trials are never exported


def trial_id_of(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")


def _best_index(values, mode: str):
    """Index of the best finite value; of tied ones the last (Ray keeps the later of tied checkpoints)."""
    values = values[values.notna() & ~values.isin([math.inf, -math.inf])]
    if not len(values):
        return None
    best = values.max() if mode == "max" else values.min()
    return values[values == best].index[-1]


def results_table(space: SearchSpace, grid):
    """One row per trial: status, best metric and its epoch, epochs run, time, hyperparameters."""
    import pandas as pd

    s, rows = space.search, []
    unfinished = resilience.unfinished_trials(grid)  # ids of trials an interruption left running or pending
    for result in grid:
        df = result.metrics_dataframe
        has = df is not None and len(df) and s.metric in df
        values = df[s.metric].astype(float) if has else pd.Series(dtype=float)
        best_i = _best_index(values, s.mode)
        epochs = int(df["training_iteration"].max()) if has else 0
        reason = (result.metrics or {}).get(resilience.STOP_REASON) or ""  # non-finite loss: ended as failed
        trial_id = trial_id_of(result)
        # unfinished first: a trial waiting for a retry (max_failures) when the search was interrupted still
        # carries its last error, but --resume continues it
        status = ("unfinished" if trial_id in unfinished else "error" if result.error else "failed" if reason else
                  "completed" if epochs >= s.scheduler.max_epochs else "stopped early")
        rows.append({
            "trial_id": trial_id,
            "status": status,
            s.metric: float(values[best_i]) if best_i is not None else math.nan,
            "best_epoch": int(df.loc[best_i, "training_iteration"]) if best_i is not None else None,
            "epochs": epochs,
            "time_s": round(float(df["time_total_s"].max()), 1) if has and "time_total_s" in df else None,
            **({PEAK_GPU: round(float(df[PEAK_METRIC].max()), 1)} if has and PEAK_METRIC in df else {}),
            **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
               for k, v in space.values(result.config or {}).items()},
            "error": resilience.describe_error(result.error) if result.error else reason,
        })
    peak = [PEAK_GPU] if any(PEAK_GPU in r for r in rows) else []  # trials on a GPU
    columns = ["trial_id", "status", s.metric, "best_epoch", "epochs", "time_s", *peak,
               *(p.key for p in space.params), "error"]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table = table.sort_values(s.metric, ascending=s.mode == "min", na_position="last", kind="stable")
    return table


def export_choice(space: SearchSpace, grid, table):
    """(result, checkpoint, its reported metrics) to export: the first row of results.csv among
    completed and early-stopped trials, at its best epoch; None if none of them has a checkpoint."""
    s = space.search
    results = {trial_id_of(r): r for r in grid}
    for row in table[table["status"].isin(EXPORTED) & table[s.metric].notna()].to_dict("records"):
        result = results[row["trial_id"]]
        kept = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("training_iteration") == row["best_epoch"]]
        if kept:
            return result, *kept[-1]
        try:  # that epoch's checkpoint is gone (e.g. checkpoints_to_keep): the trial's best one kept
            checkpoint = result.get_best_checkpoint(s.metric, s.mode)
        except RuntimeError:  # none with the metric
            continue
        return result, checkpoint, next(m for c, m in result.best_checkpoints if c.path == checkpoint.path)
    return None


def summary_text(space: SearchSpace, table, top: int = 5) -> str:
    s = space.search
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    head = (f"{len(table)} trials ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}), "
            f"{int(table['epochs'].sum()) if len(table) else 0} trial-epochs; top {min(top, len(table))} "
            f"by {s.metric} ({s.mode}):")
    cols = [c for c in table.columns if c != "error"]
    return head + "\n" + table[cols].head(top).to_string(index=False, float_format=lambda x: f"{x:.4g}")


def finish(space: SearchSpace, grid, paths: resilience.RunPaths, arrays, interrupted: bool = False) -> dict:
    """results.csv, plots, printed summary, export of the best trial at its best epoch (+ test metrics)."""
    from ..classifier import Classifier
    from ..evaluation import evaluate
    from .trainable import checkpoint_file
    from ..training import quiet

    quiet()
    s = space.search
    run_dir = paths.local
    run_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(space, grid)
    table.to_csv(run_dir / "results.csv", index=False)
    print(summary_text(space, table), flush=True)
    print(f"results: {run_dir / 'results.csv'}")
    out = {"run_dir": str(run_dir), "results": str(run_dir / "results.csv"), "trials": len(table),
           "trial_epochs": int(table["epochs"].sum()) if len(table) else 0,
           "reports": write_reports(space, grid, table, run_dir), "ray_dir": paths.ray_dir}
    if interrupted:
        resilience.upload_reports(paths)
        print(f"search interrupted after {len(table)} of {s.num_samples} trials; continue it with: "
              f"{resilience.resume_command(paths)}", file=sys.stderr, flush=True)
        return {**out, "interrupted": True}
    chosen = export_choice(space, grid, table)
    if chosen is None:
        first = next((r.error for r in grid if r.error), None)
        reason = f"; first error: {str(first).strip().splitlines()[-1][:200]}" if first else ""
        raise UserError(f"no completed or early-stopped trial reported {s.metric} with a checkpoint, nothing "
                        f"exported (see {run_dir}){reason}")

    best, checkpoint, reported = chosen
    values = space.values(best.config)
    cfg = space.trial_config(values)
    metrics = {"trial_id": reported.get("trial_id"), "metric": s.metric, "epoch": reported.get("training_iteration"),
               **{k: float(v) for k, v in reported.items() if k.endswith("/val")}}
    with checkpoint.as_directory() as directory:
        classifier = Classifier.from_checkpoint(checkpoint_file(directory))
    metrics.update(evaluate(classifier, cfg, arrays).metrics)
    dest = classifier.to_export(paths.export_dir, config=cfg.to_dict(), metrics=metrics, hyperparameters=values,
                                experiment=s.experiment, link_root=paths.link_root)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"best trial {metrics['trial_id']} at epoch {metrics['epoch']}: {shown}")
    print(f"exported: {dest} (latest: {paths.link_root / 'best'})")
    out.update(best_trial=metrics["trial_id"], metrics=metrics, hyperparameters=values, export=str(dest))
    (run_dir / "best.json").write_text(json.dumps(out, indent=2, default=str))
    resilience.upload_reports(paths)
    return out


def write_reports(space: SearchSpace, grid, table, run_dir: Path) -> list[str]:
    """Learning curves and parallel coordinates (tune_cifar.search.report); a plotting error only warns."""
    from .report import write_reports as plots

    try:
        curves = {}
        for result in grid:
            curves[str(trial_id_of(result))] = result.metrics_dataframe
        return [str(p) for p in plots(run_dir, table, curves, space)]
    except Exception as err:  # the results matter more than the pictures
        log.warning("could not write the plots: %s", err)
        return []


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides)
    if args.num_samples is not None:
        overrides.append(f"search.num_samples={args.num_samples}")
    if args.output_dir:
        overrides.append(f"search.storage_path={args.output_dir}")
    if args.params and not args.debug:
        raise UserError("--params only works with --debug (a search samples its parameters)")
    space = load_space(args.space_file, overrides)
    if args.debug:
        return debug(space, args.params)
    out = run_search(space, args.address, overrides, resume=args.resume, new_name=args.new_name)
    if out.get("interrupted"):
        sys.exit(130)
    return out


if __name__ == "__main__":
    main()
