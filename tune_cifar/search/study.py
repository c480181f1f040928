"""The Optuna study of a search: what it is told about each trial, where it is kept, how it ends.

``StudySearch`` is Ray Tune's ``OptunaSearch`` telling the study what the search itself ranks
(``results.csv`` and the export):

- every validation epoch is an intermediate value (``trial.report(value, epoch)``);
- a trial that ran all ``search.scheduler.max_epochs`` epochs is COMPLETE with its **best** epoch's
  value (mode-aware), as results.csv ranks it;
- a trial stopped before that (ASHA, or the time budget) is PRUNED: Optuna records its last epoch's
  value, and TPE ranks pruned trials by the epoch they reached, then that value (the multi-fidelity
  information TPE is built to use); Ray's OptunaSearch told such a trial COMPLETE with its value at
  the rung, so TPE compared 1-epoch numbers with finished ones;
- a trial ended by a non-finite loss, an errored trial, or one that never reported is FAIL (Optuna
  refuses NaN as a value, and Ray's OptunaSearch left such a trial RUNNING).

How does it know ASHA stopped a trial? Tune tells a searcher the same ``on_trial_complete(result)``
for both; a trial's function only returns after ``max_epochs`` epochs (no early stopping inside a
trial), so a last result with ``training_iteration < max_epochs`` means the scheduler stopped it.

Each Optuna trial carries user attributes ``ray_trial_id`` (the results.csv ``trial_id``) and ``run``
(the run folder's name). ``end_run`` closes every trial of the run still RUNNING when a search
returns: as results.csv has it (Tune ends the trials running at the time budget without telling the
searcher), else FAIL (interrupted, or suggested just before a kill); on ``--resume`` an interrupted
trial continues in a new Optuna trial with the same parameters and epochs (Optuna cannot reopen a
finished trial).

Several objectives (``search.metric`` a list): the study has one direction per objective and Optuna's
multi-objective sampling (TPE, or NSGA-II: ``searcher.name: nsga2``). Optuna keeps no intermediate values
for such a study (``Trial.report`` is single-objective), so each epoch's objective values are kept in the
trial's user attribute ``epoch_values`` ({epoch: [values]}); a completed trial is COMPLETE with the values of
its best epoch by the first objective (the epoch whose checkpoint is kept and exported); a trial stopped
early (ASHA stops on the first objective) is PRUNED without values, which NSGA-II leaves out and TPE ranks
below the completed ones.

Where the study lives: ``search.optuna_storage``, else ``<run folder>/optuna.db`` (SQLite), named
``search.optuna_study`` or the experiment. A search that finds trials in its study (a warm start)
seeds its sampler from ``searcher.seed`` and their number, so it does not redraw their points.
"""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune.search.optuna import OptunaSearch

from ..errors import UserError
from .names import (BEST_EPOCH, ENDED, EPOCH_VALUES, RAY_TRIAL, RUN, STOP_REASON, STUDY_FILE,
                    epoch_values, study_name)


def default_storage_url(run_dir: str | Path) -> str:
    """The run folder's SQLite study: ``optuna-dashboard sqlite:///<run folder>/optuna.db``."""
    return f"sqlite:///{Path(run_dir).resolve() / STUDY_FILE}"


def storage_url(s, run_dir: str | Path) -> str:
    """``search.optuna_storage``, else the run folder's SQLite file (the driver's local folder, also
    for a URI storage_path: search.local_path)."""
    return s.optuna_storage or default_storage_url(run_dir)


def study_storage(s, run_dir: str | Path):
    """The study's Optuna storage: ``search.optuna_storage``, else the run folder's optuna.db."""
    return open_storage(storage_url(s, run_dir))


def optuna_storage(s):
    """The Optuna storage of ``search.optuna_storage`` (None if unset; see ``study_storage``)."""
    url = getattr(s, "optuna_storage", None)
    if not url:
        return None
    return open_storage(url)


