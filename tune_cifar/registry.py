"""The one shape of every extension point: a dict of name -> builder, filled by a decorator."""

from __future__ import annotations

from typing import Callable


def registrar(registry: dict, kind: str, name: str) -> Callable:
    """A decorator that puts its function into ``registry`` under ``name``; a name is registered once
    (a second registration is a programming error, not a silent replacement)."""

    def deco(build):
        if name in registry:
            raise ValueError(f"{kind} {name!r} is already registered")
        registry[name] = build
        return build

    return deco
