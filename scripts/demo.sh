#!/usr/bin/env bash
# The main job end to end on real data available offline (Fashion-MNIST from Debian):
# set-up, a CPU-sized search (Optuna TPE + ASHA on Ray Tune), then the exported best model
# scored on the test set by predict (without Ray). Extra arguments go to the search.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m tune_cifar.search search_spaces/cpu_small.yaml --new-name "$@"  # a re-run gets a new name
.venv/bin/python -m tune_cifar.predict --best
