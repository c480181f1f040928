"""Arbitrary images: PNG/JPEG files and folders classified into predictions.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..atomic import write_bytes
from ..config import Config
from ..data.folder import IMAGE_SUFFIXES, to_mode  # light: numpy (PIL when called)
from ..errors import UserError
from .clock import Clock
from .inference import (class_probs, decide, effective_threshold, infer, label_text, probabilities,
                        top_k_cells, top_k_header)
from .loading import Loaded
from .options import Options
from .output import PRINT_ROWS, make_out_dir, shown, warn


def collect_images(paths: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to classify (folders searched recursively for PNG/JPEG) and (name, problem) pairs."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((str(p), f"no {'/'.join(IMAGE_SUFFIXES)} images in this folder"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append((str(p), "not found"))
    return files, problems


def read_image(path: Path, in_chans: int, size_hw: tuple[int, int]) -> np.ndarray:
    """Decode, convert to the model's channels and resize (bilinear) to uint8 [C, H, W]."""
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[in_chans]
    with Image.open(path) as img:
        img = to_mode(img, mode)  # as training decoded image folders (16-bit grayscale scaled)
    h, w = size_hw
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def classify_images(loaded: Loaded, cfg: Config, options: Options, device: torch.device,
                    clock: Clock) -> dict:
    if loaded.in_chans not in (1, 3, 4):
        raise UserError(f"--images needs a model taking 1, 3 or 4 channels; this one takes {loaded.in_chans}")
    threshold = effective_threshold(options, cfg, loaded.kind)
    files, problems = collect_images(options.images)
    for name, why in problems:
        warn(f"skipped {name}: {why}")
    batch_size = cfg.data.inference_batch_size
    # (file, probabilities [K] or None, error), in the order given; problems first
    rows: list[tuple[str, torch.Tensor | None, str]] = [(name, None, why) for name, why in problems]
    pending: list[Path] = []  # the files of the batch being classified

    def batches():
        for start in range(0, len(files), batch_size):
            good = []
            for f in files[start: start + batch_size]:
                try:
                    good.append((f, read_image(f, loaded.in_chans, loaded.image_size)))
                except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
                    detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
                    why = f"unreadable image ({type(err).__name__}{': ' + detail if detail else ''})"
                    warn(f"skipped {f}: {why}")
                    rows.append((str(f), None, why))
            if good:
                pending[:] = [f for f, _ in good]
                yield torch.from_numpy(np.stack([a for _, a in good]))

    for logits in infer(loaded.net, batches(), device, loaded.precision(cfg, device), clock.batch_done):
        for f, p in zip(pending, probabilities(logits, loaded.kind)):
            rows.append((str(f), p, ""))
    classified = [r for r in rows if r[1] is not None]
    if not classified:
        raise UserError(f"no readable images among {len(files)} file(s) in {' '.join(options.images)} "
                        f"(PNG/JPEG; folders are searched for {'/'.join(IMAGE_SUFFIXES)})")
    order = {str(f): i for i, f in enumerate(files)}
    rows.sort(key=lambda r: order.get(r[0], -1))
    out_dir = make_out_dir(options, loaded)
    classes, kind = loaded.classes, loaded.kind
    k = min(options.top_k, len(classes))
    printed = 0
    text = io.StringIO()  # the whole CSV first: the file appears complete (renamed in place) or not at all
    writer = csv.writer(text)
    writer.writerow(["file", "predicted", *top_k_header(k), "error"])
    for name, p, error in rows:
        if p is None:
            writer.writerow([name, "", *([""] * 2 * k), error])
            continue
        pred = label_text(decide(p[None], kind, threshold)[0], kind, classes)
        cells = top_k_cells(class_probs(p[None], kind)[0], k, classes)
        writer.writerow([name, pred, *cells, ""])
        if printed < PRINT_ROWS:
            print(f"{shown(name)}: {pred or '(no label above threshold)'} ({cells[0]} {float(cells[1]):.3f})")
            printed += 1
    # File names byte for byte: one that is not UTF-8 (held as lone surrogates) keeps its bytes in the CSV
    # (read it back with errors="surrogateescape"); the rest of the file is UTF-8.
    csv_path = out_dir / "predictions.csv"
    write_bytes(csv_path, text.getvalue().encode("utf-8", "surrogateescape"))  # whole or not at all (atomic)
    skipped = len(rows) - len(classified)
    if len(classified) > printed:
        print(f"... {len(classified) - printed} more")
    print(f"classified {len(classified)} image(s)" + (f", skipped {skipped}" if skipped else "")
          + f"; wrote {shown(str(csv_path))}")
    return {"out_dir": str(out_dir), "classified": len(classified), "skipped": skipped,
            "predictions": str(out_dir / "predictions.csv"), "timing": clock.as_dict()}
