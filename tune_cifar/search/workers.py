"""``search.resources.workers``: what a search with data-parallel trials checks before any trial, and
how many such trials fit at once. No Ray here (the driver's checks; the trial itself: distributed.py).

The batch rule: ``data.train_batch_size`` is the *global* batch of a trial, whatever its number of
workers N: each worker trains on ``train_batch_size / N`` images per step and DDP averages the
gradients, so a step sees the same number of images as a one-process trial's and a search over the
batch size keeps its meaning. The learning rate is not scaled (no hidden linear-scaling rule): it is
the rate of that global batch, as the config or the search gives it.
"""

from __future__ import annotations

import math

from ..errors import UserError
from .keys import get_dotted

BATCH_KEY = "data.train_batch_size"


def batch_values(space) -> tuple[list[int], str]:
    """The global batch sizes the trials can get (the base's, or every value of the searched parameter),
    and the parameter kind that cannot be listed (``int``: every integer in a range)."""
    param = next((p for p in space.params if p.key == BATCH_KEY), None)
    if param is None:
        return [get_dotted(space.base, BATCH_KEY)], ""
    values, ranges = [], ""
    for dist in param.dists.values():
        if dist.kind in ("choice", "value"):
            values += list(dist.args)
        elif dist.kind == "qint":  # low, low + step, ...: all multiples of N when both are
            low, high, step = dist.args
            values += [low] + ([step] if high > low else [])
        else:
            ranges = dist.describe()
    return values, ranges


def check_batch(space) -> None:
    """Every global batch must split evenly over the workers: one line naming the value, before any trial."""
    n = space.search.resources.workers
    if n == 1:
        return
    values, ranges = batch_values(space)
    rule = (f"search.resources.workers={n}: {BATCH_KEY} is the global batch, split evenly over the {n} "
            f"workers of a trial")
    if ranges:
        raise UserError(f"{space.path}: params.{BATCH_KEY} is {ranges}, which has values that {n} does not "
                        f"divide ({rule}); allowed: a choice of multiples of {n}, or qint with a low bound and "
                        f"step that are multiples of {n}")
    for v in values:
        if isinstance(v, int) and v < n:
            raise UserError(f"{space.path}: {BATCH_KEY}={v} is smaller than the number of workers ({rule}); "
                            f"allowed: a multiple of {n}")
        if isinstance(v, int) and v % n:
            raise UserError(f"{space.path}: {BATCH_KEY}={v} is not a multiple of {n} ({rule}); allowed: a "
                            f"multiple of {n}, e.g. {max(n, v - v % n)} or {v + n - v % n}")


def trials_that_fit(nodes: list[dict], need: dict) -> int:
    """How many trials of ``need`` (Ray resource names) fit at once: a trial's workers on one node each
    (Ray Train's STRICT_PACK), summed over the nodes."""
    fits = 0
    for resources in nodes:
        per_node = [math.floor(resources.get(k, 0) / v + 1e-9) for k, v in need.items() if v > 0]
        fits += min(per_node) if per_node else 0
    return fits
