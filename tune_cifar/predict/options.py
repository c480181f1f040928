"""What the command line asked for, as one frozen object the library functions take (not argparse's namespace)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """predict's options; the defaults are the command line's, so ``Options(export="...")`` is a library call's
    ``python -m tune_cifar.predict --export ...``."""

    export: str | None = None  # an export folder; neither this nor checkpoint: <output_dir>/best (--best)
    checkpoint: str | None = None  # a training checkpoint (.ckpt)
    output_dir: str = "outputs"  # where --best looks for best/
    out: str | None = None  # where results go (None: <folder holding the export or run>/predict/<time>)
    images: tuple[str, ...] = ()  # classify these images / folders instead of evaluating
    to: str | None = None  # convert to this format instead of predicting
    data_path: str | None = None  # same as data.dataset_path=DIR
    threshold: float | None = None  # None: task.threshold
    top_k: int = 5
    batch_size: int | None = None  # same as data.inference_batch_size=N
    device: str = "auto"
    overrides: tuple[str, ...] = ()  # key=value changes to the model's config
