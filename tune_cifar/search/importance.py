"""Hyperparameter importance of a finished (or interrupted) search: Optuna's PED-ANOVA, reported
only where it stands above noise.

Optuna's importance evaluators read COMPLETE trials only; under ASHA most trials are PRUNED, so
few would count. The search's own ranking is used instead, as TPE ranks trials: those that ran to
``max_epochs`` first, by their value; then the stopped ones by the epoch they reached, then their
value there. Each finished trial of the run becomes a COMPLETE trial of an in-memory study whose
value is that rank (lower is better), and PED-ANOVA (``optuna.importance.PedAnovaImportanceEvaluator``)
measures how much each parameter matters for reaching the top 25 %, 50 % and 75 % of that ranking
(QUANTILES; the importance shown is their mean, normalised as Optuna does).

Why a test: PED-ANOVA gives every parameter some importance, noise included, and its numbers are not
comparable across parameters (a continuous or conditional one, seen in few trials, gets large values
by chance; a two-way choice cannot). On synthetic 16-trial studies over cpu_small's space where only
``model.model_name`` mattered, the raw ranking put it first in 3 of 40 seeds. So a parameter is
reported as distinguishable from noise only by a permutation test over all parameters at once (max-T,
Westfall & Young):

1. the ranking is shuffled SHUFFLES times (seeded: the same study gives the same answer) and every
   parameter's importance computed on each shuffle: each parameter's own noise distribution;
2. each importance is standardised by its noise (z = (value - mean) / sd);
3. the null is the **largest** z over all parameters in each shuffle; a parameter counts if its real z
   exceeds that maximum's LEVEL (95 %) quantile, so a study of 8 noise parameters flags one in about
   5 % of studies, not in 8 x 5 %.

The printed ranking is ordered by z and marks the distinguishable parameters with ``*``; the plot
(Optuna's ``plot_param_importances``) greys the others. With none, one line says so and there is no
plot; below MIN_TRIALS finished trials there is no test (at 7 trials even a choice that splits the
ranking perfectly is as likely as 1 shuffle in 35).

Measured (tests/test_importance.py, 16 trials, 40 seeds, only ``model.model_name`` matters by +5 points
with 1 point of noise): it ranks first and is distinguishable in 37/40, the only distinguishable one in
35/40 (a parameter that happened to go with it in 16 trials came out too in 3); with no effect at all,
none is distinguishable in 39/40.

Evaluator choice, measured on the same synthetic studies: with the largest *raw* PED-ANOVA importance
as the null, the active parameter was found in 0/20 seeds at a top quantile of 0.25 or 0.5 (0/10 at
0.125, the quantile used before): conditional learning rates, seen in few trials, dominate the maximum.
Standardised, one quantile: 2/20 at 0.25, 12/20 at 0.5 (a choice taken by 12 of 16 trials cannot fill
a top quarter or half unusually); the mean over 0.25, 0.5 and 0.75: 37/40 (above), used here. fANOVA
(``FanovaImportanceEvaluator``) needs scikit-learn, which the project does not install, assesses only
parameters present in every trial (in cpu_small that drops both learning rates, momentum and nesterov)
and fits a 64-tree forest per shuffle: one 16-trial study's 200 shuffles took more than 14 s of CPU
(the run was stopped), so its power was not measured.
Cost: 3 PED-ANOVA evaluations per shuffle, about 5 s of CPU for 200 shuffles of 16 or 50 trials.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..atomic import save_figure

log = logging.getLogger("tune_cifar")

PLOT = "param_importances.png"
MIN_TRIALS = 8  # finished (completed or stopped) trials below which no test is run
METHOD = "PED-ANOVA"
QUANTILES = (0.25, 0.5, 0.75)  # top fractions of the ranking PED-ANOVA measures (importance: their mean)
SHUFFLES = 200  # permutations of the ranking for the noise distribution
LEVEL = 0.95  # a parameter counts above this quantile of the largest noise score
SEED = 0  # of the shuffles


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


def evaluator(quantiles=QUANTILES):
    """Optuna's PED-ANOVA averaged over ``quantiles``: an Optuna evaluator, so that
    ``get_param_importances`` and ``plot_param_importances`` take it as they take Optuna's own."""
    from optuna.importance import BaseImportanceEvaluator, PedAnovaImportanceEvaluator

    class MeanPedAnova(BaseImportanceEvaluator):
        def __init__(self):
            self.evaluators = [PedAnovaImportanceEvaluator(target_quantile=q) for q in quantiles]

        def evaluate(self, study, params=None, *, target=None):
            each = [e.evaluate(study, params, target=target) for e in self.evaluators]
            mean = {k: sum(d.get(k, 0.0) for d in each) / len(each) for k in each[0]}
            return dict(sorted(mean.items(), key=lambda kv: -kv[1]))

    return MeanPedAnova()


