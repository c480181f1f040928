"""Is ``model/latency_ms`` reproducible within its stated spread? The measurement a search makes
(``tune_cifar.cost.measure``: batch-1 uint8 image through predict's loop, ``--runs`` timed calls after
``--warmup``, one CPU thread) repeated ``--rounds`` times per model, the models alternating.

    python bench/latency.py [--rounds 5] [--runs 30] [--warmup 5] [--threads 1] [--models small_cnn,tiny_cnn]

Per model: each round's median and interquartile range (IQR, the spread a search reports as
``model/latency_iqr_ms``), the median and range of the rounds' medians, and whether every round's median
lies inside the IQR of the middle round (the figure is then "reproducible within its stated spread").
The models are built untrained (latency does not depend on the weights' values) for 3-channel 32x32
images, 10 classes, as CIFAR-10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from tune_cifar import cost
from tune_cifar.classifier import Classifier, InputSpec
from tune_cifar.config import TaskConfig
from tune_cifar.models import ModelSpec


def build(name: str, size: int = 32, classes: int = 10) -> Classifier:
    provider, _, model = name.rpartition(":")
    spec = ModelSpec(provider=provider or "builtin", name=model, num_classes=classes, in_chans=3,
                     cifar_stem=provider == "timm")
    inp = InputSpec(classes=tuple(str(i) for i in range(classes)), in_chans=3, image_size=(size, size),
                    mean=(0.5,) * 3, std=(0.25,) * 3)
    return Classifier(spec, TaskConfig(metrics={"accuracy": {}}), inp, fetch_weights=False)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=cost.RUNS)
    p.add_argument("--warmup", type=int, default=cost.WARMUP)
    p.add_argument("--threads", type=int, default=cost.THREADS)
    p.add_argument("--models", default="small_cnn,tiny_cnn",
                   help="comma-separated builtin names, or provider:name (timm:resnet18)")
    args = p.parse_args(argv)
    names = args.models.split(",")
    nets = {n: build(n) for n in names}
    rounds: dict[str, list[cost.Cost]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):  # alternate the order: drifting load hits both
            rounds[n].append(cost.measure(nets[n], runs=args.runs, warmup=args.warmup, threads=args.threads))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; {args.rounds} rounds x {args.runs} timed runs after {args.warmup} warm-up, "
          f"{args.threads} thread(s)")
    print("| model | params | MFLOPs/image | round medians, ms (IQR) | median of rounds (min-max) | "
          "all rounds inside the middle round's IQR |")
    print("|---|---:|---:|---|---|---|")
    out = {}
    for n in names:
        costs = rounds[n]
        medians = [c.latency.median_ms for c in costs]
        middle = sorted(costs, key=lambda c: c.latency.median_ms)[len(costs) // 2].latency
        inside = all(middle.q1_ms <= m <= middle.q3_ms for m in medians)
        cells = ", ".join(f"{c.latency.median_ms:.3f} ({c.latency.iqr_ms:.3f})" for c in costs)
        print(f"| {n} | {costs[0].params} | {costs[0].flops / 1e6:.2f} | {cells} | "
              f"**{statistics.median(medians):.3f}** ({min(medians):.3f}-{max(medians):.3f}) | "
              f"{'yes' if inside else 'no'} ({middle.q1_ms:.3f}-{middle.q3_ms:.3f}) |")
        out[n] = {"medians_ms": medians, "iqr_ms": [c.latency.iqr_ms for c in costs], "inside": inside,
                  "params": costs[0].params, "flops": costs[0].flops}
    sys.stdout.flush()
    return out


if __name__ == "__main__":
    main()
