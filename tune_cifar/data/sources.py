"""Read image datasets into uint8 arrays, decoded once.

Sources (``SOURCES``):

* ``cifar10`` / ``cifar100``: the original pickle layout, read with a restricted
  unpickler (see ``_CifarUnpickler``); downloaded with torchvision's helper when
  absent and online.
* ``fashion_mnist``: the standard idx ``.gz`` files.
* ``folder``: ``<path>/train/<class>/*.png|jpg|jpeg`` and ``<path>/test/<class>/...``.
  Without ``train/``, ``<path>/<class>/...`` is split into train and a seeded 20 %
  test holdout. Multilabel: ``labels_csv`` with columns ``file,labels`` (``file``
  relative to ``<path>``, labels separated by spaces or ``;``); rows whose file is
  under ``train/``/``test/`` go there, otherwise the same 20 % holdout applies.

Every bad input raises ``UserError`` naming the file or config key.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import os
import pickle
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import numpy as np

from ..errors import UserError, allowed, check_choice

# --------------------------------------------------------------------------- arrays


@dataclass
class ImageArrays:
    """A dataset in memory: uint8 images [N, C, H, W] and labels."""

    train_x: np.ndarray  # uint8 [N, C, H, W]
    train_y: np.ndarray  # int64 [N] (multiclass/binary) or float32 [N, K] multi-hot (multilabel)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] units
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def multilabel(self) -> bool:
        return self.train_y.ndim == 2


CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], in [0, 1] units."""
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        total_sq += (part**2).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# --------------------------------------------------------------------------- CIFAR pickles

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


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _read_idx(file: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped when its name ends in .gz)."""
    try:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{file}: unreadable ({err})") from None
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise UserError(f"{file}: bad idx magic {raw[:4].hex()}, expected 000008{ndim:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise UserError(f"{file}: {len(raw) - offset} bytes of data, header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"fashion_mnist: {folder / (stem + '.gz')} not found; "
        "install it (apt-get install dataset-fashion-mnist) or set data.dataset_path"
    )


def load_fashion_mnist(path: Path, **_) -> ImageArrays:
    """Fashion-MNIST from the standard idx files: [N, 1, 28, 28]."""
    if not path.is_dir():
        raise UserError(
            f"fashion_mnist: folder {path} not found; "
            "install it (apt-get install dataset-fashion-mnist) or set data.dataset_path"
        )
    parts = []
    for prefix in ("train", "t10k"):
        images_file = _idx_file(path, f"{prefix}-images-idx3-ubyte")
        labels_file = _idx_file(path, f"{prefix}-labels-idx1-ubyte")
        x, y = _read_idx(images_file, 3), _read_idx(labels_file, 1)
        if len(x) != len(y):
            raise UserError(f"{labels_file}: {len(y)} labels for {len(x)} images in {images_file.name}")
        if len(y) and y.max() >= 10:
            raise UserError(f"{labels_file}: label {y.max()} out of range 0..9")
        parts.append((x[:, None].copy(), y.astype(np.int64)))
    (train_x, train_y), (test_x, test_y) = parts
    mean, std = FASHION_MNIST_STATS
    return ImageArrays(train_x, train_y, test_x, test_y, list(FASHION_MNIST_CLASSES), mean, std)


# --------------------------------------------------------------------------- image folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _read_images(files: list[Path], image_size: Optional[int]) -> np.ndarray:
    """Decode, convert (L if all grayscale, else RGB) and resize to uint8 [N, C, H, W]."""
    from PIL import Image

    images = []
    for file in files:
        try:
            with Image.open(file) as img:
                img.load()
                images.append(img.copy())
        except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
            raise UserError(f"{file}: unreadable image ({type(err).__name__}: {err})") from None
    mode = "L" if all(img.mode in _GRAY_MODES for img in images) else "RGB"
    size = (image_size, image_size) if image_size else images[0].size  # PIL sizes are (W, H)
    out = np.empty((len(images), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.uint8)
    for i, (file, img) in enumerate(zip(files, images)):
        img = img.convert(mode)
        if img.size != size:
            if not image_size:
                raise UserError(
                    f"{file}: size {img.size[0]}x{img.size[1]} differs from {files[0].name} "
                    f"({size[0]}x{size[1]}); set data.image_size to resize all images"
                )
            img = img.resize(size, Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def _split_of(file: Path, root: Path) -> Optional[str]:
    """"train"/"test" when ``file`` lies under ``root/train`` or ``root/test``, else None."""
    try:
        parts = file.relative_to(root).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in ("train", "test") else None


def _class_items(path: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, class index) from class subfolders of ``path/train``+``path/test`` or of ``path``."""
    roots = [path / "train", path / "test"] if (path / "train").is_dir() else [path]
    classes = sorted(d.name for d in roots[0].iterdir() if d.is_dir())
    if len(roots) == 2 and (path / "test").is_dir():
        extra = sorted({d.name for d in (path / "test").iterdir() if d.is_dir()} - set(classes))
        if extra:
            raise UserError(f"{path / 'test'}: class folders {extra} are not in {path / 'train'}")
    items = [
        (f, idx)
        for root in roots
        if root.is_dir()
        for idx, name in enumerate(classes)
        if (root / name).is_dir()
        for f in sorted((root / name).iterdir())
        if _is_image(f)
    ]
    return items, classes


