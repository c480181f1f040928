"""CIFAR-10 / CIFAR-100 from the original pickle layout, read with a restricted unpickler;
downloaded with torchvision's helper when absent and online."""

from __future__ import annotations

import os
import pickle
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import numpy as np

from ..errors import UserError, check_choice
from .arrays import ImageArrays

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))

_NP_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"

# Every global a CIFAR-style pickle needs, found by recording ``find_class`` while
# loading a dict of bytes/str/int/list and a uint8 array written with pickle
# protocols 0-5 (numpy 2), and a Python-2 style protocol-2 file like the official
# archives (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``):
#   protocols 0-4: numpy.ndarray, numpy.dtype, numpy(._)core.multiarray._reconstruct
#   protocol 5:    numpy.dtype, numpy(._)core.numeric._frombuffer
#   protocols 0-2 written by Python 3: _codecs.encode (bytes), __builtin__.bytes (b"")
# dict, list, str, int and Python-2 str are pickle opcodes and need no global.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    (f"{_NP_CORE}.multiarray", "_reconstruct"),
    (f"{_NP_CORE}.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str):
        mod = "builtins" if module == "__builtin__" else module
        for core in ("numpy.core.", "numpy._core."):
            if mod.startswith(core):
                mod = f"{_NP_CORE}.{mod[len(core):]}"
        if (mod, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"refused global {module}.{name} (only numpy arrays are allowed)")
        return super().find_class(mod, name)


def _read_pickle(file: Path) -> dict:
    """Load one CIFAR pickle file with the restricted unpickler."""
    if not file.is_file():
        raise UserError(f"{file}: file missing; delete its folder to download again or set data.dataset_path")
    try:
        with open(file, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as err:
        raise UserError(f"{file}: not a CIFAR pickle: {err}") from None
    except Exception as err:  # truncated or corrupt: EOFError, ValueError, struct.error, ...
        raise UserError(f"{file}: truncated or corrupt pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{file}: expected a dict, got {type(obj).__name__}")
    return obj


def _key(d: dict, key: bytes, file: Path):
    if key not in d:
        found = ", ".join(repr(k) for k in d)
        raise UserError(f"{file}: missing key {key!r}; found: {found}")
    return d[key]


def _read_cifar_batch(file: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One data file -> (uint8 [N, 3, 32, 32], int64 [N])."""
    d = _read_pickle(file)
    data = _key(d, b"data", file)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{file}: b'data' must be a uint8 array [N, 3072], got {desc}")
    try:
        labels = np.asarray(_key(d, label_key, file), dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError(f"{file}: {label_key!r} must be a list of integers") from None
    if labels.shape != (len(data),):
        raise UserError(f"{file}: {label_key!r} has shape {labels.shape}, expected ({len(data)},)")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{file}: {label_key!r} out of range 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_names(file: Path, key: bytes) -> list[str]:
    names = _key(_read_pickle(file), key, file)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"{file}: {key!r} must be a list of names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    base: str  # folder inside dataset_path
    url: str
    md5: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels: dict  # label kind -> (labels key in data files, names key in meta)
    stats: tuple


CIFAR10 = _CifarSpec(
    name="cifar10",
    base="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test="test_batch",
    meta="batches.meta",
    labels={"labels": (b"labels", b"label_names")},
    stats=CIFAR10_STATS,
)
CIFAR100 = _CifarSpec(
    name="cifar100",
    base="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train=("train",),
    test="test",
    meta="meta",
    labels={
        "fine": (b"fine_labels", b"fine_label_names"),
        "coarse": (b"coarse_labels", b"coarse_label_names"),
    },
    stats=CIFAR100_STATS,
)

PROBE_TIMEOUT_S = 5.0  # the host must answer this fast before a download is tried
PROBE_TIMEOUT_ENV = "TUNE_CIFAR_OFFLINE_PROBE_TIMEOUT"  # overrides PROBE_TIMEOUT_S (seconds)
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading (a stalled transfer fails)


def _probe(url: str, timeout: float) -> Optional[str]:
    """None when ``url``'s host accepts a TCP connection within ``timeout``, else the reason."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    result: dict = {}

    def connect() -> None:  # in a thread: name resolution ignores socket timeouts
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as err:
            result["err"] = err

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    return " ".join(str(result.get("err") or f"no answer from {host} within {timeout:g} s").split())


def _download(spec: _CifarSpec, root: Path) -> Optional[str]:
    """Download and extract the archive into ``root``; None on success, else the reason."""
    value = os.environ.get(PROBE_TIMEOUT_ENV, str(PROBE_TIMEOUT_S))
    try:
        timeout = float(value)
    except ValueError:
        raise UserError(f"{PROBE_TIMEOUT_ENV}={value!r} must be a number of seconds") from None
    reason = _probe(spec.url, timeout)
    if reason is not None:
        return reason
    from torchvision.datasets.utils import download_and_extract_archive

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download_and_extract_archive(spec.url, str(root), filename=Path(spec.url).name, md5=spec.md5)
    except Exception as err:  # network, disk or checksum
        return " ".join(f"{type(err).__name__}: {err}".split())  # one line
    finally:
        socket.setdefaulttimeout(previous)
    return None


def _cifar_folder(spec: _CifarSpec, path: Path, download: bool) -> Path:
    """The folder holding the CIFAR files: ``path`` itself or ``path/<base>``, downloaded if needed."""
    if (path / spec.meta).is_file() or (path / spec.test).is_file():
        return path
    folder = path / spec.base
    if folder.is_dir():
        return folder
    if download:
        reason = _download(spec, path)
        if reason is None and folder.is_dir():
            return folder
        why = f"download failed ({reason or 'archive did not contain ' + spec.base})"
    else:
        why = "data.download=false"
    raise UserError(
        f"{spec.name}: no {spec.base}/ in {path} and {why}; "
        f"set data.dataset_path=<folder containing {spec.base}>"
    )


def _load_cifar(spec: _CifarSpec, path: Path, download: bool, kind: str) -> ImageArrays:
    folder = _cifar_folder(spec, path, download)
    label_key, names_key = spec.labels[kind]
    classes = _read_names(folder / spec.meta, names_key)
    train = [_read_cifar_batch(folder / name, label_key, len(classes)) for name in spec.train]
    test_x, test_y = _read_cifar_batch(folder / spec.test, label_key, len(classes))
    return ImageArrays(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
        classes=classes,
        mean=spec.stats[0],
        std=spec.stats[1],
    )


def load_cifar10(path: Path, *, download: bool = True, **_) -> ImageArrays:
    """CIFAR-10 from ``<path>/cifar-10-batches-py`` (or ``path`` being that folder)."""
    return _load_cifar(CIFAR10, path, download, "labels")


def load_cifar100(path: Path, *, download: bool = True, cifar100_labels: str = "fine", **_) -> ImageArrays:
    """CIFAR-100 from ``<path>/cifar-100-python`` with fine (100) or coarse (20) labels."""
    check_choice("data.cifar100_labels", cifar100_labels, ("fine", "coarse"))
    return _load_cifar(CIFAR100, path, download, cifar100_labels)
