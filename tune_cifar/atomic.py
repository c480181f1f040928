"""Files written whole or not at all, and a full disk as one clear error.

Every file tune_cifar writes (checkpoints, exports, results, reports, predictions) goes through
``atomic_write``: the bytes go to a temporary file in the **same folder** (so the final rename never
crosses a filesystem), are flushed and fsync'ed, and only then ``os.replace`` puts the file in place.
A crash, a signal or a full disk therefore leaves either the old file or the new one, never a truncated
or empty one; the temporary file is removed when writing fails.

Running out of space (``ENOSPC``, or ``EDQUOT``: over quota) is a ``NoSpace`` error, a ``UserError`` that
names the folder: the command prints one line and exits with status 2 (``errors.cli_entry``).
``disk_full_names(folder)`` turns such an error raised by a library writing into ``folder`` (Lightning's
loggers, Ray Tune) into the same error.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXT = ("[Errno 28]", "[errno 28]", "[Errno 122]", "database or disk is full")


class NoSpace(UserError):
    """The filesystem of a folder we write to is full (or over quota); made by ``no_space``."""


def no_space(folder: str | os.PathLike, err: OSError | None = None) -> NoSpace:
    """The one line of a full disk: what, and which folder."""
    why = (err.strerror if err is not None and err.strerror else "No space left on device").lower()
    return NoSpace(f"{why} writing into {folder}: free space there (or choose another output folder); "
                   f"files written before were kept, none was left half-written")


def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is a full disk or quota. Also read from the text:
    Ray passes a trial's error on as a ``RayTaskError`` holding its remote traceback, Tune as a
    ``TuneError`` of a formatted traceback, SQLite (the Optuna study) as ``database or disk is full``."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, NoSpace) or (isinstance(err, OSError) and err.errno in NO_SPACE):
            return True
        if any(text in str(err) for text in NO_SPACE_TEXT):
            return True
        err = err.__cause__ or err.__context__ or getattr(err, "cause", None)
    return False


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power loss after it keeps the new name)."""
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened or fsync'ed
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name next to ``path`` for a writer to fill (``torch.save``, an exporter); once the
    block ends without error the file is fsync'ed and replaces ``path`` whole; on any error it is removed
    and ``path`` is as it was. A full disk raises ``NoSpace`` naming the folder."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space(folder, err) from None
        raise
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed it without fsync
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would make it (mkstemp's 0600 hides results from a group)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise no_space(folder, err) from None
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``; ``newline``, ``encoding`` as open takes them),
    but into a temporary file next to ``path`` that replaces it whole once the block ends (``replacing``)."""
    with replacing(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which races with threads


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` into ``path`` atomically. Serialised in memory first: PyTorch's C++ zip writer aborts
    the process (``terminate``) when a write fails under it, so it never writes to the disk itself."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """A matplotlib figure saved atomically (the format from the suffix)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


class NoSpaceLogFilter(logging.Filter):
    """Drops a library's log record of a full-disk error (Tune's trial failure with its remote traceback):
    the command itself then says it once, in one line (``disk_full_names``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and is_no_space(record.exc_info[1]))


@contextlib.contextmanager
def disk_full_names(folder: str | os.PathLike) -> Iterator[None]:
    """A full disk met by a library writing into ``folder`` (a logger, Ray Tune) becomes ``NoSpace(folder)``."""
    try:
        yield
    except NoSpace:
        raise
    except Exception as err:
        if is_no_space(err):
            raise no_space(_where(err, folder), _os_error(err)) from None
        raise


def _os_error(err: BaseException) -> OSError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            return err
        err = err.__cause__ or err.__context__
    return None


def _where(err: BaseException, folder: str | os.PathLike) -> str:
    """The folder of the file that failed, when the error names one under ``folder``; else ``folder``."""
    named = getattr(_os_error(err), "filename", None)
    if isinstance(named, str) and named:
        return str(Path(named).parent)
    return str(folder)
