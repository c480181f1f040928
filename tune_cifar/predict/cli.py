"""The command line: ``python -m tune_cifar.predict`` (arguments, then load, evaluate, classify or convert)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import config_from_dict
from ..errors import UserError, cli_entry
from ..plugins import load_plugins
from .clock import Clock
from .conversion import FORMATS, convert
from .evaluation import evaluate
from .images import classify_images
from .inference import pick_device
from .loading import load
from .options import Options
from .output import warn
from .settings import make_config


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tune_cifar.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Use a trained model without Ray: evaluate it on its test set, classify images "
                    "or convert it to ONNX / TorchScript.",
        epilog="examples:\n"
               "  python -m tune_cifar.predict --best\n"
               "  python -m tune_cifar.predict --export outputs/fashion_cpu_small/best data.test_subset=null\n"
               "  python -m tune_cifar.predict --best --images photos/ cat.jpg --top-k 3\n"
               "  python -m tune_cifar.predict --checkpoint outputs/x/2025-01-01_00-00-00/checkpoints/best.ckpt\n"
               "  python -m tune_cifar.predict --best --to onnx --out deploy/")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--best", action="store_true", help="the latest export, <output-dir>/best (the default)")
    src.add_argument("--export", metavar="DIR", help="an export folder")
    src.add_argument("--checkpoint", metavar="FILE", help="a training checkpoint (.ckpt)")
    p.add_argument("--output-dir", default="outputs", metavar="DIR",
                   help="where --best looks for best/ (default: outputs)")
    p.add_argument("--out", metavar="DIR",
                   help="where results go (default: <folder holding the export or run>/predict/<timestamp>)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--images", nargs="+", metavar="PATH", help="classify these images / folders of PNG/JPEG")
    what.add_argument("--to", choices=sorted(FORMATS), help="write the model in this format instead of predicting")
    p.add_argument("--data-path", metavar="DIR", help="same as data.dataset_path=DIR")
    p.add_argument("--threshold", type=float, help="binary/multilabel models predict a class when its "
                                                   "probability is above this (default: task.threshold)")
    p.add_argument("--top-k", type=_positive_int, default=5,
                   help="probabilities listed per image (default 5; above the class count: every class)")
    p.add_argument("--batch-size", type=_positive_int, help="same as data.inference_batch_size=N")
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:N")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="changes to the model's config, e.g. data.test_subset=null trainer.precision=32")
    return p.parse_args(list(argv))


def options_from_args(args: argparse.Namespace) -> Options:
    """The parsed command line as the frozen :class:`Options` the library functions take."""
    return Options(export=args.export, checkpoint=args.checkpoint, output_dir=args.output_dir, out=args.out,
                   images=tuple(args.images or ()), to=args.to, data_path=args.data_path, threshold=args.threshold,
                   top_k=args.top_k, batch_size=args.batch_size, device=args.device,
                   overrides=tuple(args.overrides))


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    options = options_from_args(parse_args(sys.argv[1:] if argv is None else argv))
    clock = Clock()
    load_plugins()  # a model of a registered provider is rebuilt before its config is checked
    loaded = load(options)
    if loaded.config is not None and (options.images or options.to):
        try:  # images need no data config: a config of an older version should not block them
            config_from_dict(loaded.config)
        except UserError as err:
            warn(f"the model's config.yaml does not validate ({err}); using the task settings saved "
                 f"with the weights")
            loaded.config = None
    cfg = make_config(loaded, options)
    if options.to:
        return convert(loaded, cfg, options)
    device = pick_device(options.device)
    if options.images:
        return classify_images(loaded, cfg, options, device, clock)
    return evaluate(loaded, cfg, options, device, clock)
