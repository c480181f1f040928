"""Model registries (providers: timm, torchvision, builtin; builtin CNNs) and a serialisable ModelSpec.
A new provider is one ``register_provider`` function, a new builtin model one ``register_builtin``.
The layer changes (first conv, last layer, CIFAR stem) are in ``modifiers``."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

from tune_cifar.errors import UserError, allowed, check_choice
from tune_cifar.registry import register, registrar

from .modifiers import (apply_cifar_stem, change_first_conv, change_last_layer,  # noqa: F401 - also models'
                        change_last_layer_to_identity, check_positive_int)

PROBE_TIMEOUT_S = 3.0  # seconds a weights host has to answer before a download is tried
PROBE_TIMEOUT_ENV = "TUNE_CIFAR_OFFLINE_PROBE_TIMEOUT"  # overrides PROBE_TIMEOUT_S (as in data.sources)

# ---------------------------------------------------------------- builtin models
_BUILTIN: dict[str, Callable[..., nn.Module]] = {}


def register_builtin(name: str, replace: bool = False):
    """Decorator: register ``factory(num_classes, in_chans, **kwargs)`` as builtin model ``name``."""
    return registrar(_BUILTIN, "builtin model", name, replace)


def _conv_block(cin: int, cout: int, pool: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)] if pool else layers


@register_builtin("small_cnn")
def small_cnn(num_classes: int, in_chans: int = 3, widths=(32, 64, 128), dropout: float = 0.0) -> nn.Module:
    """Conv-BN-ReLU-MaxPool blocks (32-64-128), 2x2 average pool, BatchNorm, linear. Inputs >= 8x8.

    The coarse 2x2 pooling and the normalised head learn Fashion-MNIST faster than global pooling.
    """
    chans, layers = [in_chans, *widths], []
    for cin, cout in zip(chans, chans[1:]):
        layers += _conv_block(cin, cout)
    head = [nn.AdaptiveAvgPool2d(2), nn.BatchNorm2d(chans[-1]), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(4 * chans[-1], num_classes)]
    return nn.Sequential(*layers, *head)


@register_builtin("tiny_cnn")
def tiny_cnn(num_classes: int, in_chans: int = 3) -> nn.Module:
    """A few hundred parameters, for fast tests."""
    layers = _conv_block(in_chans, 4) + _conv_block(4, 8, pool=False)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


# ---------------------------------------------------------------- pretrained weights offline
@contextlib.contextmanager
def _cache_only():
    """Load weights from local caches only: Hugging Face hub offline, no torch.hub downloads."""
    import huggingface_hub.constants as hf_constants

    def no_download(url, *args, **kwargs):
        raise OSError(f"not in the local cache: {url}")

    saved_offline, saved_dl = hf_constants.HF_HUB_OFFLINE, torch.hub.download_url_to_file
    hf_constants.HF_HUB_OFFLINE, torch.hub.download_url_to_file = True, no_download
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE, torch.hub.download_url_to_file = saved_offline, saved_dl


def _reachable(host: str, timeout: float | None = None) -> bool:
    """True if ``https://host`` gives any HTTP answer within ``timeout`` s (DNS included)."""
    if timeout is None:
        value = os.environ.get(PROBE_TIMEOUT_ENV) or str(PROBE_TIMEOUT_S)
        try:
            timeout = float(value)
        except ValueError:
            raise UserError(f"{PROBE_TIMEOUT_ENV}={value!r} is not allowed; allowed: a number of seconds") from None
    ok: list[bool] = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(f"https://{host}", method="HEAD"), timeout=timeout)
            ok.append(True)
        except urllib.error.HTTPError:  # an HTTP error status is still an answer
            ok.append(True)
        except Exception:  # DNS, connection, TLS, protocol: not reachable
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _with_weights(what: str, host: str, build: Callable[[], nn.Module]) -> nn.Module:
    """Build from cached weights; download only if ``host`` answers; UserError otherwise."""
    try:
        with _cache_only():
            return build()
    except OSError as err:
        error = err
    if _reachable(host):
        try:
            return build()
        except OSError as err:
            error = err
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise UserError(f"pretrained weights for {what} are not cached and could not be downloaded "
                    f"(offline?): {first_line}")


