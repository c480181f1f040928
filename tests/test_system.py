"""ClassificationSystem: losses per task, metric allow-list, LR schedules, precision, memory format."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tune_cifar.config import OptimizerConfig, SchedulerConfig, TaskConfig
from tune_cifar.errors import UserError
from tune_cifar.models import ModelSpec
from tune_cifar.metrics import build_metric, in_stage, logged_keys, metric_key
from tune_cifar.optim import lr_factor
from tune_cifar.system import ClassificationSystem, InputSpec


def _system(task="classification_multiclass", n=4, outputs=None, metrics=None, channels_last=False,
            optimizer="adamw", lr=0.01):
    spec = ModelSpec(provider="builtin", name="tiny_cnn", num_classes=outputs or n, in_chans=3)
    inp = InputSpec(classes=tuple(f"c{i}" for i in range(n)), in_chans=3, image_size=(16, 16),
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    opt = OptimizerConfig(optimizer=optimizer, lr=lr, metrics=metrics or {"accuracy": {}})
    return ClassificationSystem(spec, TaskConfig(task=task), opt, inp, channels_last=channels_last)


def _learnable(n_classes=4, n=64, multilabel=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if multilabel:
        y = (torch.rand(n, n_classes, generator=g) > 0.5).float()
        x = (y[:, :3, None, None] * 200).expand(n, 3, 16, 16)
    else:
        y = torch.randint(0, n_classes, (n,), generator=g)
        x = (y[:, None, None, None].float() * (255 / n_classes)).expand(n, 3, 16, 16)
    x = (x + torch.randint(0, 20, (n, 3, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)
    return x, y


def _train_steps(system, x, y, steps=15, precision_ctx=None):  # each task is below 0.55x its first loss by then
    opt = torch.optim.AdamW(system.parameters(), lr=0.02)
    losses = []
    for _ in range(steps):
        ctx = precision_ctx() if precision_ctx else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = system.loss(system(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("task, n, outputs, multilabel", [
    ("classification_multiclass", 4, 4, False),
    ("classification_binary", 2, 1, False),
    ("classification_multilabel", 3, 3, True),
])
def test_each_task_loss_falls_and_probabilities_have_the_task_shape(task, n, outputs, multilabel):
    torch.manual_seed(0)
    system = _system(task, n=n, outputs=outputs)
    x, y = _learnable(n, multilabel=multilabel)
    losses = _train_steps(system, x, y)
    assert losses[-1] < 0.7 * losses[0]
    probs = system.probabilities(system(x[:5]))
    expected = {"classification_multiclass": (5, n), "classification_binary": (5,),
                "classification_multilabel": (5, n)}[task]
    assert probs.shape == expected and bool(((probs >= 0) & (probs <= 1)).all())
    if task == "classification_multiclass":
        assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)


def test_bf16_autocast_on_cpu_trains():
    torch.manual_seed(0)
    system = _system()
    x, y = _learnable()
    losses = _train_steps(system, x, y, precision_ctx=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert losses[-1] < 0.7 * losses[0]


def test_bf16_mixed_trainer_on_cpu(tiny_cfg):
    from tune_cifar import train

    result = train.run(tiny_cfg("trainer.precision=bf16-mixed", "trainer.limit_train_batches=2"))  # one short epoch
    assert math.isfinite(result["test"]["loss/test"])
    ckpt = torch.load(Path(result["output_dir"]) / result["best_checkpoint"], weights_only=True)
    assert ckpt["hyper_parameters"]["trained_precision"] == "bf16-mixed"  # not silently 32-bit


def test_channels_last_matches_contiguous_logits():
    torch.manual_seed(0)
    a = _system().eval()
    b = _system(channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    x, _ = _learnable(n=8)
    assert torch.allclose(a(x), b(x), atol=1e-5)
    assert b.preprocess(x).is_contiguous(memory_format=torch.channels_last)


def test_preprocess_normalises_uint8_with_input_spec():
    system = _system()
    x = torch.full((1, 3, 2, 2), 128, dtype=torch.uint8)
    expected = (128 / 255 - 0.5) / 0.25
    assert torch.allclose(system.preprocess(x), torch.full((1, 3, 2, 2), expected), atol=1e-5)


@pytest.mark.parametrize("name, kwargs, expected", [
    ("accuracy", {}, 0.75),                   # micro: 3 of 4 rows right
    ("top_k_accuracy", {"top_k": 2}, 1.0),    # row 3's class is its second choice
    ("top_k_accuracy", {}, 1.0),              # top_k 5 capped at the 4 classes
    ("f1", {"average": "macro"}, (1 + 1 + 2 / 3 + 0) / 4),
    ("precision", {"average": "macro"}, (1 + 1 + 0.5 + 0) / 4),
    ("recall", {"average": "macro"}, (1 + 1 + 1 + 0) / 4),
    ("auroc", {}, 1.0),                       # every class's true rows rank above the others
])
def test_allowed_metrics_build_and_compute(name, kwargs, expected):
    metric = build_metric(name, kwargs, TaskConfig(), 4)
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.05, 0.05, 0.5, 0.4]])
    metric.update(probs, torch.tensor([0, 1, 2, 3]))  # the last row is wrong: class 2 predicted, 3 true
    assert metric.compute().item() == pytest.approx(expected)


@pytest.mark.parametrize("name, kwargs, task, needle", [
    ("dice", {}, "classification_multiclass", "allowed"),
    ("accuracy", {"callable": "torchmetrics.functional.accuracy"}, "classification_multiclass", "callable"),
    ("top_k_accuracy", {}, "classification_binary", "classification_multiclass"),
    ("f1", {"average": "sideways"}, "classification_multiclass", "f1"),
])
def test_bad_metrics_are_user_errors(name, kwargs, task, needle):
    with pytest.raises(UserError, match=needle):
        build_metric(name, kwargs, TaskConfig(task=task), 2)


def test_metric_names_are_built_and_read_in_one_place():
    task = TaskConfig(metrics={"accuracy": {}, "f1": {"average": "macro"}})
    assert logged_keys(task, "val") == ["loss/val", "accuracy/val", "f1/val"]
    assert metric_key("accuracy", "test") == "accuracy/test"
    assert in_stage("f1/val", "val") and not in_stage("f1/val", "test") and not in_stage("val", "val")
    assert not in_stage(3, "val")  # a non-string key in a results dict


def test_lr_schedules():
    cos = SchedulerConfig(name="cosine")
    assert lr_factor(0, 100, 0, cos, 10) == pytest.approx(1.0)
    assert lr_factor(50, 100, 0, cos, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, cos, 10) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(4, 100, 10, cos, 10) == pytest.approx(0.5)  # linear warm-up
    assert lr_factor(9, 100, 10, cos, 10) == pytest.approx(1.0)  # ends at the full LR
    assert lr_factor(10, 100, 10, cos, 10) == pytest.approx(1.0)  # the cosine starts after it
    assert lr_factor(55, 100, 10, cos, 10) == pytest.approx(0.5)  # halfway through the rest
    step = SchedulerConfig(name="step", step_size=2, gamma=0.1)
    assert lr_factor(19, 100, 0, step, 10) == pytest.approx(1.0)
    assert lr_factor(20, 100, 0, step, 10) == pytest.approx(0.1)
    assert lr_factor(77, 100, 0, SchedulerConfig(name="none"), 10) == 1.0


@pytest.mark.parametrize("optimizer, sched_name, cls", [
    ("sgd", "onecycle", torch.optim.SGD), ("adam", "step", torch.optim.Adam), ("adamw", "none", torch.optim.AdamW),
])
def test_configure_optimizers(optimizer, sched_name, cls):
    system = _system(optimizer=optimizer)
    system.optim_cfg.scheduler.name = sched_name

    class FakeTrainer:
        estimated_stepping_batches = 100
        max_epochs = 10

    system.trainer = FakeTrainer()  # type: ignore[assignment]
    out = system.configure_optimizers()
    assert isinstance(out["optimizer"], cls)
    sched = out["lr_scheduler"]["scheduler"]
    want = torch.optim.lr_scheduler.OneCycleLR if sched_name == "onecycle" else torch.optim.lr_scheduler.LambdaLR
    assert type(sched) is want and out["lr_scheduler"]["interval"] == "step"
    for _ in range(20):  # step: 10 steps an epoch, gamma 0.1 after step_size epochs; none: constant
        out["optimizer"].step()
        sched.step()
    lr = out["optimizer"].param_groups[0]["lr"]
    if sched_name == "none":
        assert lr == pytest.approx(system.optim_cfg.lr)
    groups = out["optimizer"].param_groups
    assert groups[0]["weight_decay"] == system.optim_cfg.weight_decay > 0
    assert groups[1]["weight_decay"] == 0.0  # no decay on biases and norms
    assert all(p.ndim <= 1 for p in groups[1]["params"]) and all(p.ndim > 1 for p in groups[0]["params"])


def test_onecycle_keeps_the_configured_momentum():
    """PyTorch's OneCycleLR cycles momentum by default, overwriting optimizer.momentum: not here."""
    system = _system(optimizer="sgd")
    system.optim_cfg.scheduler.name, system.optim_cfg.momentum = "onecycle", 0.5

    class FakeTrainer:
        estimated_stepping_batches = 100
        max_epochs = 10

    system.trainer = FakeTrainer()  # type: ignore[assignment]
    out = system.configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(30):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(g["momentum"] == 0.5 for g in opt.param_groups)
    assert lrs[0] < lrs[25] == pytest.approx(0.01, rel=0.05)  # warms up to optimizer.lr at 30% of the steps


