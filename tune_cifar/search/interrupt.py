"""Ctrl-C and SIGTERM in the search's driver: stop cleanly, export nothing, say how to continue.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group; a batch scheduler sends
SIGTERM to the driver. Either one, at any moment of a search, ends it with its trials ``unfinished``,
nothing exported (an earlier export and ``<storage_path>/best`` untouched), the ``--resume`` command
printed and exit status 130. Ray's own processes block SIGINT (ray._private.services starts them so),
so trials are not hit by the terminal's signal; the driver decides.

- ``while_tuning()``: around ``Tuner.fit``. The first signal asks Tune to stop the way its own Ctrl-C
  handler does (through SIGUSR1, which Tune also listens to: its SIGINT handler is switched off with
  Ray's ``TUNE_DISABLE_SIGINT_HANDLER`` so that the signal is seen here first); Tune then writes its
  experiment state with every running trial still RUNNING and returns. A second signal stops at once.
  Whether a trial is unfinished is read from the state Tune saved (``results.trial_statuses``).
- ``deferred()``: signals wait while an export replaces the previous one (never half a swap).
- ``terminate_as_interrupt()``, ``stop_when_asked()`` (in ``tune_cifar.signals``, shared with train): SIGTERM raises
  KeyboardInterrupt like Ctrl-C (start-up, reports); the first signal is recorded for a stop at a safe point
  (--debug: the batch's end).
- ``exit_on_signal()``: while Ray starts or joins a cluster (C++ calls that do not return to Python),
  a signal ends the process at once, and so does a time limit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Iterator

from ..signals import SIGNALS, Received, stop_when_asked, terminate_as_interrupt  # noqa: F401 - shared with train
from ..signals import handlers as _handlers, main_thread as _main_thread

TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"  # Ray Tune: do not install its SIGINT handler in fit()


@contextlib.contextmanager
def while_tuning() -> Iterator[Received]:
    """Around ``Tuner.fit``: the first SIGINT/SIGTERM makes Tune save its state and return; a second one
    raises KeyboardInterrupt (stop at once). Yields what was received."""
    received = Received()

    def handler(sig, frame):
        if received:
            raise KeyboardInterrupt
        received.signals.append(sig)
        print("stopping the search: Tune saves the experiment state (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler: ends its loop after this step
            signal.raise_signal(signal.SIGUSR1)
        else:  # Tune's loop is not running (starting or returning): nothing to stop gracefully
            raise KeyboardInterrupt

    saved_env = os.environ.get(TUNE_SIGINT_ENV)
    saved_usr1 = signal.getsignal(signal.SIGUSR1) if _main_thread() else None
    os.environ[TUNE_SIGINT_ENV] = "1"
    try:
        with _handlers(handler):
            yield received
    finally:
        if saved_env is None:
            os.environ.pop(TUNE_SIGINT_ENV, None)
        else:
            os.environ[TUNE_SIGINT_ENV] = saved_env
        if _main_thread():  # Tune leaves its SIGUSR1 handler installed after fit
            signal.signal(signal.SIGUSR1, saved_usr1 if saved_usr1 is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred() -> Iterator[Received]:
    """Signals are only recorded (``received.raise_if_any()`` acts on them where it is safe)."""
    received = Received()
    with _handlers(lambda sig, frame: received.signals.append(sig)):
        yield received


# --------------------------------------------------------------------------- start-up


@contextlib.contextmanager
def exit_on_signal(what: str, timeout_s: float | None = None, timeout_message: str = "") -> Iterator[None]:
    """While Ray starts or connects (C++ calls that do not return to Python, so a Python signal handler
    would only run once they end, if ever): SIGINT or SIGTERM ends the process at once (exit 130), and
    with ``timeout_s`` so does the time limit (exit 2, ``timeout_message``). Ray's processes started by
    then die with the driver (Ray makes them share its fate)."""
    if not _main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)  # written by the C-level handler
    done = threading.Event()

    def watch():
        import select

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done.is_set():
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                print(f"tune_cifar.search: error: {timeout_message}", file=sys.stderr, flush=True)
                os._exit(2)
            ready, _, _ = select.select([read_fd], [], [], left)
            if ready and not done.is_set():
                got = {b for b in os.read(read_fd, 64)}
                if got & {int(s) for s in SIGNALS}:
                    print(f"tune_cifar.search: interrupted while {what}", file=sys.stderr, flush=True)
                    os._exit(130)

    def handler(sig, frame):  # a Python-level handler is what writes to the wakeup fd
        raise KeyboardInterrupt

    thread = threading.Thread(target=watch, daemon=True, name="startup-signals")
    thread.start()
    try:
        with _handlers(handler):
            yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous_fd)
        thread.join(2)
        os.close(read_fd)
        os.close(write_fd)
