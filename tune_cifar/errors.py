"""User-facing errors: one line, exit status 2, no traceback."""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import sys
from pathlib import Path
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


def nonfinite(value, key: str) -> tuple[str, float] | None:
    """The dotted key and value of the first NaN or infinite number in ``value`` (nested mappings and
    lists included), or None. YAML's ``.nan``/``.inf`` and the overrides ``nan``, ``inf``, ``-inf``,
    ``1e999`` all arrive as such floats."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    if isinstance(value, dict):
        items = ((f"{key}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((bad for bad in (nonfinite(v, k) for k, v in items) if bad), None)


def check_finite(key: str, value, where: str = "config"):
    """Refuse NaN and infinities anywhere in ``value``: no config value or search bound means one (a NaN
    learning rate trains to a NaN loss and "succeeds"; null is how a key says "none"). Returns ``value``."""
    bad = nonfinite(value, key)
    if bad is not None:
        raise UserError(f"{where}: {bad[0]}={bad[1]!r} is not allowed; allowed: a finite number")
    return value


def yaml_error(err: Exception, where: str | None = None) -> str:
    """A PyYAML error in one line: ``FILE, line L, column C: not valid YAML: PROBLEM (CONTEXT at line M)``
    (``where`` names the file when the YAML was read from a string)."""
    mark, context_mark = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    name = where or getattr(mark, "name", None) or "YAML"
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    context = getattr(err, "context", None)
    if context and context_mark is not None:
        context = f"{context} at line {context_mark.line + 1}"
    return f"{name}{at}: not valid YAML: {problem}{f' ({context})' if context else ''}"


FOLDER_NAME = "letters, digits, _ . - (one folder name inside the output folder, not . or ..)"


def is_folder_name(value) -> bool:
    """A name that becomes one folder under the output folder: no path separator, not ``.`` or ``..``."""
    return isinstance(value, str) and bool(re.fullmatch(r"[\w.-]+", value)) and value not in (".", "..")


def check_output_dir(path: str | Path, key: str) -> None:
    """Refuse, before anything is made, an output folder that cannot be created or written: a file in
    its place or above it, or a folder this user cannot write (one shared check for train and search)."""
    target = Path(path).expanduser().absolute()
    for place in (target, *target.parents):  # the nearest part that exists decides
        try:
            if place.exists():
                break
        except OSError:  # e.g. no permission to look inside the folder above
            break
    try:
        in_the_way = place.exists() and not place.is_dir()
    except OSError:
        in_the_way = False  # what cannot be looked at: os.access below says whether it can be written
    if in_the_way:
        where = "is" if place == target else "is under"
        raise UserError(f"{key}={path} {where} the file {place}; allowed: a folder (existing or to be created)")
    if not os.access(place, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: {place} is not writable by this user; allowed: a folder you can write to")


def _prog(func: Callable) -> str:
    """``tune_cifar.<prog>`` of a CLI main, for its error lines."""
    module = func.__module__
    if module == "__main__":  # run as python -m tune_cifar.<prog>
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None) or module
    parts = module.split(".")  # tune_cifar.<prog>, or tune_cifar.<prog>.<module> of a package
    prog = parts[1] if parts[0] == "tune_cifar" and len(parts) > 1 else parts[-1]
    return f"tune_cifar.{prog}"


def cli_entry(func: F) -> F:
    """Wrap a CLI main so that a UserError prints one line and exits with status 2.

    Called without arguments it is the program (``python -m tune_cifar.<prog>``, a console script: its
    arguments come from sys.argv): the process then ends as soon as the command is done
    (``end_process``), instead of spending seconds tearing down torch, Ray and the rest."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if args or kwargs:  # called as a function (tests, a script of the user's)
            return _run(func, *args, **kwargs)
        try:
            _run(func)
        except SystemExit as stop:
            end_process(stop.code)
        end_process(0)

    return wrapper  # type: ignore[return-value]


def end_process(code) -> None:
    """Exit now with ``code`` (SystemExit's: None is 0, a message is printed and is 1), after what Python
    runs at exit (atexit handlers: logging's flush, weakref finalizers, Ray's) and with stdout and stderr
    flushed, but without the interpreter's teardown of every module and object: with torch, Ray and
    Lightning loaded that teardown takes about 2.5 s of CPU (bench/search_overhead.py) and writes nothing.
    Only for a command whose work is done: every file it writes is whole and closed by then."""
    import atexit

    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader that went away
            pass
    os._exit(code)


def _run(func: Callable, *args, **kwargs):
    """A CLI main, with a UserError as one line and exit status 2 (``cli_entry``)."""
    try:
        return func(*args, **kwargs)
    except UserError as err:
        print(f"{_prog(func)}: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # a full disk we did not meet in our own writes (tune_cifar.atomic names those)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"{_prog(func)}: error: {(err.strerror or 'no space left on device').lower()}{where}: free "
              f"space there (or choose another output folder)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
