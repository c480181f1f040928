"""After the trials: each trial's status, results.csv, the printed summary, the plots, and the export of
the best trial at its best epoch (with its test metrics)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from ..atomic import write_text
from ..errors import UserError
from ..metrics import in_stage
from ..timeline import mark
from . import budget, storage
from .names import STOP_REASON, WORLD_SIZE, checkpoint_file
from .registry import scheduler_parts
from .settings import names_cost
from .space import SearchSpace

log = logging.getLogger("tune_cifar")

PEAK_METRIC = "memory/cuda_peak_mb"  # training.WorkerMemory.PEAK (not imported: training loads Lightning)
PEAK_GPU = "peak_gpu_mb"  # its results.csv column: what a trial needs, to choose search.resources.gpu


EXPORTED = ("completed", "stopped early")  # failed, errored and unfinished trials are never exported


# --------------------------------------------------------------------------- trial status


def trial_statuses(grid) -> dict[str, str]:
    """Tune's status of every trial by id (TERMINATED, ERROR, RUNNING, PENDING, PAUSED).

    A ``ResultGrid`` has no status per result, so this reads the experiment state Tune saved when
    ``fit`` returned, through the public ``ExperimentAnalysis`` (its ``trials``), not the grid's private copy.
    """
    path = getattr(grid, "experiment_path", None)
    if path is None:  # not a Tune ResultGrid (unit tests)
        return {}
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(path, storage_filesystem=grid.filesystem)
    except ValueError:  # no experiment state saved (nothing ran)
        return {}
    return {t.trial_id: t.status for t in analysis.trials}


def unfinished(statuses: dict[str, str]) -> set[str]:
    """Trials an interruption left running, pending or paused (``--resume`` continues them)."""
    return {t for t, st in statuses.items() if st not in ("TERMINATED", "ERROR")}


def interrupted(statuses: dict[str, str], grid, s, elapsed_s: float) -> bool:
    """True when Tune stopped before the search was done (Ctrl-C, SIGTERM); ``grid``: its results."""
    if unfinished(statuses):
        return True
    if s.time_budget_s and elapsed_s >= s.time_budget_s * 0.98:
        return False  # the time budget ended it
    if budget.spent(s, grid):
        return False  # the trial-epoch budget ended it
    made = len(statuses) or len(grid)
    # stopped before the searcher made every trial (a budget without a cap: before it was spent)
    return s.num_samples is None or made < s.num_samples


# --------------------------------------------------------------------------- errors


def describe_error(error) -> str:
    """One line for results.csv: the exception's own last line, with the resource named where known."""
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else type(error).__name__
    ray_kinds = {type(e).__name__ for e in _chain(error) if type(e).__module__.startswith("ray")}
    if "OutOfMemoryError" in ray_kinds:
        return ("out of host memory (RAM): Ray's memory monitor killed the trial; lower "
                "search.max_concurrent_trials or data.train_batch_size")[:300]
    if ray_kinds & {"ActorDiedError", "WorkerCrashedError", "ActorUnavailableError", "NodeDiedError"}:
        return f"the trial's process died (killed, out of memory, or its node was lost): {last}"[:300]
    return last[:300]


def _chain(error):
    """The error and its causes; Ray sometimes gives a trial's error as text only (no chain)."""
    seen = []
    while isinstance(error, BaseException) and error not in seen:
        seen.append(error)
        error = getattr(error, "cause", None) or error.__cause__
    return seen


# --------------------------------------------------------------------------- results.csv and the export


def trial_id_of(result) -> str:
    # the folder first: after a PBT exploit a trial's last metrics are its donor's (trial_id included)
    name = Path(result.path).name if result.path else ""
    return name.removeprefix("trial_") if name.startswith("trial_") else (result.metrics or {}).get("trial_id")


def exploits(space: SearchSpace, grid) -> dict[str, list[dict]]:
    """The scheduler's events by trial id (e.g. PBT's exploits; registry.py ``trial_events``), from the
    run folder that holds every trial's folder."""
    events = scheduler_parts(space.search).trial_events
    if events is None or not len(grid):
        return {}
    return events(Path(grid[0].path).parent)


