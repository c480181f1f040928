"""Hyperparameter importance of a finished (or interrupted) search: Optuna's PED-ANOVA.

Optuna's importance evaluators read COMPLETE trials only; under ASHA most trials are PRUNED, so
few would count. The search's own ranking is used instead, as TPE ranks trials: those that ran to
``max_epochs`` first, by their value; then the stopped ones by the epoch they reached, then their
value there. Each finished trial of the run becomes a COMPLETE trial of an in-memory study whose
value is that rank (lower is better), and PED-ANOVA (``optuna.importance.PedAnovaImportanceEvaluator``,
no extra dependency; fANOVA would need scikit-learn) measures how much each parameter matters for
reaching the top ``max(10 %, 2 trials)`` of that ranking. Optuna draws the plot
(``optuna.visualization.matplotlib.plot_param_importances``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..atomic import save_figure

log = logging.getLogger("tune_cifar")

PLOT = "param_importances.png"
MIN_TRIALS = 5  # finished (completed or stopped) trials needed for a ranking worth printing
METHOD = "PED-ANOVA"


def _rank_key(t, mode: str):
    """TPE's order (optuna.samplers._tpe: complete by value, then pruned by step reached and value)."""
    from optuna.trial import TrialState

    sign = -1.0 if mode == "max" else 1.0
    if t.state == TrialState.COMPLETE:
        return (0, 0, sign * t.value)
    step = max(t.intermediate_values)
    return (1, -step, sign * t.intermediate_values[step])


def ranked_study(trials, mode: str):
    """An in-memory study: one COMPLETE trial per finished trial, its value its rank (0 is best)."""
    import optuna
    from optuna.trial import TrialState

    finished = [t for t in trials if (t.state == TrialState.COMPLETE and t.value is not None)
                or (t.state == TrialState.PRUNED and t.intermediate_values)]
    study = optuna.create_study(direction="minimize")
    for rank, t in enumerate(sorted(finished, key=lambda t: _rank_key(t, mode))):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=float(rank),
                                                  params=t.params, distributions=t.distributions))
    return study


def run_trials(storage, name: str, run: str | None):
    """The Optuna trials of one search run (the study may hold earlier, warm-started ones too)."""
    import optuna

    from .names import RUN

    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.get_trials(deepcopy=False) if run is None or t.user_attrs.get(RUN) == run]


def objective_trials(trials, k: int):
    """A multi-objective study's trials seen as one objective's, ``k``. The first objective is ranked as with
    one objective (completed trials by value, stopped ones by the epoch they reached, then their value there:
    ``epoch_values`` become intermediate values). Any other is ranked by its value alone, completed and
    stopped trials together, each at its best epoch by the first objective (its results.csv row): the epoch a
    trial reached says nothing of its latency or size."""
    import optuna
    from optuna.trial import TrialState

    from .names import BEST_EPOCH, epoch_values

    out = []
    for t in trials:
        epochs = epoch_values(t)
        if t.state == TrialState.COMPLETE and t.values:
            out.append(optuna.trial.create_trial(state=t.state, value=t.values[k], params=t.params,
                                                 distributions=t.distributions))
        elif t.state == TrialState.PRUNED and k == 0:
            out.append(optuna.trial.create_trial(state=t.state, params=t.params, distributions=t.distributions,
                                                 intermediate_values={e: v[k] for e, v in epochs.items()}))
        elif t.state == TrialState.PRUNED and t.user_attrs.get(BEST_EPOCH) in epochs:
            out.append(optuna.trial.create_trial(state=TrialState.COMPLETE, params=t.params,
                                                 distributions=t.distributions,
                                                 value=epochs[t.user_attrs[BEST_EPOCH]][k]))
    return out


def param_importances(trials, mode: str, run_dir: Path | None = None, plot: str = PLOT) -> tuple[dict | None, str]:
    """(importances or None, one printable paragraph); with ``run_dir``, also the plot there (file ``plot``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = ranked_study(trials, mode)
    n = len(study.trials)
    if n < MIN_TRIALS:
        return None, (f"parameter importance: needs at least {MIN_TRIALS} completed or stopped-early trials, "
                      f"this search has {n}")
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 2 / n))
    with warnings.catch_warnings():  # "experimental" plotting; quantile notes on tiny studies
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        if run_dir is not None:
            _plot(study, evaluator, n, Path(run_dir) / plot)
    ranking = ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
    return importances, (f"parameter importance ({METHOD} over {n} trials ranked as TPE ranks them; "
                         f"{Path(run_dir) / plot if run_dir is not None else 'no plot'}): {ranking}")


def _plot(study, evaluator, n: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_param_importances

    with matplotlib.rc_context():  # Optuna switches the style to ggplot: keep it to this plot
        ax = plot_param_importances(study, evaluator=evaluator, target_name="rank")
        ax.set_title(f"hyperparameter importance ({METHOD}, {n} trials)", loc="left")
        fig = ax.figure
        fig.set_size_inches(8, max(3.0, 0.5 * len(ax.get_yticks()) + 2))
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
        plt.close(fig)
    return path
