"""Model surgery: the ``model.modifiers`` (first convolution's input channels, last layer, last layer to
identity) and the CIFAR stem, applied to a built network by ``models.build_model`` / ``create_model``."""

from __future__ import annotations

import torch
from torch import nn

from .errors import UserError


def check_positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}={value!r} is not allowed; allowed: an integer >= 1")


def _find(model: nn.Module, kind: type, last: bool = False) -> tuple[str, nn.Module]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
    if not found:
        raise UserError(f"model {type(model).__name__} has no {kind.__name__} layer to modify")
    return found[-1] if last else found[0]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def change_first_conv(model: nn.Module, num_input_channels: int) -> nn.Module:
    """Give the first Conv2d ``num_input_channels`` inputs, adapting weights like timm."""
    try:
        from timm.models import adapt_input_conv
    except ImportError:  # older timm
        from timm.models._manipulate import adapt_input_conv
    check_positive_int("model.modifiers.change_first_convolutional_layer.num_input_channels", num_input_channels)
    name, conv = _find(model, nn.Conv2d)
    if conv.in_channels == num_input_channels:
        return model
    if conv.groups != 1:
        raise UserError(f"first convolution {name} is grouped; cannot change its input channels")
    new = nn.Conv2d(num_input_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    base = {"base_chans": conv.in_channels} if conv.in_channels != 3 else {}
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(num_input_channels, conv.weight.detach().clone(), **base))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _replace(model, name, new.to(conv.weight.device, conv.weight.dtype))
    return model


def change_last_layer(model: nn.Module, num_outputs: int) -> nn.Module:
    """Fresh classifier with ``num_outputs`` (timm ``reset_classifier`` or the last nn.Linear)."""
    check_positive_int("model.modifiers.change_last_layer.num_outputs", num_outputs)
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_outputs)
        return model
    name, linear = _find(model, nn.Linear, last=True)
    new = nn.Linear(linear.in_features, num_outputs, bias=linear.bias is not None)
    _replace(model, name, new.to(linear.weight.device, linear.weight.dtype))
    return model


def change_last_layer_to_identity(model: nn.Module) -> nn.Module:
    """Drop the classifier so that the model returns pooled features."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
        return model
    _replace(model, _find(model, nn.Linear, last=True)[0], nn.Identity())
    return model


def apply_cifar_stem(model: nn.Module) -> nn.Module:
    """First conv -> 3x3 stride 1 padding 1 (same channels); first MaxPool2d after it -> Identity."""
    name, conv = _find(model, nn.Conv2d)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, groups=conv.groups,
                    bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    if new.weight.shape == conv.weight.shape:  # already 3x3: keep (pretrained) weights
        new.load_state_dict(conv.state_dict())
    _replace(model, name, new)
    modules = list(model.named_modules())
    after = [n for n, m in modules[[n for n, _ in modules].index(name) + 1:] if isinstance(m, nn.MaxPool2d)]
    if after:
        _replace(model, after[0], nn.Identity())
    return model
