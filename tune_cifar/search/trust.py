"""Before ``--resume``: the run's saved state must be whole, and trusted.

Ray Tune restores an experiment by unpickling what it saved (``tuner.pkl``, the searcher's
``searcher-state-*.pkl``, cloudpickled parts of ``experiment_state-*.json``, each trial's
``params.pkl``) and Lightning loads the trials' checkpoints: an experiment folder is trusted like code.
So, as ssh does for its keys, a run folder (or its storage path) that another user owns or may write
to is refused; and a file cut short or garbled is named in one line before Ray starts, instead of a
Ray traceback and a search that starts over (replacing its results and export). Both checks read the
files without unpickling anything: pickles are only walked opcode by opcode (``pickletools``),
checkpoints (zip archives) have their CRCs checked, JSON is parsed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickletools
import re
import stat
import zipfile
from pathlib import Path

from ..errors import UserError
from .storage import _fs, _join, is_uri

CHECKPOINT_FILE = "model.ckpt"  # trainable.CHECKPOINT_FILE (not imported: it imports Ray and Lightning)
TRUST = ("Tune unpickles a run's saved state when it resumes, which can run code, so an experiment folder "
         "is trusted like code")


def _who(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def _untrusted(path: Path, st: os.stat_result) -> str | None:
    if st.st_uid != os.getuid():
        return f"{path} is owned by {_who(st.st_uid)}, not by you ({_who(os.getuid())})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not stat.S_ISLNK(st.st_mode):
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_trusted(run_dir: Path, storage_root: Path) -> None:
    """Refuse a local run whose files, or the folders down to it from ``storage_root``, another user
    owns or may write to."""
    folders, p = [], run_dir
    while True:
        folders.append(p)
        if p == storage_root or p.parent == p:
            break
        p = p.parent
    problems = (_untrusted(f, f.lstat()) for f in reversed(folders))
    walked = (_untrusted(Path(d) / n, (Path(d) / n).lstat())
              for d, dirs, files in os.walk(run_dir) for n in (*dirs, *files))
    for problem in (*problems, *walked):
        if problem:
            raise UserError(f"--resume: {problem}; {TRUST}: resume only from a folder that only you can "
                            f"write (chmod -R go-w, or a copy you own)")


def _pickle_ok(data: bytes) -> bool:
    """A whole pickle (opcodes up to STOP, nothing after): read, never run."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # ValueError (cut short), UnicodeDecodeError, ...
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] + 1 == len(data)


def _zip_ok(data: bytes) -> bool:
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _json_trials_ok(data: bytes) -> bool:
    try:
        state = json.loads(data)
        for trial_json, metadata in state["trial_data"]:
            json.loads(trial_json)
            json.loads(metadata)
        return isinstance(state.get("runner_data"), dict)
    except (ValueError, KeyError, TypeError):
        return False


def _pickled(value) -> bytes | None:
    """The bytes of a value Tune cloudpickled into its JSON state (None for a plain value)."""
    if isinstance(value, dict) and value.get("_type") == "CLOUDPICKLE_FALLBACK":
        return bytes.fromhex(value["value"])
    return None


def _saved_checkpoints(state: dict) -> list[str] | None:
    """``<trial folder>/<checkpoint folder>`` of every checkpoint Tune's state refers to (read from the
    strings of its pickled checkpoint managers, opcode by opcode); None if a part is not whole."""
    out = []
    for trial_json, metadata_json in state["trial_data"]:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        for value in (*trial.values(), *metadata.values()):
            data = _pickled(value)
            if data is not None and not _pickle_ok(data):
                return None
        data = _pickled(metadata.get("checkpoint_manager"))
        if data is not None:
            names = {a for _, a, _ in pickletools.genops(data) if isinstance(a, str) and re.fullmatch(
                r"checkpoint_\d+", a)}
            out += [f"{trial['relative_logdir']}/{n}" for n in sorted(names)]
    return out


def _newest(names: list[str], prefix: str, suffix: str) -> str | None:
    found = [n for n in names if n.startswith(prefix) and n.endswith(suffix)]
    return max(found) if found else None  # time-stamped names: the newest sorts last; Tune reads it


