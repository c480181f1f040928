"""Smoke test of the GPU benchmark's CPU path (tiny model, few images), as CI can run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_epoch_bench_runs_on_cpu():
    out = subprocess.run(
        [sys.executable, "bench/gpu_epoch.py", "--images", "256", "--batch-size", "64", "--epochs", "2",
         "--provider", "builtin", "--model", "tiny_cnn"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "device=CPU" in out.stdout and "images=256 batch=64 precision=auto" in out.stdout
    rows = dict(re.findall(r"^\| (Lightning ClassificationSystem|plain PyTorch loop) \| (\d+) \| n/a \|$",
                           out.stdout, re.M))
    assert len(rows) == 2 and all(int(v) > 0 for v in rows.values())
    ratio = float(re.search(r"ratio Lightning/plain: ([\d.]+)", out.stdout).group(1))
    assert ratio == pytest.approx(int(rows["Lightning ClassificationSystem"]) / int(rows["plain PyTorch loop"]),
                                  rel=0.05)
