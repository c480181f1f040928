"""The network rebuilt from a weights file, with its input normalisation, without Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..checkpoint import normalization_buffers, normalize
from ..data.arrays import preview
from ..errors import UserError
from ..models import ModelSpec, build_model


class InferenceModel(nn.Module):
    """The trained network and its input normalisation: uint8 (or 0..255 float) [B, C, H, W] -> logits.

    Same submodule, buffers (``model``, ``mean``, ``std``) and arithmetic as
    ``ClassificationSystem.forward``, without Lightning; this is also what ``--to`` exports.
    """

    def __init__(self, model: nn.Module, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.channels_last = channels_last
        mean255, std255 = normalization_buffers(in_chans, mean, std)
        self.register_buffer("mean", mean255)
        self.register_buffer("std", std255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x, self.mean, self.std, self.channels_last))


def build_network(ckpt: dict, path: Path) -> InferenceModel:
    """Rebuild the network from the checkpoint's hyper-parameters and load its weights strictly."""
    hp = ckpt["hyper_parameters"]
    try:
        spec = ModelSpec.from_dict(hp["model_spec"])
        inp = hp["input_spec"]
        in_chans, mean, std = int(inp["in_chans"]), list(inp["mean"]), list(inp["std"])
        if len(mean) != in_chans or len(std) != in_chans or not inp["classes"]:
            raise ValueError("input_spec mean/std/classes do not fit in_chans")
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: malformed hyper_parameters ({type(err).__name__}: {err})") from None
    net = InferenceModel(build_model(spec, fetch=False), in_chans, mean, std, bool(hp.get("channels_last", False)))
    state = {k: v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.") or k in ("mean", "std")}  # metric states are not weights
    what = f"{spec.provider}/{spec.name} with {spec.num_classes} outputs"
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
        detail = lines[0] if lines else str(err).strip().splitlines()[0]
        raise UserError(f"{path}: weights are from a different model than {what}: {detail[:200]}") from None
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({preview(missing, 3)})" if missing else "",
                 f"{len(unexpected)} unexpected ({preview(unexpected, 3)})" if unexpected else ""]
        raise UserError(f"{path}: weights are from a different model than {what}: "
                        f"{'; '.join(p for p in parts if p)} parameter names")
    return net.eval()