# ---------------------------------------------------------------- providers
@dataclass(frozen=True)
class Provider:
    """A registered model provider (``register_provider``)."""

    name: str
    create: Callable[..., nn.Module]  # (name, num_classes, in_chans, pretrained, fetch, **kwargs)
    list_models: Callable[[], list[str]]  # the names it offers (close-match hints, search checks)
    check: Callable[[str], None] | None = None  # raise UserError unless a name is valid; None: in list_models()


PROVIDERS: dict[str, Provider] = {}


def register_provider(name: str, *, list_models: Callable[[], list[str]],
                      check: Callable[[str], None] | None = None, replace: bool = False):
    """Decorator: register ``create(name, num_classes, in_chans, pretrained, fetch, **kwargs)`` as model
    provider ``name`` (config ``model.provider_name``); ``fetch=False`` asks for a pretrained model's
    architecture without downloading its weights. The model name is checked before ``create`` is called."""

    def deco(create):
        register(PROVIDERS, "model provider", name, Provider(name, create, list_models, check), replace=replace)
        return create

    return deco


def _unknown_model(name: str, provider: str, names: list[str], hint: str) -> UserError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:3]
    return UserError(f"model.model_name={name!r} is not a {provider} model; see {hint}, "
                     f"e.g. {', '.join(close)}, ...")


def _call(what: str, factory: Callable[..., nn.Module], kwargs: dict, *args, **fixed) -> nn.Module:
    try:
        return factory(*args, **fixed, **kwargs)
    except TypeError as err:
        if not kwargs:
            raise
        raise UserError(f"model.model_kwargs={kwargs!r} not accepted by {what}: {err}") from err


def _provider(name: str) -> Provider:
    check_choice("model.provider_name", name, PROVIDERS)
    return PROVIDERS[name]


def check_model_name(provider: str, name: str) -> None:
    """Raise a one-line UserError (with close names) unless ``provider`` has a model ``name``."""
    p = _provider(provider)
    if p.check is not None:
        p.check(name)
    else:
        check_choice("model.model_name", name, p.list_models())


def list_models(provider: str) -> list[str]:
    """Model names available from ``provider``."""
    return _provider(provider).list_models()


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _check_timm(name: str) -> None:
    import timm

    tagged = "." in name  # a pretrained tag, e.g. resnet18.a1_in1k
    names = timm.list_pretrained() if tagged else _timm_names()
    if not (name in names and timm.is_model(name)):
        raise _unknown_model(name, "timm", names, "timm.list_pretrained()" if tagged else "timm.list_models()")


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_torchvision(name: str) -> None:
    if name not in _torchvision_names():
        raise _unknown_model(name, "torchvision classification", _torchvision_names(),
                             "torchvision.models.list_models(module=torchvision.models)")


# What torchvision's builders set when given weights; set here too when a pretrained architecture is
# rebuilt without them (its weights come from a checkpoint).
_TORCHVISION_WEIGHTS_IMPLY = {
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": False},
    "inception_v3": {"transform_input": True, "init_weights": False},
}


@register_provider("timm", list_models=_timm_names, check=_check_timm)
def _create_timm(name, num_classes, in_chans, pretrained, fetch=True, **kwargs) -> nn.Module:
    import huggingface_hub.constants as hf_constants
    import timm

    def build():
        return _call(f"timm/{name}", timm.create_model, kwargs, name, pretrained=pretrained and fetch,
                     num_classes=num_classes, in_chans=in_chans)

    if not (pretrained and fetch):
        return build()  # timm builds the same architecture with or without the weights
    return _with_weights(f"timm/{name}", urlparse(hf_constants.ENDPOINT).hostname, build)