def _last_config(result, events: list[dict] | None) -> dict:
    """A trial's config at its end: after a PBT exploit, the one it was given (Ray's result then carries
    the donor's last report, config included)."""
    return {**(result.config or {}), **events[-1]["config"]} if events else (result.config or {})


def trial_curve(result):
    """A trial's reports. Ray's ``metrics_dataframe`` reads the trial's result.json, which Ray 2.60 can
    truncate when a trial restarts from a checkpoint (a PBT exploit, a retry) with local storage: it copies
    the file from the storage path onto itself. Its progress.csv is then the longer record."""
    import pandas as pd

    df = result.metrics_dataframe
    path = Path(result.path) / "progress.csv" if result.path else None
    if path is not None and path.is_file():
        try:
            csv = pd.read_csv(path)
        except (ValueError, OSError):  # empty or cut
            return df
        if df is None or len(csv) > len(df):
            return csv
    return df


def exportable_rows(df):
    """A trial's reports without those whose checkpoint folder a later report of the trial reused: a PBT
    trial that reports once more after an exploit was decided restarts its checkpoint count from the
    last one Ray registered, so that report's checkpoint is overwritten (only the later weights exist)."""
    if df is None or "checkpoint_dir_name" not in df:
        return df
    named = df["checkpoint_dir_name"].notna()
    return df[~named | ~df["checkpoint_dir_name"].duplicated(keep="last")]


def _best_index(values, mode: str):
    """Index of the best finite value; of tied ones the last (Ray keeps the later of tied checkpoints)."""
    values = values[values.notna() & ~values.isin([math.inf, -math.inf])]
    if not len(values):
        return None
    best = values.max() if mode == "max" else values.min()
    return values[values == best].index[-1]


def results_table(space: SearchSpace, grid, statuses: dict[str, str] | None = None):
    """One row per trial: status, best metric and its epoch, epochs run, time, hyperparameters.
    ``statuses``: Tune's status by trial id (``trial_statuses``), to tell unfinished trials."""
    import pandas as pd

    from ..metrics import REPORTED

    s, rows = space.search, []
    measured = [*objective_names(s), *(m for m in REPORTED if m not in objective_names(s) and names_cost(s))]
    left = unfinished(statuses or {})  # ids of trials an interruption left running or pending
    columns_of = scheduler_parts(s).results_columns  # the scheduler's own columns (e.g. PBT's exploits)
    events = exploits(space, grid)
    for result in grid:
        reports = trial_curve(result)
        df = exportable_rows(reports)
        has = df is not None and len(df) and s.metric in df
        values = df[s.metric].astype(float) if has else pd.Series(dtype=float)
        best_i = _best_index(values, s.mode)
        epochs = int(df["training_iteration"].max()) if has else 0
        reason = (result.metrics or {}).get(STOP_REASON) or ""  # non-finite loss: ended as failed
        trial_id = trial_id_of(result)
        # unfinished first: a trial waiting for a retry (max_failures) when the search was interrupted still
        # carries its last error, but --resume continues it
        status = ("unfinished" if trial_id in left else "error" if result.error else "failed" if reason else
                  "completed" if epochs >= s.scheduler.max_epochs else "stopped early")
        rows.append({
            "trial_id": trial_id,
            "status": status,
            # every objective and model cost at the best epoch by the first objective (the exported checkpoint's)
            **{m: (float(df.loc[best_i, m]) if best_i is not None and m in df else math.nan) for m in measured},
            "best_epoch": int(df.loc[best_i, "training_iteration"]) if best_i is not None else None,
            "epochs": epochs,
            "time_s": round(float(df["time_total_s"].max()), 1) if has and "time_total_s" in df else None,
            # the processes that trained it: reported by a multi-worker trial's rank 0, else one
            WORLD_SIZE: int(df[WORLD_SIZE].max()) if has and WORLD_SIZE in df and df[WORLD_SIZE].notna().any()
            else s.resources.workers,
            **(columns_of(reports, events.get(trial_id, [])) if columns_of else {}),
            **({PEAK_GPU: round(float(df[PEAK_METRIC].max()), 1)} if has and PEAK_METRIC in df else {}),
            **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
               for k, v in space.values(_last_config(result, events.get(trial_id))).items()},
            "error": describe_error(result.error) if result.error else reason,
        })
    peak = [PEAK_GPU] if any(PEAK_GPU in r for r in rows) else []  # trials on a GPU
    own = list(columns_of(None, [])) if columns_of else []  # the names, also for an empty table
    columns = ["trial_id", "status", *measured, "best_epoch", "epochs", "time_s", *own, *peak, WORLD_SIZE,
               *(p.key for p in space.params), "error"]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table = table.sort_values(s.metric, ascending=s.mode == "min", na_position="last", kind="stable")
    return table