@pytest.mark.parametrize("task, n, outputs", [("classification_binary", 2, 1), ("classification_multilabel", 3, 3)])
def test_label_smoothing_applies_to_sigmoid_tasks(task, n, outputs):
    """Targets 0/1 become s/2 and 1-s/2 (each sigmoid output is a two-class problem)."""
    system = _system(task, n=n, outputs=outputs)
    logits = torch.tensor([[4.0, -3.0, 0.5]])[:, :outputs]
    y = torch.tensor([[1.0, 0.0, 1.0]])[:, :outputs]
    y = y.squeeze(1).long() if outputs == 1 else y
    plain = system.loss(logits, y)
    system.task.label_smoothing = 0.2
    target = torch.tensor([[0.9, 0.1, 0.9]])[:, :outputs]
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert system.loss(logits, y) == pytest.approx(want.item()) and want > plain


def test_compiled_model_keeps_checkpoint_keys_and_logits(monkeypatch):
    torch.manual_seed(0)
    system = _system().eval()
    keys = set(system.state_dict())
    x, _ = _learnable(n=4)
    eager = system(x)
    # compile with the cheap eager backend: same graph capture, no C++ toolchain needed
    monkeypatch.setattr(torch, "compile", lambda m: torch._dynamo.optimize("eager")(m))
    assert system.compile_model()
    assert set(system.state_dict()) == keys
    assert torch.allclose(system(x), eager, atol=1e-5)