@register_provider("torchvision", list_models=_torchvision_names, check=_check_torchvision)
def _create_torchvision(name, num_classes, in_chans, pretrained, fetch=True, **kwargs) -> nn.Module:
    import torchvision

    what = f"torchvision/{name}"
    if pretrained:
        if fetch:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            model = _with_weights(what, urlparse(weights.url).hostname,
                                  lambda: _call(what, torchvision.models.get_model, kwargs, name, weights=weights))
        else:  # the pretrained architecture (ImageNet head, then replaced as below), no download
            fixed = {**_TORCHVISION_WEIGHTS_IMPLY.get(name, {}), **kwargs}
            model = _call(what, torchvision.models.get_model, fixed, name, weights=None)
        model = change_last_layer(model, num_classes)
    else:
        model = _call(what, torchvision.models.get_model, kwargs, name, weights=None, num_classes=num_classes)
    return change_first_conv(model, in_chans) if in_chans != 3 else model


@register_provider("builtin", list_models=lambda: sorted(_BUILTIN))
def _create_builtin(name, num_classes, in_chans, pretrained, fetch=True, **kwargs) -> nn.Module:
    if pretrained:
        raise UserError("model.model_kwargs.pretrained=True is not allowed for provider 'builtin' "
                        "(no pretrained weights for builtin models); allowed: false")
    return _call(f"builtin/{name}", _BUILTIN[name], kwargs, num_classes, in_chans)


def create_model(provider: str, name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
                 cifar_stem: bool = False, *, fetch: bool = True, **kwargs) -> nn.Module:
    """Create ``name`` from ``provider``; ``kwargs`` go to the provider's constructor.

    ``fetch=False``: a pretrained model's architecture without its weights (to load a checkpoint into)."""
    create = _provider(provider).create
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_chans", in_chans)
    check_choice("model.model_kwargs.pretrained", pretrained, [True, False])
    check_model_name(provider, name)
    model = create(name, num_classes, in_chans, pretrained, fetch, **kwargs)
    return apply_cifar_stem(model) if cifar_stem else model


# ---------------------------------------------------------------- spec
def _plain(value, key: str):
    """``value`` as plain python containers and scalars (e.g. from OmegaConf containers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (tuple, Sequence)):
        items = [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise UserError(f"{key}={value!r} is not allowed; allowed: numbers, strings, booleans, null, lists, mappings")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model; stored in checkpoints via ``to_dict``."""

    provider: str
    name: str
    num_classes: int
    in_chans: int = 3
    pretrained: bool = False
    cifar_stem: bool = False
    first_conv_channels: int | None = None  # modifiers.change_first_convolutional_layer.num_input_channels
    last_layer_outputs: int | None = None  # modifiers.change_last_layer.num_outputs
    last_layer_identity: bool = False  # modifiers.change_last_layer_to_identity
    kwargs: dict = field(default_factory=dict, hash=False)  # forwarded to the provider's constructor

    def to_dict(self) -> dict:
        """Plain python types only (safe for ``torch.load(weights_only=True)``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "kwargs": _plain(dict(self.kwargs), "model.model_kwargs")}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        keys = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(keys))
        if unknown:
            raise UserError(f"checkpoint: model spec key {unknown[0]!r} is not allowed; allowed: {allowed(keys)}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise UserError(f"checkpoint: model spec lacks {allowed(missing)}")
        return cls(**{**d, "kwargs": dict(d.get("kwargs") or {})})


def build_model(spec: ModelSpec, fetch: bool = True) -> nn.Module:
    """create_model, then first-conv, last-layer and identity modifiers (in that order).

    ``fetch=False`` when the weights come from a checkpoint: pretrained ones are not downloaded again."""
    model = create_model(spec.provider, spec.name, spec.num_classes, spec.in_chans, spec.pretrained,
                         spec.cifar_stem, fetch=fetch, **spec.kwargs)
    if spec.first_conv_channels is not None:
        model = change_first_conv(model, spec.first_conv_channels)
    if spec.last_layer_outputs is not None:
        model = change_last_layer(model, spec.last_layer_outputs)
    if spec.last_layer_identity:
        model = change_last_layer_to_identity(model)
    return model
