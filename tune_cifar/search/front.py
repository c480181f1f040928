"""A search of several objectives, at its end: which trials form the Pareto front, which one is ``best/``
(``search.pick``), and the front's files (``results.finish_front`` exports them).

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

import logging
import shutil
from pathlib import Path

from .objectives import PickRule, first_objective_rule, pareto_front

log = logging.getLogger("tune_cifar")

FOLDER = "pareto"  # <experiment>/pareto/<n>_<trial_id>/
CSV = "pareto.csv"
PLOT = "pareto_front.png"
EXPORT_LATENCY, EXPORT_LATENCY_IQR = "model/latency_ms_export", "model/latency_iqr_ms_export"


def pick_rule(s) -> PickRule:
    """``search.pick`` (checked when the settings were read), else the best by the first objective."""
    from ..metrics import COST_METRICS

    if s.pick:
        return PickRule.parse(s.pick, [*(o.name for o in s.objectives), *COST_METRICS])
    return first_objective_rule(s.objectives)


def front_rows(s, rows: list[dict]) -> list[dict]:
    """The rows (results.csv's exportable ones, in its order) on the Pareto front of ``s.objectives``."""
    return [rows[i] for i in pareto_front(rows, s.objectives)]


def front_text(s, rows: list[dict], picked: int | None) -> str:
    """The printed front: one line per member, its objectives, the one chosen marked."""
    names = [o.name for o in s.objectives]
    lines = [f"Pareto front ({len(rows)} trials; {', '.join(f'{o.mode} {o.name}' for o in s.objectives)}):"]
    for n, r in enumerate(rows, 1):
        shown = ", ".join(f"{m}={r[m]:.4g}" for m in names)
        mark = "  <- best/ (" + str(pick_rule(s)) + ")" if picked == n - 1 else ""
        lines.append(f"  {n}. trial {r['trial_id']} (epoch {r['best_epoch']}, {r['status']}): {shown}{mark}")
    return "\n".join(lines)


def member_name(n: int, row: dict) -> str:
    return f"{n}_{row['trial_id']}"


def replace_folder(tmp: Path, root: Path) -> None:
    """Put the complete ``tmp`` in place of ``root`` (the earlier front goes only once the new one is whole)."""
    old = root.with_name(root.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if root.exists():
        root.rename(old)
    tmp.rename(root)
    shutil.rmtree(old, ignore_errors=True)


def member_row(s, n: int, row: dict, metrics: dict, values: dict, picked: bool) -> dict:
    """A pareto.csv row: folder, trial, objectives and model costs (the trial's), latency at export, test
    metrics, parameters, whether it is best/."""
    from ..metrics import REPORTED

    names = [o.name for o in s.objectives]
    return {"n": n, "folder": f"{FOLDER}/{member_name(n, row)}", "trial_id": row["trial_id"],
            "epoch": row["best_epoch"], "status": row["status"], **{m: row[m] for m in names},
            **{m: row[m] for m in REPORTED if m in row and m not in names},
            EXPORT_LATENCY: metrics[EXPORT_LATENCY], EXPORT_LATENCY_IQR: metrics[EXPORT_LATENCY_IQR],
            **{k: v for k, v in metrics.items() if k.endswith("/test")}, **values, "picked": picked}


def write_csv(path: Path, members: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(members).to_csv(path, index=False)


def write_plot(path: Path, s, rows: list[dict]) -> Path | None:
    """Optuna's Pareto-front plot of the exportable trials' ``rows`` (2 or 3 objectives; a plotting error
    only warns)."""
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

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the trials as results.csv scores them (a stopped trial at its best epoch): Optuna's study holds
        # stopped trials without values (PRUNED), which its plot leaves out
        study = optuna.create_study(directions=["maximize" if o.mode == "max" else "minimize" for o in s.objectives])
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
