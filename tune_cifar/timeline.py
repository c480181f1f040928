"""Where a search's wall time goes: with ``TUNE_CIFAR_TIMELINE=FILE`` set, the search's driver and its
trials append one JSON line per event to FILE (``{"t", "pid", "event", ...}``); unset, nothing is
recorded and nothing extra is imported. Read by ``bench/search_overhead.py``.

``t`` is ``CLOCK_BOOTTIME`` in seconds: one clock for every process of the machine, the clock of a
process's start time in ``/proc/<pid>/stat`` (``process_start``), so a fresh Ray worker's start-up
shows too. Each line is one small ``O_APPEND`` write, whole even with several processes writing.
Standard library only: the trial's Lightning callbacks that mark its stages are in search/trainable.py.
"""

from __future__ import annotations

import json
import os
import time

TIMELINE_ENV = "TUNE_CIFAR_TIMELINE"


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def enabled() -> bool:
    return bool(os.environ.get(TIMELINE_ENV))


def mark(event: str, **fields) -> None:
    """Record ``event`` now (with ``fields``), if TUNE_CIFAR_TIMELINE names a file."""
    path = os.environ.get(TIMELINE_ENV)
    if not path:
        return
    line = json.dumps({"t": round(now(), 4), "pid": os.getpid(), "event": event, **fields}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def process_start(pid: int | None = None) -> float:
    """When process ``pid`` (default: this one) started, on ``now()``'s clock (10 ms resolution)."""
    stat = open(f"/proc/{pid or os.getpid()}/stat").read()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
    return ticks / os.sysconf("SC_CLK_TCK")