def test_compile_falls_back_when_unsupported(monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    system = _system()
    assert system.compile_model() is False and "_compiled" not in system.__dict__


def test_a_registered_optimizer_and_schedule_train_a_step(tiny_cfg, monkeypatch):
    """Adding an optimizer or LR schedule is one registration: config validation and
    configure_optimizers read the registries."""
    from tune_cifar import optim, train
    from tune_cifar.config import load_config  # noqa: F401 - validation reads the registry at call time

    with pytest.raises(UserError, match="optimizer.optimizer='toy' is not allowed; allowed: .*sgd"):
        tiny_cfg("trainer.fast_dev_run=true", "optimizer.optimizer=toy")
    monkeypatch.setattr(optim, "OPTIMIZERS", dict(optim.OPTIMIZERS))
    monkeypatch.setattr(optim, "SCHEDULES", dict(optim.SCHEDULES))
    built = []

    @optim.register_optimizer("toy")
    def toy(groups, cfg):
        built.append(("toy", cfg.lr))
        return torch.optim.SGD(groups, lr=cfg.lr)

    @optim.register_schedule("halving")
    def halving(opt, cfg, steps):
        built.append(("halving", steps.total))
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    cfg = tiny_cfg("trainer.fast_dev_run=true", "optimizer.optimizer=toy", "optimizer.lr=0.125",
                   "optimizer.scheduler.name=halving")
    result = train.run(cfg)
    assert built == [("toy", 0.125), ("halving", 1)]  # fast_dev_run: one step
    assert math.isfinite(result["test"]["loss/test"])


def test_weights_files_keep_the_classifier_keys():
    """The system holds a Classifier, yet its state_dict (what checkpoints and exports store) has the
    keys files always had (model.*, mean, std), and such a dict loads back into a system and a Classifier."""
    from tune_cifar.classifier import Classifier

    torch.manual_seed(0)
    a, b = _system(), _system()
    state = a.state_dict()
    assert "mean" in state and "std" in state and all(k.startswith("model.") or k in ("mean", "std") for k in state)
    b.load_state_dict(state)
    clf = Classifier(a.model_spec, a.task, a.input_spec, fetch_weights=False)
    clf.load_state_dict(state)
    x, _ = _learnable(n=4)
    with torch.no_grad():
        assert torch.equal(b.eval()(x), a.eval()(x)) and torch.equal(clf.eval()(x), a(x))
