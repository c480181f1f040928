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
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from .errors import UserError

PLUGINS_ENV = "TUNE_CIFAR_PLUGINS"
_imported: set[str] = set()


def plugin_modules() -> list[str]:
    return [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]


def load_plugins() -> None:
    """Import each module of ``TUNE_CIFAR_PLUGINS`` once in this process (their registrations run).

    A plugin that fails to import (a syntax error, an exception, a name registered twice) is the user's own
    file: one line naming the plugin, its file and line (a UserError), not its traceback (``python -c
    'import <plugin>'`` shows that)."""
    for name in plugin_modules():
        if name in _imported:
            continue
        _imported.add(name)  # first: a plugin that validates a config while it is imported does not loop
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
                raise UserError(_failure(name, err)) from None  # the plugin itself imports something missing
            _imported.discard(name)
            raise UserError(f"{PLUGINS_ENV}: cannot import {name} (no module named {err.name!r}); "
                            f"allowed: importable module names, comma-separated") from None
        except Exception as err:  # noqa: BLE001 - whatever the user's module raises is reported in one line
            raise UserError(_failure(name, err)) from None


def _failure(name: str, err: Exception) -> str:
    """``TUNE_CIFAR_PLUGINS: plugin NAME (FILE, line N): what went wrong``: the line is the plugin's own
    (where it raised, or called what raised), for a syntax error the line that cannot be read."""
    if isinstance(err, SyntaxError):
        where, what = (err.filename, err.lineno), f"{type(err).__name__}: {err.msg}"
    else:
        frames = traceback.extract_tb(err.__traceback__)
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        home = origin.parent if origin is not None and origin.name == "__init__.py" else origin
        own = [f for f in frames if home is not None and Path(f.filename) == home or
               home is not None and home.is_dir() and home in Path(f.filename).parents]
        frame = (own or frames or [None])[-1]
        where = (frame.filename, frame.lineno) if frame is not None else (None, None)
        text = " ".join(str(err).split())
        what = text if isinstance(err, UserError) else f"{type(err).__name__}: {text}" if text else type(err).__name__
    at = f" ({where[0]}, line {where[1]})" if where[0] else ""
    hint = "" if isinstance(err, UserError) else f"; python -c 'import {name}' shows the traceback"
    return f"{PLUGINS_ENV}: plugin {name}{at}: {what}{hint}"
