"""Ctrl-C (SIGINT) and SIGTERM as a stop at a safe point: shared by ``train`` and the search (no Ray, no
Lightning here; ``search/interrupt.py`` adds what only the search needs).

A terminal's Ctrl-C sends SIGINT to the whole foreground process group; a batch scheduler or ``kill``
sends SIGTERM. ``stop_when_asked()`` only records the first one (the caller stops where nothing is half
done: ``train`` and ``search --debug`` at the end of the batch, see ``training.StopWhenAsked``); a second
one raises KeyboardInterrupt at once. A KeyboardInterrupt raised at an arbitrary point of Lightning's loop
can leave a logger's lock held, and Lightning's own shutdown then hung (seen).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Received:
    """The signals received (set by the handlers here)."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.signals)

    def raise_if_any(self) -> None:
        if self.signals:
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        """The first signal's name (SIGINT, SIGTERM), '' when none."""
        return signal.Signals(self.signals[0]).name if self.signals else ""


class Interrupted(Exception):
    """Raised at a safe point (the end of a batch) after a signal: the run stops there."""


def main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handlers(handler) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block, the previous ones restored after it."""
    if not main_thread():  # signal handlers can only be set in the main thread
        yield
        return
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[Received]:
    """SIGTERM (and SIGINT) raise KeyboardInterrupt, whatever handler was there; yields what was received
    (Lightning turns a KeyboardInterrupt in fit into its own ``exit(1)``: this tells them apart)."""
    received = Received()

    def handler(sig, frame):
        received.signals.append(sig)
        raise KeyboardInterrupt

    with handlers(handler):
        yield received


@contextlib.contextmanager
def stop_when_asked() -> Iterator[Received]:
    """The first SIGINT/SIGTERM is only recorded (the caller stops at a safe point); a second one raises
    KeyboardInterrupt at once."""
    received = Received()

    def handler(sig, frame):
        received.signals.append(sig)
        if len(received.signals) > 1:
            raise KeyboardInterrupt

    with handlers(handler):
        yield received