def open_storage(url: str):
    """An RDBStorage for ``url`` (a SQLite file's folder is created); a bad URL is one clear line."""
    import optuna

    if url.startswith("sqlite:///"):
        db = url.removeprefix("sqlite:///")
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:
        raise UserError(f"search.optuna_storage={url}: {str(err).strip().splitlines()[0][:200]}; allowed: an "
                        f"SQLAlchemy URL such as sqlite:///optuna.db or postgresql://user@host/db") from None


def check_study_direction(storage, s) -> None:
    """An existing persistent study is loaded as it is (Optuna's load_if_exists), direction included:
    refuse one that optimises the other way rather than let TPE steer toward the worst trials."""
    if storage is None:
        return
    import optuna

    try:
        study = optuna.load_study(study_name=study_name(s), storage=storage)
    except KeyError:  # no such study yet: it is created with the search's direction
        return
    from .objectives import Objective

    objectives = s.objectives or [Objective(s.metric, s.mode)]
    want = ", ".join("maximize" if o.mode == "max" else "minimize" for o in objectives)
    have = ", ".join(d.name.lower() for d in study.directions)
    if have != want:
        said = (f"search.mode={s.mode} ({s.metric}) needs" if len(objectives) == 1 else
                f"search.metric/search.mode ({', '.join(f'{o.mode} {o.name}' for o in objectives)}) need")
        raise UserError(f"search.optuna_storage: study '{study_name(s)}' ({len(study.trials)} trials) was created "
                        f"to {have}, but {said} {want}; choose another study with search.optuna_study=NAME")


def check_study(storage, space) -> None:
    """Before anything is written: a study named by ``search.optuna_storage`` (+ ``search.optuna_study``)
    must optimise the same way and hold the same parameters as this space (``check_study_direction``,
    ``check_study_space``)."""
    check_study_direction(storage, space.search)
    check_study_space(storage, space)


def space_distributions(space) -> dict:
    """The Optuna distribution of every parameter the space samples, under the name StudySearch gives it
    (``key``, or ``key@<parent value>`` for one with a distribution per parent value)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for p in space.params:
        for parent, d in p.dists.items():
            if not d.sampled:
                continue
            name = f"{p.key}@{parent}" if p.depends_on else p.key
            a = d.args
            if d.kind == "choice":
                out[name] = CategoricalDistribution(list(range(len(a))) if d._indexed() else list(a))
            elif d.kind in ("uniform", "loguniform"):
                out[name] = FloatDistribution(float(a[0]), float(a[1]), log=d.kind == "loguniform")
            else:
                out[name] = IntDistribution(a[0], a[1], step=a[2] if d.kind == "qint" else 1)
    return out


def _describe(dist) -> str:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return "a choice of " + ", ".join(map(str, dist.choices))
    if isinstance(dist, FloatDistribution):
        return f"{'loguniform' if dist.log else 'uniform'} [{dist.low:g}, {dist.high:g}]"
    return f"int [{dist.low}, {dist.high}]" + (f" step {dist.step}" if dist.step != 1 else "")


def check_study_space(storage, space) -> None:
    """An existing study's trials were drawn from distributions: this space must sample each of their
    parameters from the same one (Optuna raised deep in the first trial otherwise, leaving it RUNNING, and a
    half-made run folder). A parameter the study has not seen yet (a condition never met) is allowed."""
    if storage is None:
        return
    import optuna

    s = space.search
    try:
        study = optuna.load_study(study_name=study_name(s), storage=storage)
    except KeyError:  # no such study yet
        return
    ours, theirs = space_distributions(space), {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            theirs.setdefault(name, dist)
    where = (f"search.optuna_study: study '{study_name(s)}' in {s.optuna_storage} ({len(study.trials)} trials)")
    fix = ("a study holds one search space; choose another study with search.optuna_study=NAME (or "
           "search.optuna_storage), or search that study's space")
    for name, dist in sorted(theirs.items()):
        if name not in ours:
            raise UserError(f"{where} samples {name}, which this space does not sample ({_describe(dist)}); {fix}")
        if ours[name] != dist:
            raise UserError(f"{where} samples {name} from {_describe(dist)}, this space from "
                            f"{_describe(ours[name])}; {fix}")


def sampler_seed(seed: int, n_existing: int) -> int:
    """The sampler's seed for a study that already holds ``n_existing`` trials: the seed itself for a
    new study, else one derived from both, so a warm start does not redraw the earlier random points
    (a RandomSampler(seed=0) on a reused study would repeat the first search's values)."""
    if not n_existing:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, n_existing]).generate_state(1)[0])


