"""Searchers and schedulers by name: ``search.searcher.name`` and ``search.scheduler.name``.

A searcher is one registered function returning an Optuna sampler (Ray's OptunaSearch drives it, through
the run's Optuna study). A scheduler is a :class:`SchedulerParts`: what the scheduler supplies or needs,
declared once here; the settings check, the space check, the driver, each trial, ``--debug`` and
results.csv ask the registration, never the scheduler's name. A plain scheduler is still one function
of the settings (it gets the Optuna searcher and every default)::

    @register_scheduler("median")
    def median(s):
        from ray.tune.schedulers import MedianStoppingRule
        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.scheduler.grace_period)

One with parts of its own declares them (see ``pbt`` below)::

    register_scheduler("mine", SchedulerParts(build=make_scheduler, search_alg=my_search_alg, uses_study=False,
                                              trial_callbacks=lambda cfg: [MyCallback()]))

A paired searcher + scheduler (BOHB-style: Ray's ``HyperBandForBOHB`` with ``TuneBOHB``) is one such
registration: ``build`` makes the scheduler, ``search_alg`` its searcher and param space from the space's
distributions, ``uses_study=False``, and ``check_settings`` / ``default_searcher`` say what ``searcher.*``
may hold. A searcher that is not an Optuna sampler (e.g. a multi-objective Ray search algorithm) fits the
same way, paired with a FIFO ``build``; one that is an Optuna sampler is a ``register_searcher`` function.

Builders import Ray or Optuna themselves: this module is read without them (settings, ``--debug``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..registry import register, registrar
from . import pbt as _pbt  # no Ray or Lightning at import: its parts import them when called

SEARCHERS: dict[str, Callable] = {}  # name -> build(settings) -> optuna.samplers.BaseSampler
SCHEDULERS: dict[str, "SchedulerParts"] = {}  # name -> what that scheduler supplies or needs


@dataclass(frozen=True)
class SchedulerParts:
    """A scheduler registration. Only ``build`` is required; each other part left at its default means
    "nothing special" (the Optuna study's searcher, no extra checks, callbacks or columns).

    - ``build(space) -> ray.tune.schedulers.TrialScheduler`` (``space``: the parsed SearchSpace; its
      ``search`` holds the settings).
    - ``search_alg(space) -> (Ray search algorithm, Tuner param_space)``: a searcher of its own instead of
      the Optuna study's (None: the study's OptunaSearch over the space's distributions).
    - ``uses_study``: whether the run has an Optuna study (optuna.db, warm start, parameter importance);
      False needs a ``search_alg`` (the study is the default searcher's).
    - ``population``: the trials are one population that exists at once (PBT): a trial-epoch budget sizes it,
      ``num_samples = budget // max_epochs`` (budget.py), instead of starting trials until it is spent.
    - ``min_checkpoints``: per trial at least (``search.checkpoints_to_keep`` or this, the larger).
    - ``default_searcher``: ``search.searcher.name`` when the file names none (None: the settings' default).
    - ``check_settings(where, settings)``, ``check_space(space)``: refuse, with a UserError, what it cannot
      run (values, keys it cannot search).
    - ``trial_callbacks(cfg) -> [Lightning callbacks]``: added to every trial (and ``--debug``); the driver
      hands the function to the trials (picklable: a module's function); a callback with a ``reported``
      attribute (metric names) gets those names into each Ray report.
    - ``trial_events(run_dir) -> {trial id: [event]}``: each trial's changes of config in mid-training,
      in order, as ``{"epoch", "donor", "donor_epoch", "config"}`` (results.csv's hyperparameters are
      the last event's config; the learning curves draw the jumps).
    - ``results_columns(reports, events) -> {column: value}``: extra results.csv columns of one trial
      (``reports``: its DataFrame of reports or None, ``events``: its trial_events); called once with
      ``(None, [])`` for the column names of an empty table.
    - ``reevaluates``: whether a trial is one configuration that re-evaluation (``search.final``, final.py) can
      train again from scratch (False for PBT: its trials change hyperparameters in mid-training).
    """

    build: Callable[[Any], Any]
    search_alg: Optional[Callable[[Any], tuple]] = None
    uses_study: bool = True
    population: bool = False
    min_checkpoints: int = 1
    default_searcher: Optional[str] = None
    check_settings: Optional[Callable[[str, Any], None]] = None
    check_space: Optional[Callable[[Any], None]] = None
    trial_callbacks: Optional[Callable[[Any], list]] = None
    trial_events: Optional[Callable[[Any], dict]] = None
    results_columns: Optional[Callable[[Any, list], dict]] = None
    reevaluates: bool = True

    def __post_init__(self) -> None:
        if self.search_alg is None and not self.uses_study:
            raise ValueError("SchedulerParts: uses_study=False needs a search_alg (the study is the default "
                             "searcher's)")


def register_searcher(name: str, replace: bool = False):
    """Decorator: register ``build(settings) -> optuna sampler`` as ``search.searcher.name: <name>``."""
    return registrar(SEARCHERS, "searcher", name, replace)


def register_scheduler(name: str, parts: SchedulerParts | None = None, replace: bool = False):
    """``register_scheduler(name, SchedulerParts(...))`` registers a scheduler with its parts; as a
    decorator, ``@register_scheduler(name)`` on ``build(settings) -> Ray TrialScheduler`` registers a
    plain one (the function is returned unchanged). A name is registered once (``replace``: see
    tune_cifar.registry)."""
    if parts is not None:
        return register(SCHEDULERS, "scheduler", name, parts, by=parts.build, replace=replace)

    def deco(build):
        entry = build if isinstance(build, SchedulerParts) else SchedulerParts(build=_OnSettings(build))
        register(SCHEDULERS, "scheduler", name, entry, by=getattr(build, "build", build), replace=replace)
        return build

    return deco


class _OnSettings:
    """A plain scheduler's ``build(settings)`` as ``build(space)``."""

    def __init__(self, build: Callable) -> None:
        self.build = build
        self.__module__ = build.__module__  # who registered it (a duplicate name's message names it)

    def __call__(self, space):
        return self.build(space.search)


def scheduler_parts(s) -> SchedulerParts:
    """The registration of the settings' ``scheduler.name`` (checked by the settings: registered)."""
    return SCHEDULERS[s.scheduler.name]


# --------------------------------------------------------------------------- built-in searchers (Optuna)


@register_searcher("tpe")
def tpe(s):
    import warnings

    import optuna

    with warnings.catch_warnings():  # multivariate/group are "experimental" in some Optuna versions
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=s.searcher.seed, n_startup_trials=s.searcher.n_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


@register_searcher("nsga2")
def nsga2(s):
    """NSGA-II (Optuna's genetic multi-objective sampler; one objective works too). Its population is
    ``searcher.n_startup_trials`` (at least 2): the first generation is drawn at random, each later one bred
    from the best trials so far (non-dominated sorting, crowding distance). Trials ASHA stopped (PRUNED)
    are left out of its populations."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=s.searcher.seed, population_size=max(2, s.searcher.n_startup_trials))


@register_searcher("random")
def random(s):
    import optuna

    return optuna.samplers.RandomSampler(seed=s.searcher.seed)


# --------------------------------------------------------------------------- built-in schedulers (Ray Tune)


@register_scheduler("asha")
def asha(s):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=s.scheduler.max_epochs,
                         grace_period=s.scheduler.grace_period, reduction_factor=s.scheduler.reduction_factor)


@register_scheduler("fifo")
def fifo(s):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


register_scheduler("pbt", SchedulerParts(
    # Population-based training (pbt.py): Ray's PBT takes no Optuna searcher, so it draws its own
    # population; its trials change hyperparameters in mid-training (exploits)
    build=_pbt.make_scheduler, search_alg=_pbt.search_alg, uses_study=False, population=True,
    min_checkpoints=_pbt.MIN_CHECKPOINTS,  # a donor's latest checkpoint must outlive its restore
    default_searcher="random", check_settings=_pbt.check_settings, check_space=_pbt.check_space,
    trial_callbacks=_pbt.trial_callbacks, trial_events=_pbt.exploit_events, results_columns=_pbt.results_columns,
    reevaluates=False))
