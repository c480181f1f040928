"""What a model costs to run, measured once: trainable parameters, FLOPs per image, batch-1 latency.

These are the ``model/*`` metrics a search can trade accuracy against (``search.metric: [accuracy/val,
model/latency_ms]``). They depend on the architecture, not on the epoch or the weights' values, so a trial
measures them once when it starts and reports them with every epoch; the search's export measures each
member of the Pareto front again, one at a time (trials running side by side disturb each other's timing).

- ``model/params``: trainable parameters of the network (normalisation buffers are not parameters);
- ``model/flops``: floating-point operations for one image, counted by torch's own
  ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2; convolutions and matrix
  products, the operations it knows, dominate every model here);
- ``model/latency_ms``: one uint8 image through ``evaluation.infer``, the loop ``predict`` runs (device
  transfer, normalisation, the network, logits back on the CPU), on a copy of the model loaded as predict
  loads it (no ``torch.compile``, eval mode); the median of ``runs`` timed calls after ``warmup`` untimed
  ones, on ``threads`` CPU threads; ``model/latency_iqr_ms`` is its spread (interquartile range).

Torch only: no Ray, no Lightning (train, the search's trials and its driver all use it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .classifier import Classifier
from .evaluation import infer

from .metrics import COST_METRICS, FLOPS, LATENCY, LATENCY_IQR, PARAMS, REPORTED  # noqa: F401 - the names

WARMUP, RUNS, THREADS = 5, 30, 1  # the defaults: 30 timed batch-1 calls (>= 20) on one thread


@dataclass(frozen=True)
class Latency:
    median_ms: float
    q1_ms: float  # 25th percentile
    q3_ms: float  # 75th percentile
    runs: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    def text(self) -> str:
        return f"{self.median_ms:.3g} ms (IQR {self.q1_ms:.3g}-{self.q3_ms:.3g}, {self.runs} runs)"


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int
    latency: Latency

    def metrics(self) -> dict[str, float]:
        """As reported and written to results.csv (floats: Tune and Lightning log floats)."""
        return {PARAMS: float(self.params), FLOPS: float(self.flops), LATENCY: self.latency.median_ms,
                LATENCY_IQR: self.latency.iqr_ms}


def predict_copy(classifier: Classifier) -> Classifier:
    """The model as predict loads it (a fresh Classifier from the same hyper_parameters and weights, in
    eval mode, never compiled), on the CPU; the trained one is left as it is (mode, device, compile)."""
    net = Classifier.from_hparams(classifier.hparams_dict(), "model")
    state = {k: v.detach().to("cpu") for k, v in classifier.state_dict().items()}
    net.load_state_dict(state)
    return net.eval()


def count_params(net: Classifier) -> int:
    return sum(p.numel() for p in net.model.parameters() if p.requires_grad)


def one_image(net: Classifier) -> torch.Tensor:
    """A uint8 [1, C, H, W] image of the model's input size (its values do not change the cost)."""
    h, w = net.input_spec.image_size
    return torch.full((1, net.input_spec.in_chans, int(h), int(w)), 128, dtype=torch.uint8)


def count_flops(net: Classifier) -> int:
    """FLOPs of one image through the network (on the CPU; the count does not depend on the device)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net.to("cpu").eval()(one_image(net))
    return int(counter.get_total_flops())


def time_latency(net: Classifier, device: torch.device | str = "cpu", precision: str = "32-true",
                 runs: int = RUNS, warmup: int = WARMUP, threads: int | None = THREADS) -> Latency:
    """Batch-1 inference time through predict's loop (``evaluation.infer``); see the module docstring.
    ``threads``: torch's CPU threads while timing (restored after); None keeps the process's."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs={runs} must be >= 1 and warmup={warmup} >= 0")
    device = torch.device(device)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x = one_image(net)
        times = []
        for i in range(warmup + runs):
            start = time.perf_counter()
            next(infer(net, [x], device, precision))  # logits come back to the CPU: the call has finished
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(before)
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return Latency(median_ms=median, q1_ms=q1, q3_ms=q3, runs=runs)


def measure(classifier: Classifier, device: torch.device | str = "cpu", precision: str = "32-true",
            runs: int = RUNS, warmup: int = WARMUP, threads: int | None = THREADS) -> Cost:
    """Parameters, FLOPs and latency of ``classifier`` (measured on a predict-like copy of it)."""
    net = predict_copy(classifier)
    return Cost(params=count_params(net), flops=count_flops(net),
                latency=time_latency(net, device, precision, runs, warmup, threads))
