"""Image folders (``train/<class>/``, ``test/<class>/`` or a seeded holdout) and images
listed in a multilabel CSV."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError, allowed
from .arrays import ImageArrays, channel_stats

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L")  # 16-bit grayscale PNGs open in one of these modes
_GRAY_MODES = ("1", "L", "LA", "F", *_SIXTEEN_BIT)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _shown_size(img) -> tuple[int, int]:
    """(W, H) as the image is shown (its EXIF orientation applied), from the header alone."""
    w, h = img.size
    return (h, w) if img.getexif().get(0x0112) in _TURNED else (w, h)


def to_mode(img, mode: str):
    """The image as shown (EXIF orientation applied: phone photos) in ``mode``; 16-bit grayscale is
    scaled to 8 bits (PIL's convert would clip it at 255). Training (image folders) and predict
    (--images) decode with this one function."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT:
        scaled = np.rint(np.asarray(img, dtype=np.float64) * (255.0 / 65535.0))
        img = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")
    return img.convert(mode)


def _read_images(files: list[Path], image_size: Optional[int]) -> np.ndarray:
    """Decode, convert (L if all grayscale, else RGB) and resize to uint8 [N, C, H, W], one image at a
    time (the headers first, for the mode and size: full-size pixels are never all in memory)."""
    from PIL import Image

    def unreadable(file: Path, err: Exception) -> UserError:  # PIL raises UnidentifiedImageError, OSError, ...
        return UserError(f"{file}: unreadable image ({type(err).__name__}: {err})")

    headers = []
    for file in files:
        try:
            with Image.open(file) as img:  # reads the header only
                headers.append((img.mode, _shown_size(img)))
        except Exception as err:
            raise unreadable(file, err) from None
    mode = "L" if all(m in _GRAY_MODES for m, _ in headers) else "RGB"
    size = (image_size, image_size) if image_size else headers[0][1]  # PIL sizes are (W, H)
    out = np.empty((len(files), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.uint8)
    for i, (file, (_, file_size)) in enumerate(zip(files, headers)):
        if file_size != size and not image_size:
            raise UserError(f"{file}: size {file_size[0]}x{file_size[1]} differs from {files[0].name} "
                            f"({size[0]}x{size[1]}); set data.image_size to resize all images")
        try:
            with Image.open(file) as img:
                img = to_mode(img, mode)
        except Exception as err:
            raise unreadable(file, err) from None
        if img.size != size:
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
    trained = {idx for f, idx in items if f.is_relative_to(roots[0])}
    for idx, name in enumerate(classes):
        if idx not in trained:  # kept (the class count and the labels stay as the folders say), but said
            print(f"tune_cifar: warning: class folder {roots[0] / name} has no {'/'.join(IMAGE_SUFFIXES)} images: "
                  f"class {name!r} is an output of the model but is never trained on", file=sys.stderr, flush=True)
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
            # the name, not a link's target: "../x.png" and "/abs.png" are refused, links inside are followed
            if not Path(os.path.normpath(file)).is_relative_to(os.path.normpath(path)):
                raise UserError(f"{csv_file}:{line}: image {row['file']} is outside data.dataset_path={path}; "
                                f"allowed: paths relative to that folder, inside it")
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
    if (path / "train").is_dir():  # train/ and test/ given (else a class folder may be named "test")
        is_test = np.array([_split_of(f, path) == "test" for f in files])
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
