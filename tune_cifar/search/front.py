"""A search of several objectives, at its end: the Pareto front exported, ``best/`` by ``search.pick``.

- **The front**: among the trials that can be exported (completed or stopped early, as with one
  objective), those no other one dominates, each with its objectives at its best epoch by the first
  objective (results.csv's row; that epoch's checkpoint is the one exported).
- **Exports**: each member is a normal export folder (``predict --export`` takes it),
  ``<experiment>/pareto/<n>_<trial_id>/``, numbered in results.csv's order (by the first objective); the
  whole ``pareto/`` folder is replaced at once (an interrupted export leaves the earlier one). Its
  metrics.json has the trial's metrics, test metrics, and ``model/latency_ms_export``: the latency measured
  again here, one member at a time (the trials' figures were taken while other trials trained).
- **best/** (and ``<storage_path>/best``): the member ``search.pick`` chooses, or the best by the first
  objective without a rule. A rule no member satisfies says so in one line; the front is exported, no
  ``best/`` is written and an earlier one (and the ``best`` link) is left as it was.
- ``pareto.csv`` (one row per member: folder, trial, objectives, latency at export, parameters, picked)
  and ``pareto_front.png`` (Optuna's ``plot_pareto_front`` over the exportable trials) in the run folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from ..errors import UserError
from . import storage
from .objectives import PickRule, first_objective_rule, pareto_front

log = logging.getLogger("tune_cifar")

FOLDER = "pareto"  # <experiment>/pareto/<n>_<trial_id>/
CSV = "pareto.csv"
PLOT = "pareto_front.png"
EXPORT_LATENCY, EXPORT_LATENCY_IQR = "model/latency_ms_export", "model/latency_iqr_ms_export"


def pick_rule(s) -> PickRule:
    """``search.pick`` (checked when the settings were read), else the best by the first objective."""
    from ..cost import COST_METRICS

    if s.pick:
        return PickRule.parse(s.pick, [*(o.name for o in s.objectives), *COST_METRICS])
    return first_objective_rule(s.objectives)


def front_rows(space, table) -> list[dict]:
    """The rows of results.csv on the Pareto front, in results.csv's order."""
    from .results import EXPORTED

    rows = table[table["status"].isin(EXPORTED)].to_dict("records")
    return [rows[i] for i in pareto_front(rows, space.search.objectives)]


def front_text(s, rows: list[dict], picked: int | None) -> str:
    """The printed front: one line per member, its objectives, the one chosen marked."""
    names = [o.name for o in s.objectives]
    lines = [f"Pareto front ({len(rows)} trials; {', '.join(f'{o.mode} {o.name}' for o in s.objectives)}):"]
    for n, r in enumerate(rows, 1):
        shown = ", ".join(f"{m}={r[m]:.4g}" for m in names)
        mark = "  <- best/ (" + str(pick_rule(s)) + ")" if picked == n - 1 else ""
        lines.append(f"  {n}. trial {r['trial_id']} (epoch {r['best_epoch']}, {r['status']}): {shown}{mark}")
    return "\n".join(lines)


