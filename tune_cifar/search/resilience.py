"""Driver-side resilience of a search: experiment names, resume, interruption, clusters, storage.

- ``plan_run``: where a search writes, and what happens when its experiment already exists
  (refuse with a clear message, ``--resume`` the latest run, or ``--new-name``).
- ``check_resume``: a resumed search must have the configuration of the run it continues.
- ``graceful_signals``: SIGTERM is handled like Ctrl-C (Tune saves its state and stops).
- ``interrupted``: whether ``Tuner.fit`` returned because of an interruption.
- ``connect`` / ``check_resources``: join a Ray cluster without hanging; refuse trial resources
  that no node has (Tune would otherwise wait for them forever).
- ``optuna_storage``: the optional persistent Optuna study.
- Storage may be a local folder (NFS included) or a URI (``s3://``, ``gs://``, ``file://``):
  Ray writes trials and checkpoints there; the driver keeps its reports and the export in a local
  folder (``search.local_path``) and copies the reports next to the trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import yaml

from ..errors import UserError

log = logging.getLogger("tune_cifar")

SEARCH_FILE = "search.yaml"  # written by the driver into each run folder before the trials start
STOP_REASON = "stop_reason"  # in the last report of a trial ended by a non-finite loss
CONNECT_TIMEOUT_ENV = "TUNE_CIFAR_CONNECT_TIMEOUT_S"
REPORT_FILES = ("search.yaml", "results.csv", "best.json", "learning_curves.png", "parallel_coordinates.png")


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _fs(path: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if is_uri(path):
        try:
            return pyarrow.fs.FileSystem.from_uri(str(path))
        except Exception as err:  # unknown scheme, missing credentials, ...
            raise UserError(f"search.storage_path={path}: {str(err).strip().splitlines()[0]}") from None
    return pyarrow.fs.LocalFileSystem(), str(Path(path).resolve())


def _children(path: str) -> list[str]:
    """Names of the sub-folders of ``path`` (none if it does not exist)."""
    import pyarrow.fs

    fs, p = _fs(path)
    info = fs.get_file_info(p)
    if info.type != pyarrow.fs.FileType.Directory:
        return []
    sel = pyarrow.fs.FileSelector(p, recursive=False)
    return sorted(i.base_name for i in fs.get_file_info(sel) if i.type == pyarrow.fs.FileType.Directory)


def _exists(path: str) -> bool:
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def _read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def _join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


# --------------------------------------------------------------------------- where a search writes


@dataclass
class RunPaths:
    """The folders of one search run."""

    experiment: str
    name: str  # the run's folder name (a time stamp)
    storage: str  # Ray's storage_path: <storage_path>/<experiment>, an absolute path or a URI
    local: Path  # the driver's folder for this run: reports; for local storage also Ray's run folder
    resume: bool = False

    @property
    def ray_dir(self) -> str:
        """The Ray experiment folder (local path or URI)."""
        return _join(self.storage, self.name)

    @property
    def remote(self) -> bool:
        return is_uri(self.storage)

    @property
    def export_dir(self) -> Path:
        return self.local.parent / "best"

    @property
    def link_root(self) -> Path:
        return self.local.parent.parent


def _stamp(taken: set[str]) -> str:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    name, n = stamp, 1
    while name in taken:
        n += 1
        name = f"{stamp}_{n}"
    return name


def _search_runs(exp: str) -> list[str]:
    """Run folders of an experiment that a search started (they hold search.yaml), oldest first."""
    return [r for r in _children(exp) if not r.startswith("debug_") and r != "best"
            and _exists(_join(exp, r, SEARCH_FILE))]


def _state(exp: str, run: str, local: Path) -> str:
    done = (local / run / "best.json").is_file() or _exists(_join(exp, run, "best.json"))
    return "finished" if done else "unfinished"


def local_root(s) -> Path:
    """The driver's local root: the storage path itself, or ``search.local_path`` for a URI storage."""
    if not is_uri(s.storage_path):
        return Path(s.storage_path).resolve()
    return Path(getattr(s, "local_path", None) or "outputs").resolve()