def objective_names(s) -> list[str]:
    """The objectives' metrics, the first one first (``s.metric`` for settings made before objectives)."""
    return [o.name for o in s.objectives] or [s.metric]


def export_choice(space: SearchSpace, grid, table):
    """(result, checkpoint, its reported metrics) to export: the first row of results.csv among
    completed and early-stopped trials, at its best epoch; None if none of them has a checkpoint."""
    s = space.search
    results = {trial_id_of(r): r for r in grid}
    for row in table[table["status"].isin(EXPORTED) & table[s.metric].notna()].to_dict("records"):
        chosen = row_checkpoint(space, results[row["trial_id"]], row)
        if chosen is not None:
            return chosen
    return None


def row_checkpoint(space: SearchSpace, result, row: dict):
    """(result, checkpoint, its reported metrics) of a results.csv row: its best epoch's checkpoint, or the
    trial's best one kept; None if it has none."""
    s = space.search
    kept = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("training_iteration") == row["best_epoch"]]
    name = _best_checkpoint_name(result, s)  # under PBT an epoch number can recur in a trial (after an exploit)
    kept = ([(c, m) for c, m in kept if Path(c.path).name == name] or kept) if name else kept
    if kept:
        return result, *kept[-1]
    try:  # that epoch's checkpoint is gone (e.g. checkpoints_to_keep): the trial's best one kept
        checkpoint = result.get_best_checkpoint(s.metric, s.mode)
    except RuntimeError:  # none with the metric
        return None
    return result, checkpoint, next(m for c, m in result.best_checkpoints if c.path == checkpoint.path)


def trial_model(space: SearchSpace, chosen, arrays):
    """(Classifier, Config, sampled values, metrics) of a chosen checkpoint (``row_checkpoint``); the metrics
    are the trial's at that epoch (validation, model costs) and the test metrics of the model."""
    from ..classifier import Classifier
    from ..metrics import REPORTED
    from ..evaluation import evaluate

    s = space.search
    best, checkpoint, reported = chosen
    # the config in effect at that checkpoint (a PBT trial's config changes at each exploit), else the last one
    values = space.values(reported["config"] if isinstance(reported.get("config"), dict) else best.config)
    cfg = space.trial_config(values)
    metrics = {"trial_id": reported.get("trial_id"), "metric": s.metric, "epoch": reported.get("training_iteration"),
               **{k: float(v) for k, v in reported.items() if in_stage(k, "val") or k in REPORTED}}
    with checkpoint.as_directory() as directory:
        classifier = Classifier.from_checkpoint(checkpoint_file(directory))
    metrics.update(evaluate(classifier, cfg, arrays).metrics)
    return classifier, cfg, values, metrics


def _best_checkpoint_name(result, s) -> str | None:
    """The checkpoint folder Ray recorded with the trial's best report (None if not recorded)."""
    df = exportable_rows(trial_curve(result))
    if df is None or not len(df) or s.metric not in df or "checkpoint_dir_name" not in df:
        return None
    i = _best_index(df[s.metric].astype(float), s.mode)
    name = df.loc[i, "checkpoint_dir_name"] if i is not None else None
    return name if isinstance(name, str) else None


def _trial_epochs(table) -> int:
    """Epochs trained by all trials (under PBT not those inherited: a trial continues from its donor's epoch)."""
    return int(table["epochs_trained" if "epochs_trained" in table else "epochs"].sum()) if len(table) else 0


def _several(s) -> str:
    """What the summary's head says of several objectives."""
    if len(s.objectives) < 2:
        return ""
    stop = f"; {s.scheduler.name} stops trials on the first alone" if s.scheduler.name == "asha" else ""
    return f", the first of {len(s.objectives)} objectives ({', '.join(o.name for o in s.objectives[1:])} too{stop})"


