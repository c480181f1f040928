"""One epoch of ResNet-18 (CIFAR stem) through ClassificationSystem + Lightning vs a plain loop.

    python bench/gpu_epoch.py                       # GPU: 50,000 CIFAR-shaped images made on the device
    python bench/gpu_epoch.py --images 512 --model tiny_cnn --provider builtin   # CPU smoke test

Same model, precision (auto: bf16-mixed on GPU), memory format and batch size for both; random
uint8 data lives on the training device (no download, no host-side batch work). Reports images/s
of both, the ratio, and peak GPU memory.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from train_loop import compare
from tune_cifar.config import load_config
from tune_cifar.data import ImageArrays


def device_arrays(n: int, device: torch.device, classes: int = 10) -> ImageArrays:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
    y = torch.randint(0, classes, (n,), device=device, generator=g)
    return ImageArrays(train_x=x, train_y=y, test_x=x[:classes], test_y=y[:classes],
                       classes=[str(i) for i in range(classes)],
                       mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=2, help="per run; the first is a warm-up")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--provider", default="timm")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    channels_last = gpu if args.channels_last is None else args.channels_last
    cfg = load_config([
        "model=resnet18", f"model.provider_name={args.provider}", f"model.model_name={args.model}",
        f"model.modifiers.cifar_stem={args.provider != 'builtin'}", "data.val_fraction=0",
        f"data.train_batch_size={args.batch_size}", f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
        f"trainer.precision={args.precision}", f"trainer.channels_last={channels_last}",
        "data.on_device=true", "optimizer.scheduler.name=none", "optimizer.weight_decay=0",
        "optimizer.nesterov=false", "data.augment.crop_padding=4",
    ])
    arrays = device_arrays(args.images, device)
    n = args.images - args.images % args.batch_size
    r = compare(cfg, arrays, n, args.epochs, args.rounds, device)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device={name} model={args.provider}/{args.model} images={n} batch={args.batch_size} "
          f"precision={args.precision} channels_last={channels_last}")
    print("| loop | images/s | peak GPU MiB |\n|---|---|---|")
    for k, label in (("lightning", "Lightning ClassificationSystem"), ("plain", "plain PyTorch loop")):
        peak = r["peak_mib"].get(k)
        print(f"| {label} | {r[k]:.0f} | {f'{peak:.0f}' if peak else 'n/a'} |")
    print(f"ratio Lightning/plain: {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