def check_readable(run_dir: str) -> None:
    """Every state file Tune or Lightning reads on --resume is whole; the first that is not is named:
    Tune's newest experiment state (and what it pickled inside), the tuner, the newest searcher state,
    and the checkpoints that state refers to that exist (a checkpoint cut short by a kill and not yet in
    the state is not read by Tune, and not checked; one the state names but Tune deleted since is left
    to Tune)."""
    import pyarrow.fs

    fs, root = _fs(run_dir)
    names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(root))
             if i.type == pyarrow.fs.FileType.File]
    state_name = _newest(names, "experiment_state-", ".json")
    if state_name is None or "tuner.pkl" not in names:
        raise UserError(f"--resume: {run_dir} holds no saved Tune state (experiment_state-*.json and "
                        f"tuner.pkl): the search was stopped before Tune saved it; start it again with "
                        f"--new-name (or delete that run folder)")

    def read(rel: str) -> bytes:
        try:
            with fs.open_input_stream(f"{root}/{rel}") as f:
                return f.read()
        except (FileNotFoundError, OSError):
            raise UserError(f"--resume: {_join(run_dir, rel)} is missing: the run's saved state refers to it, "
                            f"so it cannot be resumed; nothing was changed (restore it from a backup, or start "
                            f"the search again with --new-name)") from None

    def damaged(rel: str, data: bytes, what: str) -> UserError:
        return UserError(f"--resume: {_join(run_dir, rel)} is unreadable ({len(data)} bytes, not {what}): the "
                         f"run's saved state is damaged, so it cannot be resumed; nothing was changed (restore "
                         f"that file from a backup, or start the search again with --new-name)")

    data = read(state_name)
    checkpoints = None
    if _json_trials_ok(data):
        checkpoints = _saved_checkpoints(json.loads(data))
    if checkpoints is None:
        raise damaged(state_name, data, "Tune's experiment state: JSON with trial_data and runner_data")
    for name in ("tuner.pkl", _newest(names, "searcher-state-", ".pkl")):
        if name and not _pickle_ok(data := read(name)):
            raise damaged(name, data, "a whole pickle")
    search_gen = _newest(names, "search_gen_state-", ".json")  # a pickle, despite its name
    if search_gen and not _pickle_ok(data := read(search_gen)):
        raise damaged(search_gen, data, "a whole pickle")
    for folder in checkpoints:
        rel = f"{folder}/{CHECKPOINT_FILE}"
        # a snapshot may name checkpoints that Tune deleted later (search.checkpoints_to_keep rotated them
        # out before a kill): a missing one is Tune's to handle, as it always was; a present one must be whole
        if fs.get_file_info(f"{root}/{rel}").type != pyarrow.fs.FileType.File:
            continue
        if not _zip_ok(data := read(rel)):
            raise damaged(rel, data, "a PyTorch checkpoint (a zip archive)")


def check_study_file(db: Path, study: str) -> None:
    """The run's own Optuna study (``<run folder>/optuna.db``), read like the other state files before
    ``--resume``: present, a whole SQLite database holding study ``study``, and writable (the searcher
    records every trial there). Missing is refused, not rebuilt: the study holds every finished trial's
    values and intermediate values, which the searcher continues from and results.csv does not hold
    (Optuna would otherwise create an empty study and TPE would start over without a word)."""
    import sqlite3

    again = "nothing was changed (restore it from a backup, or start the search again with --new-name)"
    if not db.is_file():
        raise UserError(f"--resume: {db} is missing: the run's Optuna study (every trial's values, which the "
                        f"searcher continues from) is gone, so the run cannot be resumed as it was; {again}")
    size = db.stat().st_size
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            check = con.execute("PRAGMA quick_check").fetchone()
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            found = ("studies" in tables and
                     con.execute("SELECT 1 FROM studies WHERE study_name = ?", (study,)).fetchone() is not None)
        why = None if check and check[0] == "ok" else f"integrity check: {check[0] if check else 'no answer'}"
        why = why or (None if found else f"no study named {study!r} in it")
    except sqlite3.DatabaseError as err:
        why = str(err)
    if why:
        raise UserError(f"--resume: {db} is unreadable ({size} bytes, not the run's Optuna study: {why}): the "
                        f"run's saved state is damaged, so it cannot be resumed; {again}")
    try:  # root passes os.access, and SQLite opens a file it cannot write read-only without a word: a write
        # (rolled back, so the file is unchanged) is what tells
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=10,
                                                isolation_level=None)) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("CREATE TABLE tune_cifar_write_check (x)")
            finally:
                con.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        raise UserError(f"--resume: {db} is not writable ({err}): the search records every trial in the run's "
                        f"Optuna study; nothing was changed (make it and its folder writable, or resume a copy "
                        f"you own)") from None


def check_run(run_dir: str, storage_path: str) -> None:
    """Both checks, before anything of a resumed run is read by Ray."""
    if not is_uri(run_dir):  # a URI's owner and permissions are the storage service's
        check_trusted(Path(run_dir), Path(storage_path).resolve())
    check_readable(run_dir)
