"""What each test costs in CPU (issue 16): a pytest plugin that writes, per test, the machine's busy CPU
seconds (from /proc/stat: every process, the test's subprocesses and Ray's too) and its wall time.

Why machine-wide: a test's cost is mostly the processes it starts (searches, trial processes, Ray), which
no per-process counter of pytest sees. So it is exact only when nothing else runs: use it on an idle
machine with one pytest process (no ``-n``); with ``-n 2`` the figures of overlapping tests add up twice,
but the start times show how the two processes' files line up (the tail of a run).

    PYTHONPATH=bench .venv/bin/python -m pytest -q -p cpu_per_test [pytest args...]
    python bench/cpu_per_test.py [FILE]     # sums FILE (default /tmp/cpu_per_test.jsonl) by test file

One JSON line per test in $CPU_PER_TEST_OUT (default /tmp/cpu_per_test.jsonl): id, cpu, wall, start, worker.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

OUT = os.environ.get("CPU_PER_TEST_OUT", "/tmp/cpu_per_test.jsonl")
TICK = os.sysconf("SC_CLK_TCK")


def busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK


try:
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        b, t = busy(), time.time()
        yield  # setup (module fixtures count to a module's first test), call, teardown
        with open(OUT, "a") as fh:
            fh.write(json.dumps({"id": item.nodeid, "cpu": round(busy() - b, 2), "wall": round(time.time() - t, 2),
                                 "start": t, "worker": os.environ.get("PYTEST_XDIST_WORKER", "-")}) + "\n")
except ImportError:  # the summary below needs no pytest
    pass


def main() -> None:
    rows = [json.loads(line) for line in open(sys.argv[1] if len(sys.argv) > 1 else OUT)]
    files = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        f = files[r["id"].split("::")[0]]
        f[0] += r["cpu"]
        f[1] += r["wall"]
        f[2] += 1
    print(f"{len(rows)} tests: {sum(r['cpu'] for r in rows):.0f} CPU-s, {sum(r['wall'] for r in rows):.0f} s")
    print("| file | tests | CPU-s | wall s |\n|---|---|---|---|")
    for name, (cpu, wall, n) in sorted(files.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {n} | {cpu:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
