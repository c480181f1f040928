"""Benchmark: batched tensor augmentation vs the torchvision PIL pipeline, same images.

Both produce normalized float32 batches of 256 with random crop (pad 4, zero fill, as
torchvision's RandomCrop) and horizontal flip:

* torchvision: Image.fromarray -> RandomCrop(32, padding=4) -> RandomHorizontalFlip ->
  ToTensor -> Normalize per image, through a DataLoader (batch_size 256, num_workers 0);
* tensor: ``Augment`` + ``normalize`` on uint8 batches sliced from one [N, 3, 32, 32] tensor.

Images: real CIFAR-10 (--cifar PATH), else real Fashion-MNIST padded to 32x32 and
repeated to RGB, else random uint8. Prints a markdown table row and the command.

    python bench/data_pipeline.py [--cifar PATH] [--n 10000] [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_cifar.data.augment import Augment, normalize  # noqa: E402
from tune_cifar.data.cifar import CIFAR10_STATS  # noqa: E402
from tune_cifar.data.fashion_mnist import FASHION_MNIST_DIR  # noqa: E402
from tune_cifar.data.sources import load_source  # noqa: E402
from tune_cifar.errors import UserError  # noqa: E402

BATCH = 256


def load_images(cifar: str | None, n: int) -> tuple[np.ndarray, str]:
    """uint8 [n, 3, 32, 32] and a description of where they came from."""
    if cifar:
        arrays = load_source("cifar10", cifar, download=False)
        return arrays.train_x[:n], f"CIFAR-10 ({cifar})"
    try:
        x = load_source("fashion_mnist", FASHION_MNIST_DIR).train_x[:n]
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))).repeat(3, axis=1)
        return np.ascontiguousarray(x), "Fashion-MNIST padded to 32x32 RGB"
    except UserError as err:
        print(f"note: {err}; using random images", file=sys.stderr)
        return np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), "random uint8"


def torchvision_epoch(x_hwc: np.ndarray) -> int:
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(*CIFAR10_STATS),
        ]
    )

    class Images(torch.utils.data.Dataset):  # as torchvision.datasets.CIFAR10.__getitem__
        def __len__(self):
            return len(x_hwc)

        def __getitem__(self, i):
            return transform(Image.fromarray(x_hwc[i])), 0

    seen = 0
    for batch, _ in torch.utils.data.DataLoader(Images(), batch_size=BATCH, num_workers=0):
        seen += len(batch)
    return seen


def tensor_epoch(x: torch.Tensor, augment: Augment) -> int:
    seen = 0
    for i in range(0, len(x), BATCH):
        batch = normalize(augment(x[i : i + BATCH]), *CIFAR10_STATS)
        seen += len(batch)
    return seen


def rate(fn, repeats: int) -> float:
    """Median images/s over ``repeats`` timed runs (after one warm-up run)."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", help="folder containing cifar-10-batches-py (default: Fashion-MNIST)")
    parser.add_argument("--n", type=int, default=10_000, help="number of images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="device for the tensor pipeline")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the PIL pipeline runs on one core too)")  # fmt: skip
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, source = load_images(args.cifar, args.n)
    x_hwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    xt = torch.from_numpy(x).to(args.device)
    sync = torch.cuda.synchronize if xt.device.type == "cuda" else (lambda: None)

    def tensor(pad_mode: str):
        augment = Augment(crop_padding=4, flip=True, cutout=0, pad_mode=pad_mode)
        return lambda: (tensor_epoch(xt, augment), sync())[0]

    start = time.perf_counter()
    tv = rate(lambda: torchvision_epoch(x_hwc), args.repeats)
    ours = rate(tensor("zeros"), args.repeats)
    ours_reflect = rate(tensor("reflect"), args.repeats)
    elapsed = time.perf_counter() - start

    print(f"images: {len(x)} x {tuple(x.shape[1:])} from {source}; batch {BATCH}; "
          f"median of {args.repeats}; torch threads {torch.get_num_threads()}; {elapsed:.0f} s")  # fmt: skip
    print("| images | torchvision PIL (img/s) | tensor, zero pad (img/s) | speedup | tensor, reflect pad (img/s) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {source}, {len(x)} | {tv:,.0f} | {ours:,.0f} ({args.device}) | {ours / tv:.1f}x | {ours_reflect:,.0f} |")
    print("command: python " + " ".join(shlex.quote(a) for a in [f"bench/{Path(__file__).name}", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
