"""Optuna samplers without Ray: the searcher's sampler, and one configuration for ``--debug``."""

from __future__ import annotations

from typing import Optional

from .registry import SEARCHERS
from .settings import SearchSettings
from .space import SearchSpace


def make_sampler(s: SearchSettings):
    """The Optuna sampler named by ``search.searcher`` (seeded), built by its registered function."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return SEARCHERS[s.searcher.name](s)


def sample(space: SearchSpace, given: Optional[dict] = None, seed: int = 0) -> dict:
    """One configuration without Ray: ``given`` values (checked) plus random draws for the rest."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    if given:
        study.enqueue_trial(space.to_optuna(given, "--params"))
    return space.suggest(study.ask())
