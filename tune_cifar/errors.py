"""User-facing errors: one line, exit status 2, no traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, Iterable, TypeVar

F = TypeVar("F", bound=Callable)

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input from the user (config, files, paths). Printed as one line."""


def allowed(values: Iterable) -> str:
    """Format allowed values for an error message."""
    return ", ".join(sorted(str(v) for v in values))


def check_choice(key: str, value, choices: Iterable, where: str = "config") -> None:
    """Raise UserError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise UserError(f"{where}: {key}={value!r} is not allowed; allowed: {allowed(choices)}")


def cli_entry(func: F) -> F:
    """Wrap a CLI main so that a UserError prints one line and exits with status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            module = func.__module__
            if module == "__main__":  # run as python -m tune_cifar.<prog>
                spec = getattr(sys.modules.get("__main__"), "__spec__", None)
                module = getattr(spec, "name", None) or module
            parts = module.split(".")  # tune_cifar.<prog>, or tune_cifar.<prog>.<module> of a package
            prog = parts[1] if parts[0] == "tune_cifar" and len(parts) > 1 else parts[-1]
            print(f"tune_cifar.{prog}: error: {err}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
