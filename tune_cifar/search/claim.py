"""One search per experiment at a time: an OS file lock, held by the search's process.

A search claims ``<local root>/.locks/<experiment>.lock`` with ``fcntl.flock`` (exclusive, not blocking)
before it decides its run folder, and holds it until it ends: its run folder, results, export and the
``<root>/best`` update are its own. A second search of the same experiment is refused in one line (or,
with ``--new-name``, takes the next free name). The lock is the kernel's, not a flag file: it is released
when the process ends, however it ends, so a SIGKILLed search does not block the next one (its lock file
stays behind and means nothing). A search that ends normally removes its lock file; one that takes the
lock checks that the file it locked is still the one at that path (the classic flock-and-unlink race).

With a URI storage (``s3://``) the lock is in the local ``search.local_path`` folder: it keeps out searches
started from this machine (or sharing that folder over a filesystem whose locks span machines), not a
driver elsewhere writing to the same bucket.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import UserError

LOCKS = ".locks"  # in the local root, beside the experiments: the experiment folders stay as they were
_held: dict[str, tuple[int, list[Path]]] = {}  # lock file -> (its open descriptor, folders made for it)


def lock_file(root: Path, experiment: str) -> Path:
    return Path(root).resolve() / LOCKS / f"{experiment}.lock"


def claim(root: Path, experiment: str) -> bool:
    """Take experiment ``experiment``'s lock under the local ``root`` for this process; False if another
    process holds it."""
    path = lock_file(root, experiment)
    if str(path) in _held:
        return True
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # innermost first
    for _ in range(10):  # another search may remove the file between our open and our lock: then again
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the .locks folder was removed by a search ending just now
            continue
        except OSError as err:
            raise UserError(f"cannot lock experiment '{experiment}' in {root}: {path} ({err.strerror}); "
                            f"allowed: an output folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _held[str(path)] = (fd, made)
            return True
        os.close(fd)
    return False


def holder(root: Path, experiment: str) -> str:
    """``pid N`` of the process holding the lock, from the kernel's table (/proc/locks; empty if unknown)."""
    try:
        inode = os.stat(lock_file(root, experiment)).st_ino
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
                    return f"pid {parts[4]}"
    except OSError:
        pass
    return ""


def release(root: Path, experiment: str) -> None:
    """Give the lock back and remove its file (and the .locks folder if this claim made it)."""
    path = lock_file(root, experiment)
    held = _held.pop(str(path), None)
    if held is None:
        return
    fd, made = held
    try:
        path.unlink()  # while still held: a search that opened it meanwhile sees it gone and opens anew
        for p in made:
            p.rmdir()  # innermost first; stops at the first folder that is not empty
    except OSError:
        pass
    finally:
        os.close(fd)


def release_all() -> None:
    """When the search ends (also refused): every lock this process holds."""
    for key in list(_held):
        path = Path(key)
        release(path.parent.parent, path.name.removesuffix(".lock"))
