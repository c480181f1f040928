"""Conversion: the model written as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

import contextlib
import json
from io import BytesIO, StringIO
import warnings
from pathlib import Path

import torch
from torch import nn

from ..atomic import replacing, write_bytes, write_text
from ..config import Config
from ..errors import UserError
from .inference import effective_threshold
from .loading import Loaded
from .options import Options
from .output import make_out_dir

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # each with a model.<format>.json


def convert(loaded: Loaded, cfg: Config, options: Options) -> dict:
    """Write the model as ONNX or TorchScript and check it against PyTorch on random images."""
    fmt = options.to
    net = loaded.net.to("cpu").eval()
    (h, w), c = loaded.image_size, loaded.in_chans
    gen = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, c, h, w), dtype=torch.uint8, generator=gen)
    check = torch.randint(0, 256, (3, c, h, w), dtype=torch.uint8, generator=gen)  # another batch size
    with torch.inference_mode():
        expected = net(check)
    out_dir = make_out_dir(options, loaded)
    file = out_dir / FORMATS[fmt]
    verified = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of torch.jit / the TorchScript ONNX exporter
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(net, example)
            buffer = BytesIO()  # in memory: PyTorch's C++ writer aborts the process when a disk write fails
            torch.jit.save(traced, buffer)
            write_bytes(file, buffer.getbuffer())
            with torch.no_grad():
                got = torch.jit.load(str(file))(check)
        else:
            with replacing(file) as tmp:
                export_onnx(net, example, tmp)
            got = run_onnx(file, check)
            verified = got is not None
    info = {"format": fmt, "file": str(file), "verified": verified}
    if verified:
        diff = float((got.float() - expected.float()).abs().max())
        tol = 1e-4 * max(1.0, float(expected.abs().max()))
        if diff > tol:
            raise UserError(f"the {fmt} model disagrees with PyTorch: max |difference| {diff:.3g} > {tol:.3g}")
        info["max_abs_diff"] = diff
    io = {
        "format": fmt, "file": file.name,
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "shape": ["batch", c, h, w],
                  "channels": {1: "L", 3: "RGB", 4: "RGBA"}.get(c, c), "normalisation": "inside the model"},
        "output": {"name": "logits", "shape": ["batch", int(expected.shape[1])],
                   "to_probabilities": "softmax" if loaded.kind == "multiclass" else "sigmoid"},
        "task": loaded.kind, "classes": loaded.classes,
        "threshold": None if loaded.kind == "multiclass" else effective_threshold(options, cfg, loaded.kind),
        "source": str(loaded.source), "model": loaded.model_name,
    }
    described = out_dir / f"model.{fmt}.json"
    write_text(described, json.dumps(io, indent=2))
    check_text = (f"outputs match PyTorch (max |difference| {info['max_abs_diff']:.2g})" if verified
                  else "not checked: onnxruntime is not installed (pip install onnxruntime)")
    print(f"wrote {file} ({fmt}: uint8 NCHW images in, logits out; {check_text}) and {described}")
    info["out_dir"] = str(out_dir)
    return info


def export_onnx(net: nn.Module, example: torch.Tensor, file: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("--to onnx needs the onnx package: pip install 'tune_cifar[onnx]' "
                        "(onnx, onnxscript, onnxruntime)") from None
    names = dict(input_names=["images"], output_names=["logits"])
    try:  # the TorchScript-based exporter: fast, needs only onnx
        torch.onnx.export(net, (example,), str(file), dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **names)
        return
    except Exception as err:  # noqa: BLE001 - removed or failing: try the torch.export-based one
        first = err
    try:
        # verbose=False: its progress lines ("[torch.onnx] Obtain model graph ... ✅", ~10 per export) are noise
        # here; a failure is the one line below; what worked is the one line convert prints
        with contextlib.redirect_stdout(StringIO()):
            torch.onnx.export(net, (example,), str(file), dynamo=True, verbose=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, **names)
    except Exception as err:  # noqa: BLE001
        why = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"ONNX export failed ({why}; TorchScript-based exporter: "
                        f"{str(first).strip().splitlines()[0][:120]})") from None


def run_onnx(file: Path, x: torch.Tensor) -> torch.Tensor | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])
