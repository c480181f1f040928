"""Tests for tune_cifar.models: providers, model surgery, ModelSpec, errors, offline pretrained weights."""

from __future__ import annotations

import io
import socket
import time

import huggingface_hub.constants
import pytest
import torch
from torch import nn

from tune_cifar import models
from tune_cifar.errors import UserError
from tune_cifar.models import ModelSpec, build_model, create_model, list_models, register_builtin
from tune_cifar.modifiers import apply_cifar_stem, change_first_conv, change_last_layer, change_last_layer_to_identity

CASES = [("builtin", "tiny_cnn"), ("builtin", "small_cnn"), ("timm", "test_resnet"), ("torchvision", "resnet18")]
IDS = [f"{p}-{n}" for p, n in CASES]


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def last_linear(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def run(model, in_chans=3, size=32, batch=2):
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, in_chans, size, size))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No cached weights for torch.hub (torchvision) or the Hugging Face hub (timm)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


# ---------------------------------------------------------------- shapes and stems
@pytest.mark.parametrize("provider,name", CASES, ids=IDS)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_output_shape(provider, name, in_chans):
    model = create_model(provider, name, num_classes=7, in_chans=in_chans)
    assert convs(model)[0].in_channels == in_chans
    assert run(model, in_chans).shape == (2, 7)


@pytest.mark.parametrize("name", ["tiny_cnn", "small_cnn"])
@pytest.mark.parametrize("in_chans,size", [(5, 8), (1, 28), (3, 45)])
def test_builtin_any_channels_and_size(name, in_chans, size):
    assert run(create_model("builtin", name, 4, in_chans), in_chans, size).shape == (2, 4)


def test_small_cnn_trains_on_a_batch_of_one():
    model = create_model("builtin", "small_cnn", 10, in_chans=1).train()
    model(torch.randn(1, 1, 8, 8)).sum().backward()
    assert model[0].weight.grad is not None


def test_tiny_cnn_is_tiny():
    assert sum(p.numel() for p in create_model("builtin", "tiny_cnn", 10).parameters()) < 1000


def second_conv_input_size(model, in_chans=3):
    sizes = []
    convs(model)[1].register_forward_hook(lambda mod, inp, out: sizes.append(tuple(inp[0].shape[-2:])))
    out = run(model, in_chans)
    return sizes[0], out