def plan_run(space, resume: bool = False, new_name: bool = False) -> RunPaths:
    """Decide the experiment name and run folder; refuse to reuse an experiment name silently.

    Without options, an existing experiment (a search run or an export under
    ``<storage_path>/<experiment>``) is an error that says how to go on. ``resume``: continue its
    latest run. ``new_name``: use ``<experiment>_2`` (the first free name) and say so.
    """
    s = space.search
    if resume and new_name:
        raise UserError("--resume continues an existing experiment, --new-name starts a new one: give only one")
    root, local = _storage_root(s), local_root(s)
    exp = _join(root, s.experiment)
    runs = _search_runs(exp)
    if resume:
        if not runs:
            raise UserError(f"--resume: no search to resume for experiment '{s.experiment}' in {exp} "
                            f"(no run folder with {SEARCH_FILE}); run without --resume to start one")
        return RunPaths(s.experiment, runs[-1], exp, local / s.experiment / runs[-1], resume=True)
    taken = runs or (["best"] if (local / s.experiment / "best").exists() else [])
    if taken and not new_name:
        what = (f"{len(runs)} search run{'s' if len(runs) > 1 else ''}, latest {runs[-1]} "
                f"({_state(exp, runs[-1], local / s.experiment)})" if runs else "an export")
        raise UserError(f"experiment '{s.experiment}' already exists in {exp} ({what}); add --resume to continue "
                        f"it, --new-name to run this search as '{free_name(space)}', or choose another name "
                        f"with search.experiment=NAME")
    if taken:
        old = s.experiment
        rename_experiment(space, free_name(space))
        print(f"experiment '{old}' exists: this search is '{s.experiment}'", flush=True)
        exp = _join(root, s.experiment)
    name = _stamp(set(_children(exp)) | set(_children(str(local / s.experiment))))
    return RunPaths(s.experiment, name, exp, local / s.experiment / name)


def _storage_root(s) -> str:
    return s.storage_path.rstrip("/") if is_uri(s.storage_path) else str(Path(s.storage_path).resolve())


def free_name(space) -> str:
    s = space.search
    root, local = _storage_root(s), local_root(s)
    n = 2
    while _exists(_join(root, f"{s.experiment}_{n}")) or (local / f"{s.experiment}_{n}").exists():
        n += 1
    return f"{s.experiment}_{n}"


def rename_experiment(space, name: str) -> None:
    space.search.experiment = name
    space.base["run"]["experiment"] = name


def search_record(space, overrides: Sequence[str]) -> dict:
    """What search.yaml records: the command line and the resolved configuration."""
    return {"space_file": space.path, "overrides": list(overrides),
            "search": dataclasses.asdict(space.search), "base": space.base}


def _normal(obj):
    return yaml.safe_load(yaml.safe_dump(obj, sort_keys=True))


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def check_resume(paths: RunPaths, space, overrides: Sequence[str]) -> None:
    """Refuse to resume with a configuration other than the run's (Ray restores the old one anyway)."""
    stored = yaml.safe_load(_read_text(_join(paths.ray_dir, SEARCH_FILE)))
    now = _normal(search_record(space, overrides))
    diffs = _diff({"search": _normal(stored.get("search")), "base": _normal(stored.get("base"))},
                  {"search": now["search"], "base": now["base"]})
    if diffs:
        raise UserError(f"--resume: the configuration differs from run {paths.ray_dir} "
                        f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); resume with its command: "
                        f"{resume_command(paths)}")


def resume_command(paths: RunPaths) -> str:
    """The command that continues this run, from its search.yaml (a --new-name run names itself there)."""
    stored = yaml.safe_load(_read_text(_join(paths.ray_dir, SEARCH_FILE)))
    return " ".join(["python -m tune_cifar.search", str(stored.get("space_file")), *stored.get("overrides", []),
                     "--resume"])


def upload_reports(paths: RunPaths) -> None:
    """With a URI storage, copy the driver's report files next to the trials."""
    if not paths.remote:
        return
    fs, p = _fs(paths.ray_dir)
    for name in REPORT_FILES:
        src = paths.local / name
        if src.is_file():
            with fs.open_output_stream(f"{p}/{name}") as out:
                out.write(src.read_bytes())


# --------------------------------------------------------------------------- interruption


@contextlib.contextmanager
def graceful_signals() -> Iterator[None]:
    """Handle SIGTERM like Ctrl-C while the search runs: Tune saves the experiment state and stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def trial_statuses(grid) -> dict[str, str]:
    """Tune's status of every trial by id (TERMINATED, ERROR, RUNNING, PENDING, PAUSED)."""
    analysis = getattr(grid, "_experiment_analysis", None)  # ResultGrid has no public status
    return {t.trial_id: t.status for t in getattr(analysis, "trials", None) or []}


def unfinished_trials(grid) -> set[str]:
    return {t for t, st in trial_statuses(grid).items() if st not in ("TERMINATED", "ERROR")}


def interrupted(grid, s, elapsed_s: float) -> bool:
    """True when Tune stopped before the search was done (Ctrl-C, SIGTERM)."""
    if unfinished_trials(grid):
        return True
    if s.time_budget_s and elapsed_s >= s.time_budget_s * 0.98:
        return False  # the time budget ended it
    made = len(trial_statuses(grid)) or len(grid)
    return made < s.num_samples  # stopped before the searcher made every trial


