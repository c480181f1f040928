"""tune_cifar.cost: parameters, FLOPs and batch-1 latency of a model, measured as predict runs it."""

from __future__ import annotations

import torch

from tune_cifar import cost
from tune_cifar.classifier import Classifier, InputSpec
from tune_cifar.config import TaskConfig
from tune_cifar.models import ModelSpec


def _classifier(name: str = "tiny_cnn", classes: int = 10, size: int = 32) -> Classifier:
    spec = ModelSpec(provider="builtin", name=name, num_classes=classes, in_chans=3)
    inp = InputSpec(classes=tuple(f"c{i}" for i in range(classes)), in_chans=3, image_size=(size, size),
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return Classifier(spec, TaskConfig(metrics={"accuracy": {}}), inp, fetch_weights=False)


def test_params_and_flops_of_tiny_cnn_by_hand():
    # tiny_cnn: conv 3->4 (3x3, no bias) + BN(4), max-pool, conv 4->8 + BN(8), global pool, linear 8->10
    c = cost.measure(_classifier(), runs=20, warmup=1)
    assert c.params == 3 * 4 * 9 + 2 * 4 + 4 * 8 * 9 + 2 * 8 + 8 * 10 + 10  # 510; mean/std are buffers
    # multiply-adds count 2: conv1 at 32x32, conv2 at 16x16, the linear layer (BN and pooling not counted)
    assert c.flops == 2 * (3 * 4 * 9 * 32 * 32 + 4 * 8 * 9 * 16 * 16 + 8 * 10)
    m = c.metrics()
    assert set(m) == set(cost.REPORTED) and m[cost.PARAMS] == float(c.params)
    assert 0 < c.latency.q1_ms <= c.latency.median_ms <= c.latency.q3_ms and c.latency.runs == 20
    assert m[cost.LATENCY_IQR] == c.latency.iqr_ms >= 0


def test_flops_scale_with_the_image():
    assert cost.count_flops(_classifier(size=64)) > 3.9 * cost.count_flops(_classifier(size=32))


def test_the_trained_model_is_left_as_it_was():
    net = _classifier().train()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    threads = torch.get_num_threads()
    cost.measure(net, runs=20, warmup=1, threads=1)
    assert net.training and torch.get_num_threads() == threads
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())


def test_a_larger_network_takes_longer():
    # small_cnn does ~50x the FLOPs of tiny_cnn: a loaded machine does not turn that around
    small = cost.measure(_classifier("small_cnn"), runs=20, warmup=3)
    tiny = cost.measure(_classifier("tiny_cnn"), runs=20, warmup=3)
    assert small.flops > 40 * tiny.flops and small.params > tiny.params
    assert small.latency.median_ms > tiny.latency.median_ms
