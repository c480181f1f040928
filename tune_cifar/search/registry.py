"""Searchers and schedulers by name: ``search.searcher.name`` and ``search.scheduler.name``.

Each is one registered function that builds the library's own object from the search settings:
a searcher returns an Optuna sampler (Ray's OptunaSearch drives it), a scheduler a Ray Tune
``TrialScheduler``. The settings check and its allowed-values message read these registries, so
adding one is one function::

    @register_scheduler("median")
    def median(s):
        from ray.tune.schedulers import MedianStoppingRule
        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.scheduler.grace_period)

Builders import Ray or Optuna themselves: this module is read without them (settings, ``--debug``).
"""

from __future__ import annotations

from typing import Callable

from ..registry import registrar

SEARCHERS: dict[str, Callable] = {}  # name -> build(settings) -> optuna.samplers.BaseSampler
SCHEDULERS: dict[str, Callable] = {}  # name -> build(settings) -> ray.tune.schedulers.TrialScheduler


def register_searcher(name: str, replace: bool = False):
    """Decorator: register ``build(settings) -> optuna sampler`` as ``search.searcher.name: <name>``."""
    return registrar(SEARCHERS, "searcher", name, replace)


def register_scheduler(name: str, replace: bool = False):
    """Decorator: register ``build(settings) -> Ray TrialScheduler`` as ``search.scheduler.name: <name>``."""
    return registrar(SCHEDULERS, "scheduler", name, replace)


# --------------------------------------------------------------------------- built-in searchers (Optuna)


@register_searcher("tpe")
def tpe(s):
    import warnings

    import optuna

    with warnings.catch_warnings():  # multivariate/group are "experimental" in some Optuna versions
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=s.searcher.seed, n_startup_trials=s.searcher.n_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


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


@register_scheduler("pbt")
def pbt(s, space):
    """Population-based training (pbt.py). Unlike the others it needs the space (its distributions are
    the mutations) and replaces the Optuna searcher (Ray refuses one with PBT): run_search builds it,
    with its search algorithm, through ``pbt.search_parts(space)``."""
    from .pbt import make_scheduler

    return make_scheduler(space)