def count_trials(storage, name: str) -> int:
    """Trials already in study ``name`` of ``storage`` (0 if there is no such study)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        return 0


def best_of(curve: dict[int, float], mode: str) -> tuple[int, float] | None:
    """(epoch, value) of the best finite value of ``{epoch: value}``; of tied ones the later epoch,
    as results.csv's best_epoch (results._best_index)."""
    finite = [(s, v) for s, v in sorted(curve.items()) if math.isfinite(v)]
    if not finite:
        return None
    best = (max if mode == "max" else min)(v for _, v in finite)
    return [(s, v) for s, v in finite if v == best][-1]


def make_searcher(space, run_dir: str | Path, run: str) -> "StudySearch":
    """The search's StudySearch: its study (``storage``, named ``search.optuna_study`` or the
    experiment), the sampler of ``search.searcher`` seeded for this study, the points to run first."""
    import dataclasses

    from .sampler import make_sampler

    s = space.search
    points = [space.to_optuna(p, "points_to_evaluate") for p in s.searcher.points_to_evaluate]
    store, name = study_storage(s, run_dir), study_name(s)
    seed = sampler_seed(s.searcher.seed, count_trials(store, name))  # a warm start draws new points
    sampler = make_sampler(dataclasses.replace(s, searcher=dataclasses.replace(s.searcher, seed=seed)))
    several = len(s.objectives) > 1  # Optuna's multi-objective study: one direction each
    metric = [o.name for o in s.objectives] if several else s.metric
    mode = [o.mode for o in s.objectives] if several else s.mode
    return StudySearch(space=space.suggest, metric=metric, mode=mode, points_to_evaluate=points or None,
                       sampler=sampler, storage=store, study_name=name, max_epochs=s.scheduler.max_epochs, run=run)