def finish_front(plan, grid, arrays, table, out: dict) -> dict:
    """Export the front and ``best/``; write pareto.csv and the plot; returns the summary dict."""
    from ..cost import LATENCY, REPORTED, measure
    from ..evaluation import run_precision, trainer_device
    from ..export import write_export
    from ..faults import driver_fault
    from . import interrupt
    from .results import row_checkpoint, trial_id_of, trial_model

    space, paths = plan.space, plan.paths
    s, run_dir = space.search, paths.local
    results = {trial_id_of(r): r for r in grid}
    rows = front_rows(space, table)
    chosen = [(r, row_checkpoint(space, results[r["trial_id"]], r)) for r in rows]
    rows = [r for r, c in chosen if c is not None]  # a member without a checkpoint cannot be exported
    chosen = [c for _, c in chosen if c is not None]
    if not rows:
        first = next((r.error for r in grid if r.error), None)
        reason = f"; first error: {str(first).strip().splitlines()[-1][:200]}" if first else ""
        raise UserError(f"no completed or early-stopped trial reported {', '.join(o.name for o in s.objectives)} "
                        f"with a checkpoint, nothing exported (see {run_dir}){reason}")
    rule = pick_rule(s)
    picked = rule.choose(rows)
    print(front_text(s, rows, picked), flush=True)
    if s.scheduler.name == "asha":
        print(f"(ASHA stopped trials on the first objective, {s.metric}, alone)", flush=True)
    driver_fault("export")  # test-only: hold the driver here

    root = Path(paths.export_dir).parent / FOLDER
    tmp = root.with_name(FOLDER + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    members, best_model = [], None
    try:
        for n, (row, choice) in enumerate(zip(rows, chosen), 1):
            classifier, cfg, values, metrics = trial_model(space, choice, arrays)
            # one at a time, nothing else training: the figure to compare with the trial's (taken beside others)
            device = trainer_device(cfg)
            precision = run_precision(cfg.trainer.precision, classifier.extra_hparams.get("trained_precision"), device)
            again = measure(classifier, device, precision)
            metrics.update({EXPORT_LATENCY: again.latency.median_ms, EXPORT_LATENCY_IQR: again.latency.iqr_ms})
            name = f"{n}_{row['trial_id']}"
            write_export(tmp / name, classifier, config=cfg.to_dict(), metrics=metrics, hyperparameters=values,
                         experiment=s.experiment)
            members.append({"n": n, "folder": f"{FOLDER}/{name}", "trial_id": row["trial_id"], "epoch": row["best_epoch"],
                            "status": row["status"], **{o.name: row[o.name] for o in s.objectives},
                            **{m: row[m] for m in REPORTED if m in row and m not in [o.name for o in s.objectives]},
                            EXPORT_LATENCY: again.latency.median_ms, EXPORT_LATENCY_IQR: again.latency.iqr_ms,
                            **{k: metrics[k] for k in metrics if k.endswith("/test")},
                            **values, "picked": picked == n - 1})
            print(f"  exported {name}: {LATENCY} {row.get(LATENCY, float('nan')):.3g} in the trial, "
                  f"{again.latency.text()} at export", flush=True)
            if picked == n - 1:
                best_model = (classifier, cfg, values, metrics)
        # a signal now waits: the new front replaces the old one whole, or (interrupted) not at all
        with interrupt.deferred() as received:
            received.raise_if_any()
            old = root.with_name(FOLDER + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if root.exists():
                root.rename(old)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_csv(run_dir / CSV, members)
    plot = write_plot(run_dir / PLOT, space, table)
    out.update(pareto=[str(root / m["folder"].split("/", 1)[1]) for m in members], pareto_csv=str(run_dir / CSV),
               **({"pareto_plot": str(plot)} if plot else {}), pick=str(rule))
    if best_model is None:
        # no member satisfies the rule: the front is exported, best/ (and the best link) left as they were
        print(rule.why_none(rows), file=sys.stderr, flush=True)
        print(f"exported the Pareto front: {root} (no best/ written)")
        out.update(best_trial=None)
    else:
        classifier, cfg, values, metrics = best_model
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


def write_csv(path: Path, members: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(members).to_csv(path, index=False)


def write_plot(path: Path, space, table) -> Path | None:
    """Optuna's Pareto-front plot of the exportable trials (2 or 3 objectives; a plotting error only warns)."""
    s = space.search
    if len(s.objectives) > 3:
        log.warning("no Pareto-front plot: Optuna draws 2 or 3 objectives, this search has %d", len(s.objectives))
        return None
    try:
        import warnings

        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        import optuna
        from optuna.visualization.matplotlib import plot_pareto_front

        from .results import EXPORTED

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the trials as results.csv scores them (a stopped trial at its best epoch): Optuna's study holds
        # stopped trials without values (PRUNED), which its plot leaves out
        study = optuna.create_study(directions=["maximize" if o.mode == "max" else "minimize" for o in s.objectives])
        rows = table[table["status"].isin(EXPORTED)].to_dict("records")
        for r in rows:
            values = [r[o.name] for o in s.objectives]
            if all(isinstance(v, float) and v == v for v in values):
                study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=values,
                                                          user_attrs={"trial_id": r["trial_id"]}))
        with warnings.catch_warnings(), matplotlib.rc_context():  # "experimental"; Optuna's ggplot style
            warnings.simplefilter("ignore")
            ax = plot_pareto_front(study, target_names=[o.name for o in s.objectives])
            ax.set_title(f"Pareto front ({len(rows)} trials)", loc="left")
            fig = ax.figure
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return path
    except Exception as err:  # the exports matter more than the picture
        log.warning("could not draw the Pareto front: %s", err)
        return None
