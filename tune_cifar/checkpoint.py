"""Checkpoint files and the model's input contract, without Lightning (predict starts fast)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .errors import UserError

REQUIRED_HPARAMS = {"model_spec", "task", "input_spec"}


def read_checkpoint(path: str | Path) -> dict:
    """A tune_cifar weights file (export model.pt or Lightning checkpoint), read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" for damaged files
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"checkpoint {path} cannot be read: {_load_failure(err)}") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(ckpt.get("state_dict"), dict) or not REQUIRED_HPARAMS <= set(hp):
        raise UserError(f"checkpoint {path} is not a tune_cifar model (expected state_dict and hyper_parameters "
                        f"with {', '.join(sorted(REQUIRED_HPARAMS))})")
    return ckpt


# What torch's weights-only unpickler says when a file asks for more than tensors and plain data
# (torch/_weights_only_unpickler.py): the file may be intact, it is refused on purpose.
_REFUSALS = re.compile(r"Unsupported global: GLOBAL (?P<name>\S+)|unsupported GLOBAL (?P<blocked>\S+) whose module"
                       r"|Trying to call reduce|Can only create new object|Can only build|persistent_load"
                       r"|must be imported to load")


def _load_failure(err: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in one line: refused objects or a damaged file."""
    text = str(err).strip()
    refused = _REFUSALS.search(text)
    if refused:
        what = refused.group("name") or refused.group("blocked")
        return (f"loading it would need unpickling arbitrary Python objects{f' ({what})' if what else ''}, "
                f"which can run code: refused; only files that torch.load(weights_only=True) reads are loaded")
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = unpickler.group(1) if unpickler else (lines[0] if lines else "")
    detail = re.split(r"(?<=\.)\s", detail, maxsplit=1)[0]  # its first sentence, whole
    if len(detail) > 200:
        detail = detail[:200].rsplit(" ", 1)[0] + " ..."
    return f"truncated or corrupt ({type(err).__name__}{': ' + detail if detail else ''})"


def normalization_buffers(in_chans: int, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, ...]:
    """mean/std scaled to 0..255 and shaped [1, C, 1, 1], for uint8 inputs."""
    shape = (1, in_chans, 1, 1)
    return (torch.tensor(mean, dtype=torch.float32).view(shape) * 255,
            torch.tensor(std, dtype=torch.float32).view(shape) * 255)


def normalize(x: torch.Tensor, mean255: torch.Tensor, std255: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 (or 0..255 float) images -> the normalised float tensor the network sees."""
    x = (x.float() - mean255) / std255
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