class StudySearch(OptunaSearch):
    """OptunaSearch that tells the study what the search ranks (see the module docstring)."""

    def __init__(self, *args, max_epochs: int, run: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._run = run
        self._curves: dict[str, dict[int, float]] = {}  # trial id -> {epoch: value} reported

    # ------------------------------------------------------------------ Tune's hooks

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None:
            trial.set_user_attr(RAY_TRIAL, trial_id)
            if self._run:
                trial.set_user_attr(RUN, self._run)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        # Tune does not pass a result to on_trial_result when the scheduler stops the trial on it
        # (ASHA, also at max_t): the last epoch arrives here.
        if result:
            self._record(trial_id, result)
        trial, frozen = self._live(trial_id)
        curve = {**epoch_values(frozen), **self._curves.get(trial_id, {})}  # epoch -> [value per objective]
        best = best_of({e: v[0] for e, v in curve.items()}, self._first_mode)  # by the first objective
        if error or (result or {}).get(STOP_REASON) or best is None:
            state, value = TrialState.FAIL, None
            ended = "error" if error else "failed" if (result or {}).get(STOP_REASON) else "no result"
        elif max(curve) >= self._max_epochs:
            state, ended = TrialState.COMPLETE, "completed"
            value = curve[best[0]] if self._several else best[1]  # several: that epoch's values
        else:
            state, value, ended = TrialState.PRUNED, None, "stopped early"  # Optuna: its last value (one objective)
        if best is not None:
            trial.set_user_attr(BEST_EPOCH, best[0])
        trial.set_user_attr(ENDED, ended)
        self._ot_study.tell(trial, value, state=state)
        self._completed_trials.add(trial_id)
        self._curves.pop(trial_id, None)

    # ------------------------------------------------------------------ helpers

    @property
    def _several(self) -> bool:
        return isinstance(self.metric, list)

    @property
    def _first_mode(self) -> str:
        return self.mode[0] if self._several else self.mode

    def _record(self, trial_id: str, result: dict) -> None:
        """Keep the epoch's values and tell Optuna (once per epoch: a retried or resumed trial reports again
        from its checkpoint): an intermediate value (one objective), else the trial's ``epoch_values``."""
        names, step = (self.metric if self._several else [self.metric]), result.get("training_iteration")
        values = [result.get(m) for m in names]
        if step is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return  # a failed trial's NaN report is no epoch
        step, values = int(step), [float(v) for v in values]
        self._curves.setdefault(trial_id, {})[step] = values
        trial, frozen = self._live(trial_id)
        if self._several:
            stored = frozen.user_attrs.get(EPOCH_VALUES) or {}
            trial.set_user_attr(EPOCH_VALUES, {**stored, str(step): values})
        elif step not in frozen.intermediate_values:
            trial.report(values[0], step)

    def _live(self, trial_id: str):
        """(optuna Trial, its FrozenTrial) still RUNNING for a Tune trial. One that ``end_run`` closed
        as FAIL when the search was interrupted continues in a new Optuna trial: same parameters,
        intermediate values and attributes."""
        import optuna

        trial = self._ot_trials[trial_id]
        storage = self._ot_study._storage
        frozen = storage.get_trial(trial._trial_id)
        if frozen.state.is_finished():
            template = optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING, params=frozen.params,
                distributions=frozen.distributions, intermediate_values=frozen.intermediate_values,
                user_attrs={**frozen.user_attrs, "continues_trial": frozen.number})
            new_id = storage.create_new_trial(self._ot_study._study_id, template_trial=template)
            trial = optuna.trial.Trial(self._ot_study, new_id)
            self._ot_trials[trial_id] = trial
            frozen = storage.get_trial(new_id)
        return trial, frozen


def end_run(storage, name: str, run: str, statuses: dict[str, str] | None = None, mode: str = "max") -> int:
    """Close every trial of ``run`` still RUNNING in the study; returns how many.

    Tune ends the trials still running at the time budget without telling the searcher: those are
    told as results.csv has them (``statuses``: ray trial id -> status), ``stopped early`` PRUNED and
    ``completed`` COMPLETE with the best epoch. Any other (``unfinished``: interrupted; or suggested
    just before a kill) is FAIL with ``ended: interrupted``; ``--resume`` continues it
    (StudySearch._live)."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    n, several = 0, len(study.directions) > 1
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(RUN) != run:
            continue
        status = (statuses or {}).get(t.user_attrs.get(RAY_TRIAL), "unfinished")
        curve = epoch_values(t)
        best = best_of({e: v[0] for e, v in curve.items()}, mode)  # mode: the first objective's
        state, value = TrialState.FAIL, None
        if status == "completed" and best:
            state, value = TrialState.COMPLETE, (curve[best[0]] if several else best[1])
        elif status == "stopped early" and best:
            state = TrialState.PRUNED
        if best:
            study._storage.set_trial_user_attr(t._trial_id, BEST_EPOCH, best[0])
        study._storage.set_trial_user_attr(t._trial_id, ENDED, status if state != TrialState.FAIL else "interrupted")
        study.tell(t.number, value, state=state)
        n += 1
    return n


class NanSafeOptunaSearch(OptunaSearch):
    """The searcher of runs started before StudySearch, kept so that ``--resume`` can unpickle them:
    OptunaSearch with a NaN result told as FAIL (not RUNNING forever)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if (isinstance(value, float) and not math.isfinite(value) and trial_id in self._ot_trials
                and trial_id not in self._completed_trials):
            from optuna.trial import TrialState

            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)