# --------------------------------------------------------------------------- Ray cluster


def connect(address: str, timeout_s: float | None = None) -> None:
    """``ray.init(address=...)`` that fails with a clear message instead of waiting forever."""
    import ray

    if address != "auto" and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"  # as Ray does itself for address=auto
    try:  # a token cached by an earlier ray.init in this process would hide RAY_AUTH_TOKEN's
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass
    timeout_s = float(os.environ.get(CONNECT_TIMEOUT_ENV, timeout_s or 90))
    done = threading.Event()

    def watchdog():
        if not done.wait(timeout_s):
            import sys

            print(f"tune_cifar.search: error: could not connect to the Ray cluster at {address} within "
                  f"{timeout_s:.0f} s; is it running (ray status --address {address}), and does this "
                  f"machine have the cluster's token (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or "
                  f"~/.ray/auth_token, as on the head node)?", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True, name="ray-connect-watchdog").start()
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        why = str(err.__cause__ or "").strip()
        cause = f" ({why.splitlines()[0][:200]})" if why else ""
        raise UserError(f"--address {address}: cannot join the Ray cluster: "
                        f"{str(err).strip().splitlines()[0][:300]}{cause}; is it running (ray status --address "
                        f"{address}), and does this machine have its token (RAY_AUTH_TOKEN or "
                        f"~/.ray/auth_token)?") from None
    finally:
        done.set()


def check_resources(s, where: str) -> None:
    """Every trial must fit on one node: Tune would wait forever for resources nobody has."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = {"CPU": float(s.resources.cpu), "GPU": float(s.resources.gpu)}
    if any(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes):
        return
    for key, value in need.items():
        best = max((r.get(key, 0) for r in nodes), default=0)
        if best < value:
            raise UserError(f"search.resources.{key.lower()}={value:g} per trial but no node of {where} has "
                            f"{value:g} {key}s (the most on one node: {best:g}); allowed: at most {best:g}")
    raise UserError(f"search.resources={{cpu: {need['CPU']:g}, gpu: {need['GPU']:g}}}: no single node of {where} "
                    f"has both; lower one of them")


# --------------------------------------------------------------------------- Optuna study


def optuna_storage(s):
    """The persistent Optuna storage of ``search.optuna_storage`` (None: in memory)."""
    url = getattr(s, "optuna_storage", None)
    if not url:
        return None
    import optuna

    if url.startswith("sqlite:///"):
        db = url.removeprefix("sqlite:///")
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:
        raise UserError(f"search.optuna_storage={url}: {str(err).strip().splitlines()[0][:200]}; allowed: an "
                        f"SQLAlchemy URL such as sqlite:///optuna.db or postgresql://user@host/db") from None


def study_name(s) -> str:
    return getattr(s, "optuna_study", None) or s.experiment


def check_study_direction(storage, s) -> None:
    """An existing persistent study is loaded as it is (Optuna's load_if_exists), direction included:
    refuse one that optimises the other way rather than let TPE steer toward the worst trials."""
    if storage is None:
        return
    import optuna

    try:
        study = optuna.load_study(study_name=study_name(s), storage=storage)
    except KeyError:  # no such study yet: it is created with the search's direction
        return
    want = "maximize" if s.mode == "max" else "minimize"
    have = study.direction.name.lower()
    if have != want:
        raise UserError(f"search.optuna_storage: study '{study_name(s)}' ({len(study.trials)} trials) was created "
                        f"to {have}, but search.mode={s.mode} ({s.metric}) needs {want}; choose another study "
                        f"with search.optuna_study=NAME")


# --------------------------------------------------------------------------- errors


def describe_error(error) -> str:
    """One line for results.csv: the exception's own last line, with the resource named where known."""
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else type(error).__name__
    ray_kinds = {type(e).__name__ for e in _chain(error) if type(e).__module__.startswith("ray")}
    if "OutOfMemoryError" in ray_kinds:
        return ("out of host memory (RAM): Ray's memory monitor killed the trial; lower "
                "search.max_concurrent_trials or data.train_batch_size")[:300]
    if ray_kinds & {"ActorDiedError", "WorkerCrashedError", "ActorUnavailableError", "NodeDiedError"}:
        return f"the trial's process died (killed, out of memory, or its node was lost): {last}"[:300]
    return last[:300]


def _chain(error):
    """The error and its causes; Ray sometimes gives a trial's error as text only (no chain)."""
    seen = []
    while isinstance(error, BaseException) and error not in seen:
        seen.append(error)
        error = getattr(error, "cause", None) or error.__cause__
    return seen