@pytest.mark.parametrize("provider,name", CASES, ids=IDS)
def test_cifar_stem(provider, name):
    torch.manual_seed(0)
    plain = create_model(provider, name, 10)
    torch.manual_seed(0)
    stem = create_model(provider, name, 10, cifar_stem=True)
    before, after = convs(plain)[0], convs(stem)[0]
    assert (after.kernel_size, after.stride, after.padding) == ((3, 3), (1, 1), (1, 1))
    assert (after.in_channels, after.out_channels) == (before.in_channels, before.out_channels)
    n_pool = lambda m: sum(isinstance(x, nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert n_pool(stem) == n_pool(plain) - 1
    plain_size, _ = second_conv_input_size(plain)
    stem_size, out = second_conv_input_size(stem)
    assert stem_size == (32, 32) and plain_size[0] < 32
    assert out.shape == (2, 10)


def test_timm_accepts_pretrained_tags():
    assert run(create_model("timm", "resnet18.a1_in1k", 3, cifar_stem=True)).shape == (2, 3)


def test_cifar_stem_keeps_3x3_weights_and_needs_a_conv():
    model = create_model("timm", "test_resnet", 10)  # stem conv is already 3x3 (stride 2)
    old = convs(model)[0].weight.detach().clone()
    assert torch.equal(convs(apply_cifar_stem(model))[0].weight, old)
    with pytest.raises(UserError, match="no Conv2d"):
        apply_cifar_stem(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


# ---------------------------------------------------------------- first conv
def others_equal(before: dict, model: nn.Module, skip: str) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        if not key.startswith(skip):
            assert torch.equal(after[key], value), key


def first_conv_key(model):
    name = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return name + "."


@pytest.mark.parametrize("provider,name", CASES, ids=IDS)
def test_change_first_conv_rgb_to_gray_sums_weights(provider, name):
    model = create_model(provider, name, 10)
    old, before, key = convs(model)[0].weight.detach().clone(), model.state_dict(), first_conv_key(model)
    change_first_conv(model, 1)
    new = convs(model)[0]
    assert new.in_channels == 1 and new.stride == convs(create_model(provider, name, 10))[0].stride
    torch.testing.assert_close(new.weight, old[:, 0:1] + old[:, 1:2] + old[:, 2:3])
    others_equal(before, model, key)
    assert run(model, 1).shape == (2, 10)


@pytest.mark.parametrize("provider,name", CASES, ids=IDS)
def test_change_first_conv_rgb_to_four_repeats_and_scales(provider, name):
    model = create_model(provider, name, 10)
    old = convs(model)[0].weight.detach().clone()
    change_first_conv(model, 4)
    expected = torch.cat([old[:, 0:1], old[:, 1:2], old[:, 2:3], old[:, 0:1]], dim=1) * (3 / 4)
    torch.testing.assert_close(convs(model)[0].weight, expected)
    assert run(model, 4).shape == (2, 10)


def test_change_first_conv_gray_to_rgb_and_noop():
    model = create_model("builtin", "small_cnn", 10, in_chans=1)
    old = convs(model)[0].weight.detach().clone()
    assert change_first_conv(model, 1) is model
    assert torch.equal(convs(model)[0].weight, old)
    change_first_conv(model, 3)
    torch.testing.assert_close(convs(model)[0].weight, torch.cat([old, old, old], dim=1) / 3)


# ---------------------------------------------------------------- last layer
@pytest.mark.parametrize("provider,name", CASES, ids=IDS)
def test_change_last_layer(provider, name):
    model = create_model(provider, name, 10)
    old = last_linear(model)
    head = next(n for n, m in model.named_modules() if m is old) + "."
    before = model.state_dict()
    change_last_layer(model, 5)
    new = last_linear(model)
    assert new is not old and (new.in_features, new.out_features) == (old.in_features, 5)
    others_equal(before, model, head)
    assert run(model).shape == (2, 5)


@pytest.mark.parametrize("provider,name", CASES, ids=IDS)
def test_last_layer_to_identity_returns_features(provider, name):
    model = create_model(provider, name, 10)
    features = last_linear(model).in_features
    change_last_layer_to_identity(model)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 10 for m in model.modules())
    assert run(model).shape == (2, features)


# ---------------------------------------------------------------- spec
SPEC = ModelSpec("builtin", "small_cnn", num_classes=10, in_chans=1, cifar_stem=True, first_conv_channels=2,
                 last_layer_outputs=6, kwargs={"widths": [8, 16, 32], "dropout": 0.1})


def test_spec_round_trip_through_weights_only_checkpoint():
    buffer = io.BytesIO()
    torch.save({"model_spec": SPEC.to_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["model_spec"]
    assert ModelSpec.from_dict(loaded) == SPEC
    assert ModelSpec.from_dict({"provider": "timm", "name": "x", "num_classes": 3}) == ModelSpec("timm", "x", 3)


def test_spec_to_dict_makes_kwargs_plain():
    from omegaconf import OmegaConf

    kwargs = OmegaConf.create({"widths": [8, 16, 32], "extra": {"a": (1, 2)}})
    d = ModelSpec("builtin", "small_cnn", 10, kwargs=kwargs).to_dict()
    assert d["kwargs"] == {"widths": [8, 16, 32], "extra": {"a": [1, 2]}}
    assert type(d["kwargs"]["widths"]) is list and type(d["kwargs"]["extra"]) is dict
    with pytest.raises(UserError, match=r"model.model_kwargs.act=<class 'torch.nn.modules.activation.ReLU'>"):
        ModelSpec("builtin", "small_cnn", 10, kwargs={"act": nn.ReLU}).to_dict()


def test_build_model_applies_modifiers_deterministically():
    torch.manual_seed(1)
    first = build_model(SPEC)
    torch.manual_seed(1)
    second = build_model(SPEC)
    torch.manual_seed(2)
    third = build_model(SPEC)
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert convs(first)[0].in_channels == 2 and convs(first)[0].stride == (1, 1)
    assert run(first, 2).shape == (2, 6)
    features = build_model(ModelSpec("builtin", "tiny_cnn", 10, last_layer_outputs=4, last_layer_identity=True))
    assert run(features).shape == (2, 8)


def test_spec_bad_dicts():
    with pytest.raises(UserError, match="'colour' is not allowed; allowed: cifar_stem"):
        ModelSpec.from_dict({**SPEC.to_dict(), "colour": "red"})
    with pytest.raises(UserError, match="lacks num_classes"):
        ModelSpec.from_dict({"provider": "builtin", "name": "tiny_cnn"})


# ---------------------------------------------------------------- registry and bad input
def test_list_models_and_register_builtin(monkeypatch):
    assert list_models("builtin") == ["small_cnn", "tiny_cnn"]
    assert "resnet18" in list_models("torchvision") and "fasterrcnn_resnet50_fpn" not in list_models("torchvision")
    assert "test_resnet" in list_models("timm")
    assert set(models.PROVIDERS) == {"builtin", "timm", "torchvision"}
    monkeypatch.setattr(models, "_BUILTIN", dict(models._BUILTIN))

    @register_builtin("linear")
    def linear(num_classes, in_chans=3):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    assert "linear" in list_models("builtin")
    assert run(create_model("builtin", "linear", 3), size=8).shape == (2, 3)
    with pytest.raises(UserError, match="builtin model 'linear', which .* has registered already"):
        register_builtin("linear")(linear)


def tiny():
    return create_model("builtin", "tiny_cnn", 10)


BAD_INPUT = {
    "unknown provider": (lambda: create_model("keras", "x", 10),
                         r"model.provider_name='keras' is not allowed; allowed: builtin, timm, torchvision"),
    "list unknown provider": (lambda: list_models("keras"), r"model.provider_name='keras' is not allowed"),
    "unknown timm": (lambda: create_model("timm", "resnet19", 10),
                     r"model.model_name='resnet19' is not a timm model; see timm.list_models\(\), e.g. resnet18"),
    "bad timm tag": (lambda: create_model("timm", "resnet18.bogus", 10),
                     r"model.model_name='resnet18.bogus' is not a timm model; .* e.g. resnet18\.\w+"),
    "unknown torchvision": (lambda: create_model("torchvision", "resnet19", 10),
                            r"'resnet19' is not a torchvision classification model; .* e.g. resnet18"),
    "torchvision detection": (lambda: create_model("torchvision", "fasterrcnn_resnet50_fpn", 10),
                              r"not a torchvision classification model"),
    "unknown builtin": (lambda: create_model("builtin", "resnet18", 10),
                        r"model.model_name='resnet18' is not allowed; allowed: small_cnn, tiny_cnn"),
    "pretrained builtin": (lambda: create_model("builtin", "tiny_cnn", 10, pretrained=True),
                           r"pretrained=True .*no pretrained weights for builtin"),
    "zero classes": (lambda: create_model("builtin", "tiny_cnn", 0), r"num_classes=0 is not allowed"),
    "zero channels": (lambda: create_model("builtin", "tiny_cnn", 10, in_chans=0), r"in_chans=0 is not allowed"),
    "builtin kwargs": (lambda: create_model("builtin", "tiny_cnn", 10, depth=3),
                       r"model.model_kwargs=\{'depth': 3\} not accepted by builtin/tiny_cnn"),
    "timm kwargs": (lambda: create_model("timm", "test_resnet", 10, no_such_arg=1),
                    r"not accepted by timm/test_resnet"),
    "zero outputs": (lambda: change_last_layer(tiny(), 0), r"num_outputs=0 is not allowed"),
    "negative channels": (lambda: change_first_conv(tiny(), -1), r"num_input_channels=-1 is not allowed"),
}


@pytest.mark.parametrize("call,message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_user_error(call, message):
    with pytest.raises(UserError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- pretrained weights
@pytest.mark.parametrize("provider,name,host", [("timm", "test_resnet", "huggingface.co"),
                                                ("timm", "resnet18.a1_in1k", "huggingface.co"),
                                                ("torchvision", "resnet18", "download.pytorch.org")])
def test_pretrained_not_cached_and_offline(provider, name, host, empty_caches, monkeypatch):
    probed = []
    monkeypatch.setattr(models, "_reachable", lambda h: probed.append(h) or False)
    start = time.monotonic()
    with pytest.raises(UserError, match=f"pretrained weights for {provider}/{name} are not cached and could not be "
                                        r"downloaded \(offline\?\)") as info:
        create_model(provider, name, 10, pretrained=True)
    assert time.monotonic() - start < 5 and probed == [host] and "\n" not in str(info.value)


def test_pretrained_real_probe_returns_quickly(empty_caches):
    if models._reachable("huggingface.co"):
        pytest.skip("huggingface.co is reachable: weights would be downloaded")
    start = time.monotonic()
    with pytest.raises(UserError, match="not cached and could not be downloaded"):
        create_model("timm", "test_resnet", 10, pretrained=True)
    assert time.monotonic() - start < 3 * models.PROBE_TIMEOUT_S  # cache check + probe, no retries


def test_probe_timeout_from_environment(monkeypatch):
    monkeypatch.setenv(models.PROBE_TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match="TUNE_CIFAR_OFFLINE_PROBE_TIMEOUT='soon' is not allowed"):
        models._reachable("huggingface.co")


def test_probe_gives_up_on_a_silent_server():
    with socket.socket() as server:  # accepts TCP connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        start = time.monotonic()
        assert not models._reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - start < 2


@pytest.mark.parametrize("provider,name", [("timm", "test_resnet"), ("torchvision", "resnet18")])
def test_checkpoint_of_a_pretrained_model_loads_offline(provider, name, empty_caches, monkeypatch):
    """The checkpoint holds every weight: rebuilding a fine-tuned pretrained model fetches nothing
    (training, predict and export all load checkpoints this way)."""
    from tune_cifar.config import OptimizerConfig, TaskConfig
    from tune_cifar.classifier import Classifier
    from tune_cifar.system import ClassificationSystem, InputSpec

    spec = ModelSpec(provider=provider, name=name, num_classes=3, in_chans=1, pretrained=True)
    inp = InputSpec(classes=("a", "b", "c"), in_chans=1, image_size=(32, 32), mean=(0.5,), std=(0.25,))
    torch.manual_seed(0)
    trained = ClassificationSystem(spec, TaskConfig(), OptimizerConfig(), inp, fetch_weights=False)
    ckpt = {"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}
    assert ckpt["hyper_parameters"]["model_spec"]["pretrained"] is True
    torch.save(ckpt, empty_caches / "model.ckpt")
    monkeypatch.setattr(models, "_with_weights", lambda *a: pytest.fail("pretrained weights fetched"))

    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    loaded = Classifier.from_checkpoint(empty_caches / "model.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.eval()(x))


def test_pretrained_torchvision_from_cache_keeps_weights(empty_caches, monkeypatch):
    monkeypatch.setattr(models, "_reachable", lambda h: pytest.fail("no network needed when cached"))
    torch.manual_seed(3)
    reference = create_model("torchvision", "resnet18", 1000)
    checkpoints = empty_caches / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    model = create_model("torchvision", "resnet18", 10, in_chans=1, pretrained=True)
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.fc.out_features == 10 and run(model, 1).shape == (2, 10)


def test_register_provider_is_one_registration_for_create_list_and_check(monkeypatch, tmp_path):
    """A toy provider: create_model, list_models, check_model_name (the search's check) and training."""
    from tune_cifar.config import load_config
    from tune_cifar.models import check_model_name, register_provider

    monkeypatch.setattr(models, "PROVIDERS", dict(models.PROVIDERS))
    made = []

    @register_provider("toy", list_models=lambda: ["flat", "wide"])
    def toy(name, num_classes, in_chans, pretrained, fetch=True, width=4):
        made.append((name, num_classes, in_chans, pretrained, fetch, width))
        return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * in_chans, width),
                             nn.ReLU(), nn.Linear(width, num_classes))

    assert list_models("toy") == ["flat", "wide"]
    check_model_name("toy", "wide")
    with pytest.raises(UserError, match=r"model.model_name='deep' is not allowed; allowed: flat, wide"):
        create_model("toy", "deep", 10)
    assert run(create_model("toy", "wide", 5, in_chans=1, width=8), in_chans=1, size=8).shape == (2, 5)
    assert made[-1] == ("wide", 5, 1, False, True, 8)
    with pytest.raises(UserError, match="registers model provider 'toy', which .* has registered already"):
        register_provider("toy", list_models=list)(toy)
    spec = ModelSpec("toy", "flat", num_classes=3, last_layer_outputs=2)
    assert run(build_model(spec, fetch=False), size=8).shape == (2, 2) and made[-1][4] is False
    with pytest.raises(UserError, match=r"model.provider_name='keras' is not allowed; allowed: builtin, timm, "
                                        r"torchvision, toy"):
        create_model("keras", "x", 10)
    cfg = load_config(["model=small_cnn", "model.provider_name=toy", "model.model_name=flat"])
    assert (cfg.model.provider_name, cfg.model.model_name) == ("toy", "flat")
