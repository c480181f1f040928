#!/usr/bin/env bash
# The GPU checks, for a lent GPU machine (the `device` tool) or any CUDA box with torch, Lightning,
# timm and torchmetrics but without this project's pure-Python needs. Two steps:
#   here:  bash scripts/gpu_check.sh --fetch        # wheels of hydra-core/omegaconf/antlr4 into .whl/
#   there: bash scripts/gpu_check.sh [bench args]   # install them, run tests/test_gpu.py and the bench
# Ray is not needed (its wheel is too big to carry); nothing run here imports it.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fetch" ]; then
  for spec in hydra-core==1.3.8 omegaconf==2.3.1; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform any -d .whl "$spec" || exit 1
  done
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1  # pure Python, sdist only
  ls .whl; exit 0
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_bench.py 2>&1 | tee "$out/gpu_tests.log"
tests=${PIPESTATUS[0]}
python3 bench/gpu_epoch.py "$@" 2>&1 | tee "$out/gpu_epoch.log"
bench=${PIPESTATUS[0]}
# 2-process DDP on the one GPU (what a multi-worker trial's workers run, without Ray): same weights, synced metrics
python3 bench/ddp_smoke.py --accelerator gpu --out "$out/ddp_smoke" 2>&1 | tail -n 1 | tee "$out/ddp_smoke.json"
ddp=${PIPESTATUS[0]}
echo "gpu_check: tests rc=$tests bench rc=$bench ddp rc=$ddp"
[ "$tests" = 0 ] && [ "$bench" = 0 ] && [ "$ddp" = 0 ]
