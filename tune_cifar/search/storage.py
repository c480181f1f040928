"""Where a search writes: local folders or URIs, experiment names, run folders, search.yaml, resume checks.

- ``plan_run``: where a search writes, and what happens when its experiment already exists
  (refuse with a clear message, ``--resume`` the latest run, or ``--new-name``).
- ``check_resume``: a resumed search must have the configuration of the run it continues.
- Storage may be a local folder (NFS included) or a URI (``s3://``, ``gs://``, ``file://``):
  Ray writes trials and checkpoints there; the driver keeps its reports and the export in a local
  folder (``search.local_path``) and copies the reports next to the trials.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import yaml

from ..errors import UserError
from . import claim

if TYPE_CHECKING:
    from .space import SearchSpace

SEARCH_FILE = "search.yaml"  # written by the driver into each run folder before the trials start
REPORT_FILES = ("search.yaml", "results.csv", "best.json", "learning_curves.png", "parallel_coordinates.png",
                "param_importances.png", "optuna.db", "reeval.json", "reeval.csv")


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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RunPlan:
    """One search run, decided once from the command line and the space before anything starts; passed
    down to the Tuner, the trials, search.yaml and the export instead of editing the space in place."""

    space: SearchSpace  # what the trials get, named for this run (a --new-name run has its own name)
    paths: RunPaths
    overrides: tuple[str, ...] = ()  # the command line's; a --new-name run adds search.experiment=<its name>

    @property
    def resume(self) -> bool:
        return self.paths.resume


def plan_run(space, overrides: Sequence[str] = (), resume: bool = False, new_name: bool = False) -> RunPlan:
    """Decide the experiment name and run folder; refuse to reuse an experiment name silently.

    Without options, an existing experiment (a search run or an export under
    ``<storage_path>/<experiment>``) is an error that says how to go on. ``resume``: continue its
    latest run. ``new_name``: use ``<experiment>_2`` (the first free name) and say so. ``space`` is not
    changed: the plan holds a renamed copy.
    """
    s, overrides = space.search, tuple(overrides)
    if resume and new_name:
        raise UserError("--resume continues an existing experiment, --new-name starts a new one: give only one")
    root, local = _storage_root(s), local_root(s)
    if not claim.claim(local, s.experiment):  # another search of this experiment is running (claim.py)
        if not new_name:
            who = claim.holder(local, s.experiment)
            raise UserError(f"experiment '{s.experiment}' in {local} is in use by another search"
                            f"{f' ({who})' if who else ''}; wait for it to end, add --new-name to run this search "
                            f"as '{free_name(space)}', or choose another name with search.experiment=NAME")
        space, overrides = _renamed(space, overrides)
        s = space.search
    exp = _join(root, s.experiment)
    runs = _search_runs(exp)
    if resume:
        if not runs:
            raise UserError(f"--resume: no search to resume for experiment '{s.experiment}' in {exp} "
                            f"(no run folder with {SEARCH_FILE}); run without --resume to start one")
        return RunPlan(space, RunPaths(s.experiment, runs[-1], exp, local / s.experiment / runs[-1], resume=True),
                       overrides)
    taken = runs or (["best"] if (local / s.experiment / "best").exists() else [])
    if taken and not new_name:
        what = (f"{len(runs)} search run{'s' if len(runs) > 1 else ''}, latest {runs[-1]} "
                f"({_state(exp, runs[-1], local / s.experiment)})" if runs else "an export")
        raise UserError(f"experiment '{s.experiment}' already exists in {exp} ({what}); add --resume to continue "
                        f"it, --new-name to run this search as '{free_name(space)}', or choose another name "
                        f"with search.experiment=NAME")
    if taken:
        space, overrides = _renamed(space, overrides)
        s = space.search
        exp = _join(root, s.experiment)
    name = _stamp(set(_children(exp)) | set(_children(str(local / s.experiment))))
    return RunPlan(space, RunPaths(s.experiment, name, exp, local / s.experiment / name), overrides)


def _renamed(space, overrides: tuple[str, ...]):
    """--new-name: the space and command line as ``<experiment>_N``, the first free name this search could
    claim (a name another running search holds is not free, even before it has a folder)."""
    old, n = space.search.experiment, 2
    while True:
        renamed = space.renamed(free_name(space, n))
        n = int(renamed.search.experiment.rsplit("_", 1)[1]) + 1
        if claim.claim(local_root(renamed.search), renamed.search.experiment):
            claim.release(local_root(space.search), old)  # held when the old name exists but is not in use
            break
    print(f"experiment '{old}' exists or is in use: this search is '{renamed.search.experiment}'", flush=True)
    # search.yaml's command (for --resume) names the new experiment
    return renamed, (*overrides, f"search.experiment={renamed.search.experiment}")


def _storage_root(s) -> str:
    return s.storage_path.rstrip("/") if is_uri(s.storage_path) else str(Path(s.storage_path).resolve())


def free_name(space, n: int = 2) -> str:
    """The first ``<experiment>_N`` (N >= n) with no folder yet."""
    s = space.search
    root, local = _storage_root(s), local_root(s)
    while _exists(_join(root, f"{s.experiment}_{n}")) or (local / f"{s.experiment}_{n}").exists():
        n += 1
    return f"{s.experiment}_{n}"


def search_record(space, overrides: Sequence[str]) -> dict:
    """What search.yaml records: the command line and the resolved configuration."""
    return {"space_file": space.path, "overrides": list(overrides),
            "search": dataclasses.asdict(space.search), "base": space.base}


def _normal(obj):
    return yaml.safe_load(yaml.safe_dump(obj, sort_keys=True))


# Settings whose default changed between releases: (key, the old release's recorded default, the new
# default). A run recorded with the old default and resumed by the new release is not a user's change.
CHANGED_DEFAULTS = {("search.scheduler.synch", False, None)}  # PBT synchrony became automatic (None)


def _diff(a, b, prefix: str = "") -> list[str]:
    """Differences between the stored record ``a`` and this command's ``b``. A key the stored record
    lacks is a setting added by a newer release (the run used its behaviour before it had a name)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k in a:
                out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    key = prefix.rstrip(".")
    changed_default = not isinstance(b, (dict, list)) and (key, a, b) in CHANGED_DEFAULTS
    return [] if a == b or changed_default else [f"{key}: {a!r} -> {b!r}"]


def check_resume(plan: RunPlan) -> None:
    """Refuse to resume with a configuration other than the run's (Ray restores the old one anyway)."""
    paths, space, overrides = plan.paths, plan.space, plan.overrides
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
    # quoted as a shell reads it: an override such as search.pick=... <= 2 must not become a redirection
    return "python -m tune_cifar.search " + shlex.join([str(stored.get("space_file")), *stored.get("overrides", []),
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