def summary_text(space: SearchSpace, table, top: int = 5) -> str:
    s = space.search
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    workers = s.resources.workers
    each = (f"each trial on {workers} data-parallel workers (global batch split over them), " if workers > 1
            else "each trial in one process, ")
    epochs = budget.text(s, _trial_epochs(table)) or f"{_trial_epochs(table)} trial-epochs"
    head = (f"{len(table)} trials ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}), "
            f"{each}{epochs}; top {min(top, len(table))} "
            f"by {s.metric} ({s.mode}){_several(s)}:")
    cols = [c for c in table.columns if c != "error" and (c != WORLD_SIZE or workers > 1)]
    return head + "\n" + table[cols].head(top).to_string(index=False, float_format=lambda x: f"{x:.4g}")


def finish(plan: storage.RunPlan, grid, arrays, statuses: dict[str, str] | None = None,
           interrupted: bool = False, reeval=None) -> dict:
    """results.csv, plots, printed summary, export of the best trial at its best epoch (+ test metrics).
    ``reeval``: the re-evaluation of the best configurations (a final.Phase, used through its methods: final.py
    imports this module): results.csv gains their scores, reeval.csv lists its runs, and the export is the best
    mean's configuration."""
    from ..export import write_export
    from ..faults import driver_fault
    from ..training import quiet
    from . import interrupt

    quiet()
    mark("finish_start")
    space, paths = plan.space, plan.paths
    s = space.search
    run_dir = paths.local
    run_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(space, grid, statuses)
    if reeval is not None:
        table = reeval.score_table(space, table, run_dir)  # and reeval.csv
    write_text(run_dir / "results.csv", table.to_csv(index=False))
    print(summary_text(space, table), flush=True)
    if reeval is not None:
        print(reeval.summary(space, table, run_dir), flush=True)
    print(f"results: {run_dir / 'results.csv'}")
    mark("results_written")
    out = {"run_dir": str(run_dir), "results": str(run_dir / "results.csv"), "trials": len(table),
           "trial_epochs": _trial_epochs(table),
           **({"budget": {"trial_epochs": s.budget.trial_epochs, "used": _trial_epochs(table),
                          "kept_for_reeval": budget.reserved(s)}}
              if s.budget.trial_epochs is not None else {}),
           "reports": write_reports(space, grid, table, run_dir), "ray_dir": paths.ray_dir}
    mark("plots_written")
    out.update(study_report(space, paths, dict(zip(table["trial_id"].astype(str), table["status"]))))
    mark("importance_done")
    if reeval is not None:
        out["reeval"] = reeval.report(run_dir)
    if interrupted:
        storage.upload_reports(paths)
        done = (f"{len(table)} trials ({budget.text(s, _trial_epochs(table))})" if s.budget.trial_epochs is not None
                else f"{len(table)} of {s.num_samples} trials")
        when = reeval.progress() if reeval is not None else f"after {done}"
        print(f"search interrupted {when}; nothing exported; continue it with: {storage.resume_command(paths)}",
              file=sys.stderr, flush=True)
        return {**out, "interrupted": True}
    if len(s.objectives) > 1:  # the Pareto front exported, best/ by search.pick (front.py)
        return finish_front(plan, grid, arrays, table, out)
    record = None
    if reeval is not None:  # the best mean's configuration, with its best run's weights
        chosen, record = reeval.export_choice(space, grid, table)
    else:
        chosen = export_choice(space, grid, table)
    if chosen is None:
        first = next((r.error for r in grid if r.error), None)
        reason = f"; first error: {str(first).strip().splitlines()[-1][:200]}" if first else ""
        raise UserError(f"no completed or early-stopped trial reported {s.metric} with a checkpoint, nothing "
                        f"exported (see {run_dir}){reason}")

    if record is not None:
        seed = "the search's trial" if record["train_seed"] is None else f"training seed {record['train_seed']}"
        se = "" if record["se"] is None else f" ± {record['se']:.4f}"
        print(f"best configuration: trial {record['trial_id']}, {s.metric} mean {record['mean']:.4f}{se} (standard "
              f"error) over n={record['n']} runs; its weights: run {record['weights_from']} ({seed})", flush=True)
    print(f"exporting trial {chosen[2].get('trial_id')} (epoch {chosen[2].get('training_iteration')}): test metrics",
          flush=True)
    driver_fault("export")  # test-only: hold the driver here
    mark("scoring_start")
    classifier, cfg, values, metrics = trial_model(space, chosen, arrays)
    mark("scoring_end")
    if record is not None:
        metrics["reeval"] = record
    # a signal now waits: the new export replaces the old one whole, or (interrupted) not at all
    with interrupt.deferred() as received:
        dest = write_export(paths.export_dir, classifier, config=cfg.to_dict(), metrics=metrics,
                            hyperparameters=values, experiment=s.experiment, link_root=paths.link_root,
                            before_replace=received.raise_if_any)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"best trial {metrics['trial_id']} at epoch {metrics['epoch']}: {shown}")
    print(f"exported: {dest} (latest: {paths.link_root / 'best'})")
    # with re-evaluation, best_trial is the configuration's results.csv row; metrics' trial_id the weights' run
    out.update(best_trial=record["trial_id"] if record else metrics["trial_id"], metrics=metrics,
               hyperparameters=values, export=str(dest))
    write_text(run_dir / "best.json", json.dumps(out, indent=2, default=str))
    storage.upload_reports(paths)
    mark("export_written")
    return out


