"""The one shape of every extension point: a dict of name -> builder, filled by ``register`` (or its decorator
form, ``registrar``). Every registry (optimizers, LR schedules, dataset sources, model providers, builtin
models, searchers, schedulers) goes through here, so one rule holds for all: a name is registered once.

A plugin that registers a name already taken (``register_optimizer("sgd")``) would otherwise silently
replace ours; it is refused in one line naming the plugin and the name (a ``UserError``: exit 2 from every
command, which imports plugins while it checks its config). ``replace=True`` replaces it on purpose.
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import UserError


def _module(obj: Any) -> str:
    """Who registered ``obj``: its function's module (a plugin's own name), else the object's."""
    # Provider / Source records, a scheduler's SchedulerParts
    target = getattr(obj, "create", None) or getattr(obj, "load", None) or getattr(obj, "build", None) or obj
    return getattr(target, "__module__", None) or type(obj).__module__


def register(registry: dict, kind: str, name: str, entry: Any, *, by: Any = None, replace: bool = False) -> Any:
    """Put ``entry`` into ``registry`` under ``name``, refusing a name already there unless ``replace``;
    ``by`` is the user's function (its module names the plugin in the message), default ``entry``."""
    if name in registry and not replace:
        old, new = _module(registry[name]), _module(entry if by is None else by)
        raise UserError(f"{new} registers {kind} {name!r}, which {old} has registered already; a name is "
                        f"registered once: choose another name (or pass replace=True to replace it on purpose)")
    registry[name] = entry
    return entry


def registrar(registry: dict, kind: str, name: str, replace: bool = False) -> Callable:
    """A decorator that registers its function in ``registry`` under ``name`` (see ``register``)."""

    def deco(build):
        register(registry, kind, name, build, replace=replace)
        return build

    return deco