def noise_test(study, shuffles: int = SHUFFLES, level: float = LEVEL, seed: int = SEED,
               quantiles=QUANTILES) -> tuple[dict[str, float], float]:
    """({parameter: score}, threshold): each parameter's importance (the mean over ``quantiles``)
    standardised by its own importances on shuffled rankings, and the ``level`` quantile of the
    largest such score over all parameters in each shuffle (see the module docstring).
    ``study``: COMPLETE trials numbered 0..n-1, as ``ranked_study`` makes them."""
    import numpy as np

    mean_ped_anova = evaluator(quantiles)
    names = sorted({k for t in study.trials for k in t.distributions})
    values = np.array([t.value for t in sorted(study.trials, key=lambda t: t.number)])

    def importances(v) -> np.ndarray:  # one per parameter; Optuna's ``target`` reads the values given
        found = mean_ped_anova.evaluate(study, names, target=lambda t: v[t.number])
        return np.array([found.get(k, 0.0) for k in names])

    with warnings.catch_warnings():  # "computes the importances of params to achieve low target": yes
        warnings.simplefilter("ignore")
        real = importances(values)
        rng = np.random.default_rng(seed)
        null = np.stack([importances(rng.permutation(values)) for _ in range(shuffles)])
    mean, sd = null.mean(axis=0), null.std(axis=0)

    def score(x):  # 0 where a parameter's importance never varies (one value in every trial)
        return np.divide(x - mean, sd, out=np.zeros_like(x), where=sd > 0)

    threshold = float(np.quantile(score(null).max(axis=-1), level))
    return dict(zip(names, score(real).tolist())), threshold


def param_importances(trials, mode: str, run_dir: Path | None = None,
                      plot: str = PLOT) -> tuple[dict | None, str]:
    """(report or None, one printable line); with ``run_dir`` and a parameter above noise, also the
    plot there (file ``plot``). The report: ``importances`` (Optuna's, normalised, ordered by score),
    ``significant`` (the parameters distinguishable from noise), ``scores`` and ``threshold`` of the test."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = ranked_study(trials, mode)
    n = len(study.trials)
    if n < MIN_TRIALS:
        return None, (f"parameter importance: needs at least {MIN_TRIALS} completed or stopped-early trials, "
                      f"this search has {n}")
    scores, threshold = noise_test(study)
    evaluator_ = evaluator()
    with warnings.catch_warnings():  # "experimental" plotting
        warnings.simplefilter("ignore")
        normalised = optuna.importance.get_param_importances(study, evaluator=evaluator_)
    order = sorted(scores, key=lambda k: -scores[k])
    significant = [k for k in order if scores[k] > threshold]
    report = {"importances": {k: normalised.get(k, 0.0) for k in order}, "significant": significant,
              "scores": {k: scores[k] for k in order}, "threshold": threshold}
    test = f"{SHUFFLES} shuffles of the ranking, {LEVEL:.0%}"
    if not significant:
        return report, (f"parameter importance: no parameter is distinguishable from noise at {n} trials "
                        f"({METHOD}, {test})")
    drawn = _plot(study, evaluator_, n, significant, Path(run_dir) / plot) if run_dir is not None else "no plot"
    ranking = ", ".join(f"{k}{'*' if k in significant else ''} {normalised.get(k, 0.0):.2f}" for k in order)
    return report, (f"parameter importance ({METHOD} over {n} trials ranked as TPE ranks them; * = distinguishable "
                    f"from noise ({test}), ordered by distance above noise; {drawn}): {ranking}")


def _plot(study, evaluator_, n: int, significant: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_param_importances

    # Optuna switches the style to ggplot: keep it to this plot; its plotting is "experimental"
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plot_param_importances(study, evaluator=evaluator_, target_name="rank")
        # Optuna draws one bar per parameter, in the order of its tick labels: grey the noise
        for bar, label in zip(ax.patches, ax.get_yticklabels()):
            if label.get_text() not in significant:
                bar.set_color("lightgrey")
                label.set_color("grey")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.set_title(f"hyperparameter importance ({METHOD}, {n} trials); grey: not distinguishable from noise",
                     loc="left", fontsize=10)
        fig = ax.figure
        fig.set_size_inches(8, max(3.0, 0.5 * len(ax.get_yticks()) + 2))
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
        plt.close(fig)
    return path