def finish_front(plan: storage.RunPlan, grid, arrays, table, out: dict) -> dict:
    """Several objectives: export the Pareto front and ``best/`` (front.py says what and where); write
    pareto.csv and the plot; returns the summary dict."""
    import shutil

    from ..cost import LATENCY, measure
    from ..evaluation import run_precision, trainer_device
    from ..export import write_export
    from ..faults import driver_fault
    from . import front, interrupt

    space, paths = plan.space, plan.paths
    s, run_dir = space.search, paths.local
    results = {trial_id_of(r): r for r in grid}
    exportable = table[table["status"].isin(EXPORTED)].to_dict("records")
    chosen = [(r, row_checkpoint(space, results[r["trial_id"]], r)) for r in front.front_rows(s, exportable)]
    rows = [r for r, c in chosen if c is not None]  # a member without a checkpoint cannot be exported
    chosen = [c for _, c in chosen if c is not None]
    if not rows:
        first = next((r.error for r in grid if r.error), None)
        reason = f"; first error: {str(first).strip().splitlines()[-1][:200]}" if first else ""
        raise UserError(f"no completed or early-stopped trial reported {', '.join(o.name for o in s.objectives)} "
                        f"with a checkpoint, nothing exported (see {run_dir}){reason}")
    rule = front.pick_rule(s)
    picked = rule.choose(rows)
    print(front.front_text(s, rows, picked), flush=True)
    if s.scheduler.name == "asha":
        print(f"(ASHA stopped trials on the first objective, {s.metric}, alone)", flush=True)
    driver_fault("export")  # test-only: hold the driver here

    root = Path(paths.export_dir).parent / front.FOLDER
    tmp = root.with_name(front.FOLDER + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    members, best = [], None
    try:
        for n, (row, choice) in enumerate(zip(rows, chosen), 1):
            classifier, cfg, values, metrics = trial_model(space, choice, arrays)
            # one at a time, nothing else training: the figure to compare with the trial's (taken beside others)
            device = trainer_device(cfg)
            trained = classifier.extra_hparams.get("trained_precision")
            again = measure(classifier, device, run_precision(cfg.trainer.precision, trained, device))
            metrics.update({front.EXPORT_LATENCY: again.latency.median_ms,
                            front.EXPORT_LATENCY_IQR: again.latency.iqr_ms})
            write_export(tmp / front.member_name(n, row), classifier, config=cfg.to_dict(), metrics=metrics,
                         hyperparameters=values, experiment=s.experiment)
            members.append(front.member_row(s, n, row, metrics, values, picked == n - 1))
            print(f"  exported {front.member_name(n, row)}: {LATENCY} {row.get(LATENCY, math.nan):.3g} ms in the "
                  f"trial, {again.latency.text()} at export", flush=True)
            if picked == n - 1:
                best = classifier, cfg, values, metrics
        # a signal now waits: the new front replaces the old one whole, or (interrupted) not at all
        with interrupt.deferred() as received:
            received.raise_if_any()
            front.replace_folder(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    front.write_csv(run_dir / front.CSV, members)
    plot = front.write_plot(run_dir / front.PLOT, s, exportable)
    out.update(pareto=[str(root / front.member_name(m["n"], m)) for m in members],
               pareto_csv=str(run_dir / front.CSV), **({"pareto_plot": str(plot)} if plot else {}), pick=str(rule))
    if best is None:
        # no member satisfies the rule: the front is exported, best/ (and the best link) left as they were
        print(rule.why_none(rows), file=sys.stderr, flush=True)
        print(f"exported the Pareto front: {root} (no best/ written)")
        out.update(best_trial=None)
    else:
        classifier, cfg, values, metrics = best
        with interrupt.deferred() as received:
            dest = write_export(paths.export_dir, classifier, config=cfg.to_dict(), metrics=metrics,
                                hyperparameters=values, experiment=s.experiment, link_root=paths.link_root,
                                before_replace=received.raise_if_any)
        shown = ", ".join(f"{o.name}={metrics[o.name]:.4g}" for o in s.objectives if o.name in metrics)
        print(f"best trial by '{rule}': {metrics['trial_id']} at epoch {metrics['epoch']}: {shown}")
        print(f"exported: {root} (the front) and {dest} (latest: {paths.link_root / 'best'})")
        out.update(best_trial=metrics["trial_id"], metrics=metrics, hyperparameters=values, export=str(dest))
    (run_dir / "best.json").write_text(json.dumps(out, indent=2, default=str))
    storage.upload_reports(paths)
    return out


def write_reports(space: SearchSpace, grid, table, run_dir: Path) -> list[str]:
    """Learning curves and parallel coordinates (tune_cifar.search.report); a plotting error only warns."""
    from .report import write_reports as plots

    try:
        curves = {}
        for result in grid:
            curves[str(trial_id_of(result))] = trial_curve(result)
        return [str(p) for p in plots(run_dir, table, curves, space, exploits(space, grid))]
    except Exception as err:  # the results matter more than the pictures
        log.warning("could not write the plots: %s", err)
        return []


def study_report(space: SearchSpace, paths: storage.RunPaths, statuses: dict[str, str]) -> dict:
    """Close the run's trials left RUNNING in its Optuna study (as results.csv's ``statuses`` say), print
    and plot parameter importance (tune_cifar.search.importance). Failures here only warn (a run from
    before the default study has none)."""
    from . import study
    from .importance import PLOT, objective_trials, param_importances, run_trials

    s = space.search
    if not scheduler_parts(s).uses_study:  # e.g. PBT searches without Optuna (its trials change hyperparameters)
        return {}
    try:
        store, name = study.study_storage(s, paths.local), study.study_name(s)
        study.end_run(store, name, paths.name, statuses, s.mode)
        trials = run_trials(store, name, paths.name)
        if len(s.objectives) > 1:  # one ranking per objective (importance.objective_trials)
            found = {}
            for k, o in enumerate(s.objectives):
                plot = PLOT if k == 0 else PLOT.replace(".png", f"_{k + 1}.png")
                importances, text = param_importances(objective_trials(trials, k), o.mode, paths.local, plot)
                print(f"{o.name}: {text}", flush=True)
                found[o.name] = {"importances": importances,  # a plot only with a parameter above noise
                                 **({"importance_plot": str(paths.local / plot)} if drawn(importances) else {})}
            return {"study": study.storage_url(s, paths.local), "importances": found}
        importances, text = param_importances(trials, s.mode, paths.local)
    except Exception as err:  # the results matter more than the importance
        log.warning("no parameter importance: %s", (str(err).strip().splitlines() or [repr(err)])[0][:200])
        return {}
    print(text, flush=True)
    return {"study": study.storage_url(s, paths.local), "importances": importances,
            **({"importance_plot": str(paths.local / PLOT)} if drawn(importances) else {})}


def drawn(report: dict | None) -> bool:
    """Whether param_importances drew its plot: only with a parameter distinguishable from noise."""
    return bool(report and report["significant"])
