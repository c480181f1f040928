#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# Two pytest processes (pytest-xdist): most tests wait on subprocesses, Ray start-up or signals as much as
# they compute, so two share 2 cores well. A file's tests stay in one process (--dist loadfile): a module's
# shared search (a module-scoped fixture) runs once; files go out in collection order, the longest first
# (tests/conftest.py), not by their number of tests. TEST_PROCESSES=1 runs them in this process.
n=${TEST_PROCESSES:-2}
if [ "$n" = 1 ]; then
  .venv/bin/python -m pytest -q "$@"
else
  .venv/bin/python -m pytest -q -n "$n" --dist loadfile --no-loadscope-reorder "$@"
fi
rc=$?
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
