"""Where results go (the output folder) and the warnings printed on the way."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import UserError, check_output_dir
from .loading import Loaded
from .options import Options

PRINT_ROWS = 20  # at most this many image predictions / confusion-matrix classes are printed


def make_out_dir(options: Options, loaded: Loaded) -> Path:
    if options.out:
        out = Path(options.out)
    else:
        parent = loaded.home / "predict"
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        out, n = parent / stamp, 1
        while out.exists():
            n += 1
            out = parent / f"{stamp}_{n}"
    check_output_dir(out, "--out")  # a folder that cannot be written is named, not an exporter's failure
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {out} ({err.strerror}); pass --out DIR") from None
    return out


def shown(text: str) -> str:
    """``text`` as a terminal can show it: the bytes of a file name that is not UTF-8 (kept by Python as
    lone surrogates, ``os.fsdecode``) as ``\\xNN`` escapes, where printing them would raise."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def warn(message: str) -> None:
    print(f"tune_cifar.predict: warning: {shown(message)}", file=sys.stderr)
