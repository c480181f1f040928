"""Your registrations in every process: modules named in ``TUNE_CIFAR_PLUGINS`` are imported before a config is
checked.

A registration (``register_optimizer``, ``register_schedule``, ``register_source``, ``register_provider``,
``register_searcher``, ``register_scheduler``) lives in the process that ran it. A search validates and builds
each trial's config again in a Ray worker process, so a registration made only in the driver is unknown there.
``TUNE_CIFAR_PLUGINS=my_pkg.plugins,other`` (comma-separated importable modules) makes every process import
them first: ``config.validate`` (train, the search driver, each trial, ``--debug``) and predict's start call
:func:`load_plugins`. The workers of a local Ray started by the search inherit the driver's environment; on a
cluster, start each node with the variable set (``TUNE_CIFAR_PLUGINS=... ray start ...``) and the module
installed there.
"""

from __future__ import annotations

import importlib
import os

from .errors import UserError

PLUGINS_ENV = "TUNE_CIFAR_PLUGINS"
_imported: set[str] = set()


def plugin_modules() -> list[str]:
    return [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]


def load_plugins() -> None:
    """Import each module of ``TUNE_CIFAR_PLUGINS`` once in this process (their registrations run)."""
    for name in plugin_modules():
        if name in _imported:
            continue
        _imported.add(name)  # first: a plugin that validates a config while it is imported does not loop
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
                raise  # the plugin itself imports something missing: its own traceback says what
            _imported.discard(name)
            raise UserError(f"{PLUGINS_ENV}: cannot import {name} (no module named {err.name!r}); "
                            f"allowed: importable module names, comma-separated") from None
