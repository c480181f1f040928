"""Files shipped inside the package: the Hydra config groups and the bundled search spaces.

They live in ``tune_cifar/conf/`` and ``tune_cifar/search_spaces/`` (package data, so that a wheel
installed anywhere has them); a checkout also has ``config`` and ``search_spaces`` at its root as
links to these folders. Users add config groups of their own with ``--config-dir DIR`` (train and
search): ``DIR/model/my_net.yaml`` becomes ``model=my_net``, next to ours, without copying ours.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"
SPACES_DIR = PACKAGE_DIR / "search_spaces"
SPACE_SUFFIXES = (".yaml", ".yml")


def bundled_spaces() -> list[str]:
    """Names of the bundled search spaces (file stems)."""
    return sorted(p.stem for p in SPACES_DIR.iterdir() if p.suffix in SPACE_SUFFIXES)


def find_space(arg: str | Path) -> Path:
    """A search-space file given by path, or by the name of a bundled one (``cpu_small`` or
    ``cpu_small.yaml``) when no such file (``cpu_small``, ``cpu_small.yaml``, ``.yml``) exists here. A path with a folder in it is left to the
    loader as it is (its 'not found' names it)."""
    path = Path(arg)
    if path.exists() or len(path.parts) != 1:
        return path
    stem = path.name.removesuffix(path.suffix) if path.suffix in SPACE_SUFFIXES else path.name
    for suffix in SPACE_SUFFIXES:  # a file of that name here wins over a bundled one (cpu_small: ./cpu_small.yaml)
        if Path(stem + suffix).is_file():
            return Path(stem + suffix)
    for suffix in SPACE_SUFFIXES:
        if (SPACES_DIR / (stem + suffix)).is_file():
            return SPACES_DIR / (stem + suffix)
    raise UserError(f"{arg}: no such search-space file here and no bundled space of that name; "
                    f"bundled: {', '.join(bundled_spaces())}")


def config_dir_override(folders: str | Path | list) -> str:
    """The Hydra override that adds users' folders of config groups to the search path
    (Hydra's ``hydra.searchpath``: they come after ours, so our group options keep their names)."""
    entries = []
    for folder in [folders] if isinstance(folders, (str, Path)) else folders:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"--config-dir {folder}: not a folder; give a folder of config groups "
                            f"such as DIR/model/my_net.yaml")
        entry = f"file://{path}"
        # Hydra's override grammar: quote paths with spaces, commas, brackets... (not plain ones, so
        # that the override stays readable in search.yaml and in the printed resume command)
        safe = re.fullmatch(r"[\w/.:+@~-]+", entry)
        entries.append(entry if safe else "'" + entry.replace("\\", "\\\\").replace("'", "\\'") + "'")
    return f"hydra.searchpath=[{','.join(entries)}]"


def with_config_dirs(argv: list[str]) -> list[str]:
    """Train's argv: ``--config-dir DIR`` / ``--config-dir=DIR`` (repeatable) become one override."""
    rest, folders, args = [], [], iter(argv)
    for arg in args:
        if arg == "--config-dir":
            folder = next(args, None)
            if folder is None:
                raise UserError("--config-dir needs a folder, e.g. --config-dir my_configs")
            folders.append(folder)
        elif arg.startswith("--config-dir="):
            folders.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return [*rest, config_dir_override(folders)] if folders else rest