def _csv_items(path: Path, labels_csv: str) -> tuple[list[tuple[Path, list[str]]], list[str]]:
    """(file, label names) rows of the multilabel CSV; classes are the sorted label names."""
    csv_file = Path(labels_csv).expanduser()
    if not csv_file.is_absolute() and not csv_file.is_file():
        csv_file = path / csv_file
    if not csv_file.is_file():
        raise UserError(f"data.labels_csv: {labels_csv} not found (also looked in {path})")
    with open(csv_file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "labels"} <= set(reader.fieldnames):
            raise UserError(f"{csv_file}: needs the header 'file,labels', got {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            file = path / (row["file"] or "").strip()
            if not _is_image(file):
                raise UserError(f"{csv_file}:{line}: image {file} not found (allowed: {allowed(IMAGE_SUFFIXES)})")
            names = (row["labels"] or "").replace(";", " ").split()
            rows.append((file, names))
    classes = sorted({n for _, names in rows for n in names})
    return rows, classes


def load_folder(
    path: Path, *, image_size: Optional[int] = None, labels_csv: Optional[str] = None, **_
) -> ImageArrays:
    """Image folders (multiclass) or images plus a multilabel CSV; mean/std computed on train."""
    if not path.is_dir():
        raise UserError(f"folder: data.dataset_path={path} is not a folder")
    if labels_csv:
        rows, classes = _csv_items(path, labels_csv)
        files = [f for f, _ in rows]
        y = np.zeros((len(rows), len(classes)), dtype=np.float32)
        index = {name: i for i, name in enumerate(classes)}
        for r, (_, names) in enumerate(rows):
            y[r, [index[n] for n in names]] = 1.0
    else:
        items, classes = _class_items(path)
        files = [f for f, _ in items]
        y = np.array([c for _, c in items], dtype=np.int64)
    if not files:
        raise UserError(f"folder: no {'/'.join(IMAGE_SUFFIXES)} images in {path} (expected train/<class>/*.png)")
    splits = [_split_of(f, path) for f in files]
    if any(s is not None for s in splits):
        is_test = np.array([s == "test" for s in splits])
        if not is_test.any():
            raise UserError(f"folder: no test images in {path / 'test'}")
    else:  # seeded holdout
        if len(files) < 2:
            raise UserError(f"folder: {path} has 1 image; need at least 2 for a train/test holdout")
        n_test = max(1, int(round(HOLDOUT_FRACTION * len(files))))
        is_test = np.zeros(len(files), dtype=bool)
        is_test[np.random.default_rng(HOLDOUT_SEED).permutation(len(files))[:n_test]] = True
    x = _read_images(files, image_size)
    mean, std = channel_stats(x[~is_test])
    return ImageArrays(x[~is_test], y[~is_test], x[is_test], y[is_test], classes, mean, std)


# --------------------------------------------------------------------------- entry points

SOURCES: dict[str, Callable[..., ImageArrays]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "fashion_mnist": load_fashion_mnist,
    "folder": load_folder,
}
DEFAULT_PATHS = {"cifar10": "data", "cifar100": "data", "fashion_mnist": FASHION_MNIST_DIR}


def resize_images(x: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 [N, C, H, W] to [N, C, size, size]."""
    import torch
    import torch.nn.functional as F

    out = np.empty((*x.shape[:2], size, size), dtype=np.uint8)
    for i in range(0, len(x), chunk):
        part = torch.from_numpy(x[i : i + chunk]).float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def load_source(
    name: str,
    path: str | Path | None,
    *,
    download: bool = True,
    cifar100_labels: str = "fine",
    image_size: Optional[int] = None,
    labels_csv: Optional[str] = None,
) -> ImageArrays:
    """Load dataset ``name`` from ``path`` (None/"" -> the source's default folder)."""
    check_choice("data.name", name, SOURCES)
    if labels_csv and name != "folder":
        raise UserError(f"data.labels_csv is only supported with data.name=folder, not {name}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"data.image_size={image_size!r} must be a positive integer or null")
    if not path:
        if name not in DEFAULT_PATHS:
            raise UserError(f"data.dataset_path is required for data.name={name}")
        path = DEFAULT_PATHS[name]
    arrays = SOURCES[name](
        Path(path).expanduser(),
        download=download,
        cifar100_labels=cifar100_labels,
        image_size=image_size,
        labels_csv=labels_csv,
    )
    if image_size and arrays.image_size != (image_size, image_size):  # cifar / fashion_mnist
        arrays = dataclasses.replace(
            arrays, train_x=resize_images(arrays.train_x, image_size), test_x=resize_images(arrays.test_x, image_size)
        )
    return arrays


def group_labels(arrays: ImageArrays, groups: dict[str, list[str]]) -> ImageArrays:
    """Merge classes into groups, e.g. {"vehicle": [...], "animal": [...]} -> 2 classes."""
    if not groups or not isinstance(groups, dict):
        raise UserError(f"data.label_groups must map group names to lists of classes, got {groups!r}")
    mapping = np.full(arrays.num_classes, -1, dtype=np.int64)
    for g, (group, members) in enumerate(groups.items()):
        if isinstance(members, str) or not members:
            raise UserError(f"data.label_groups.{group} must be a non-empty list of classes")
        for member in members:
            if member not in arrays.classes:
                raise UserError(
                    f"data.label_groups.{group}: unknown class {member!r}; allowed: {', '.join(arrays.classes)}"
                )
            i = arrays.classes.index(member)
            if mapping[i] >= 0:
                raise UserError(f"data.label_groups: class {member!r} is in more than one group")
            mapping[i] = g
    missing = [c for c, m in zip(arrays.classes, mapping) if m < 0]
    if missing:
        raise UserError(f"data.label_groups: classes not in any group: {', '.join(missing)}")

    def regroup(y: np.ndarray) -> np.ndarray:
        if y.ndim == 1:
            return mapping[y]
        out = np.zeros((len(y), len(groups)), dtype=y.dtype)  # multilabel: any member -> group
        for i, g in enumerate(mapping):
            out[:, g] = np.maximum(out[:, g], y[:, i])
        return out

    return dataclasses.replace(
        arrays, train_y=regroup(arrays.train_y), test_y=regroup(arrays.test_y), classes=list(groups)
    )


def subset(x: np.ndarray, y: np.ndarray, n: Optional[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of ``n`` samples (order kept); all of them when n is None or >= len."""
    if n is None or n >= len(x):
        return x, y
    if n < 1:
        raise UserError(f"subset size must be a positive integer or null, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx], y[idx]
