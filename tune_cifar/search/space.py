"""Search-space files: reading and validating one (``load_space``) into a :class:`SearchSpace`, Optuna's
define-by-run function and the trials' configs.

No Ray here: the driver, the Ray workers and ``--debug`` all use it. The schema is
documented in ``search_spaces/README.md``. Every error is one line naming the file and key.
The ``params`` grammar (distributions, conditions, parents) is in ``params``; which config keys exist and
which values fit them in ``keys``; the ``search`` section in ``settings``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import Config, compose, config_from_dict, set_dotted, to_plain
from ..errors import UserError, allowed, yaml_error
from ..metrics import check_metrics
from ..packaged import find_space
from .keys import RESERVED, TRAIN_SEED, check_scoring, get_dotted
from .names import REEVAL
from .params import KINDS, Dist, Param, check_models, check_values, parse_dist, parse_param  # noqa: F401 - the grammar, importable from here
from .registry import scheduler_parts
from .settings import SearchSettings, apply_to_base, parse_settings, set_search_key
from .workers import check_batch
from .yamlfile import load_yaml

SECTIONS = ("base", "params", "search")


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file: base config, parameters, search settings."""

    path: str
    base: dict  # resolved plain config every trial starts from (fixed values applied)
    params: list[Param]
    search: SearchSettings
    context: dict = field(default_factory=dict)  # base values of every key a condition reads
    deep_checked: bool = field(default=False, compare=False)  # check_deep has passed (load_space(deep=True))

    @property
    def sampled(self) -> list[Param]:
        return [p for p in self.params if p.sampled]

    def with_base(self, values: dict, checked: bool = False) -> SearchSpace:
        """A copy whose base config has ``values`` ({dotted key: value}) set; this space is not changed. The
        copy is not deep-checked (check_deep), unless ``checked`` says that ``values`` are none of what it
        checks (models, metrics) and this space was."""
        base = copy.deepcopy(self.base)
        for key, v in values.items():
            set_dotted(base, key, copy.deepcopy(v))
        return dataclasses.replace(self, base=base, deep_checked=checked and self.deep_checked)

    def renamed(self, experiment: str) -> SearchSpace:
        """A copy for experiment ``experiment``: search.experiment and the trials' run.experiment."""
        return dataclasses.replace(self.with_base({"run.experiment": experiment}, checked=True),
                                   search=dataclasses.replace(self.search, experiment=experiment))

    def suggest(self, trial) -> dict:
        """Optuna define-by-run: sample the active parameters; returns {dotted key: value}."""
        values, out = dict(self.context), {}
        for p in self.params:
            if p.active(values):
                values[p.key] = out[p.key] = p.dist(values).suggest(trial, p.name(values))
        return out

    def values(self, config: dict) -> dict:
        """{dotted key: value} of a trial's config (drops Optuna's internal names). A re-evaluation run's config
        (final.py) holds a searched trial's values and a training seed of its own: ``run.train_seed`` too."""
        point = config.get(REEVAL)
        if isinstance(point, dict):
            return {**self.values(point["values"]), TRAIN_SEED: point["seed"]}
        return {p.key: config[p.key] for p in self.params if p.key in config}

    def trial_dict(self, values: dict) -> dict:
        """The resolved config dict of a trial."""
        d = copy.deepcopy(self.base)
        for key, v in values.items():
            set_dotted(d, key, copy.deepcopy(v))
        return d

    def trial_config(self, values: dict) -> Config:
        return config_from_dict(self.trial_dict(values))

    def to_optuna(self, point: dict, where: str) -> dict:
        """Check a given (partial) configuration; return it under Optuna's names."""
        known = {p.key for p in self.sampled}
        for key in point:
            if key not in known:
                raise UserError(f"{where}: {key} is not a sampled parameter; allowed: {allowed(known) or 'none'}")
        values, out = dict(self.context), {}
        for p in self.params:
            refs = list(p.when) + ([p.depends_on] if p.depends_on else [])
            missing = [r for r in refs if r not in values]
            if missing:  # depends on a value left to the sampler
                if p.key in point:
                    raise UserError(f"{where}: {p.key} depends on {missing[0]}, which is left to the sampler; "
                                    f"give {missing[0]} too")
                continue
            if not p.active(values):
                if p.key in point:
                    raise UserError(f"{where}: {p.key} is inactive here (it needs {_conds(p)})")
                continue
            d = p.dist(values)
            if p.key in point:
                v = point[p.key]
                if not d.contains(v):
                    raise UserError(f"{where}: {p.key}={v!r} is outside its distribution; allowed: {d.describe()}")
                out[p.name(values)] = d.to_optuna(v)
                values[p.key] = v
            elif d.sampled:
                values.pop(p.key, None)
            else:
                values[p.key] = d.args[0]
        return out

    def check_gpus(self, available: float, where: str = "this machine") -> None:
        gpu = self.search.resources.gpu
        if gpu > 0 and available < gpu:
            raise UserError(f"{self.path}: search.resources.gpu={gpu} but {where} has no GPU"
                            f"{'' if not available else f' free ({available})'}; allowed: 0 (CPU trials)")


def _conds(p: Param) -> str:
    return " and ".join(f"{k} in {list(v)}" for k, v in p.when.items())


def load_space(path: str | Path, overrides: list[str] | tuple[str, ...] = (), deep: bool = True) -> SearchSpace:
    """Read and validate a search-space file; ``overrides`` apply to the base config
    (``key=value``, Hydra syntax) or to the search section (``search.key=value``). ``deep=False`` leaves
    out the checks that import torch (check_deep), for a caller that runs them later."""
    path = find_space(path)  # a path, or the name of a bundled space (tune_cifar/search_spaces)
    where = str(path)
    try:
        raw = load_yaml(Path(path).read_text(), where)
    except FileNotFoundError:
        raise UserError(f"{where}: search-space file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: cannot read the search-space file ({type(err).__name__}); "
                        f"give a YAML file such as search_spaces/resnet.yaml") from None
    except yaml.YAMLError as err:
        raise UserError(yaml_error(err, where)) from None
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping with sections {allowed(SECTIONS)}")
    for k in raw:
        if k not in SECTIONS:
            raise UserError(f"{where}: unknown section {k!r}; allowed: {allowed(SECTIONS)}")
    base_ov, search_raw = raw.get("base") or [], raw.get("search") or {}
    if not isinstance(base_ov, list) or not all(isinstance(o, str) for o in base_ov):
        raise UserError(f"{where}: base must be a list of overrides like 'model=small_cnn', got {base_ov!r}")
    if not isinstance(search_raw, dict):
        raise UserError(f"{where}: search must be a mapping, got {search_raw!r}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict) or not params_raw:
        raise UserError(f"{where}: params must be a non-empty mapping of dotted config keys to distributions")

    hydra_ov = []
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if key.startswith("search.") and sep:
            search_raw = copy.deepcopy(search_raw)
            try:
                parsed = load_yaml(value, f"override {ov}")
            except yaml.YAMLError as err:
                raise UserError(yaml_error(err, f"override {ov}")) from None
            set_search_key(where, search_raw, key.removeprefix("search."), parsed)
            continue
        bare = key.lstrip("+~")
        if bare in params_raw:
            raise UserError(f"override {ov}: {bare} is searched by {where} (params.{bare}); "
                            f"drop the override or the parameter")
        if bare in RESERVED:
            raise UserError(f"override {ov}: {bare} is set by the search; use {RESERVED[bare]}")
        hydra_ov.append(ov)
    base = to_plain(compose([*base_ov, *hydra_ov]))
    with _in_base_config(where):  # the base alone must be valid
        config_from_dict(base)
    search = parse_settings(where, search_raw, base)

    params: dict[str, Param] = {}
    for key, spec in params_raw.items():
        if not isinstance(key, str):
            raise UserError(f"{where}: params keys must be dotted config keys, got {key!r}")
        when = spec.get("when") if isinstance(spec, dict) else None
        for k in when if isinstance(when, dict) else ():
            if k in params_raw and k not in params:  # else read as a base-config key: always its base value
                raise UserError(f"{where}: params.{key}.when.{k}: a condition on a parameter must come after "
                                f"it; move {key} below {k}")
        check_scoring(f"{where}: params.{key}", key, base)
        p = parse_param(f"{where}: params.{key}", key, spec, params)
        check_values(f"{where}: params.{key}", base, key, p, p.depends_on)
        params[key] = p
    for p in params.values():
        parent = params.get(p.depends_on)
        if parent is not None and parent.when and get_dotted(base, p.depends_on) not in p.dists:
            raise UserError(f"{where}: params.{p.key}: when {p.depends_on} is inactive it keeps its base value "
                            f"{get_dotted(base, p.depends_on)!r}, which has no entry here")
    if not isinstance(search.searcher.points_to_evaluate, list):
        raise UserError(f"{where}: search.searcher.points_to_evaluate must be a list of mappings")
    if not any(p.sampled for p in params.values()):
        raise UserError(f"{where}: params has no sampled parameter (only fixed values)")

    apply_to_base(base, search)
    fixed = [p for p in params.values() if not p.sampled and not p.when and not p.depends_on]
    for p in fixed:
        set_dotted(base, p.key, p.dists[None].args[0])
    config_from_dict(base)
    refs = {k for p in params.values() for k in [*p.when, *([p.depends_on] if p.depends_on else [])]}
    context = {k: get_dotted(base, k) for k in refs | set(params)}
    space = SearchSpace(where, base, [p for p in params.values() if p not in fixed], search, context)
    check_space = scheduler_parts(search).check_space
    if check_space:  # keys the scheduler cannot search (e.g. PBT: only those a restored trial can change)
        check_space(space)
    check_batch(space)  # search.resources.workers: every global batch splits evenly over the workers
    for i, point in enumerate(search.searcher.points_to_evaluate):
        if not isinstance(point, dict):
            raise UserError(f"{where}: search.searcher.points_to_evaluate[{i}] must be a mapping of dotted keys")
        space.to_optuna(point, f"{where}: search.searcher.points_to_evaluate[{i}]")
    if deep:
        check_deep(space)
        space = dataclasses.replace(space, deep_checked=True)
    return space


def check_deep(space: SearchSpace) -> None:
    """The checks that import torch, torchmetrics and a model provider's library (seconds of a refusal):
    every model name exists in its provider, every metric builds. load_space runs them last; the command line
    has a search run them after its checks of the run folder (run_search: the experiment's name, lock and, on
    --resume, state), so that a refusal there answers at once."""
    check_models(space.path, space.base, {p.key: p for p in space.params})  # fixed values are in base
    with _in_base_config(space.path):
        check_metrics(config_from_dict(space.base))


@contextlib.contextmanager
def _in_base_config(where: str):
    """A check of the space file's base config: its error names the file and the base config."""
    try:
        yield
    except UserError as err:
        raise UserError(f"{where}: base config: {str(err).removeprefix('config: ')}") from None


def check_measurable(space: SearchSpace, arrays) -> None:
    """Refuse before any trial a search whose metric cannot be measured: no validation images."""
    from ..data.splits import split_indices

    if any(p.key == "data.val_fraction" for p in space.params):
        return  # sampled per trial: the base value is not what the trials use
    cfg = config_from_dict(space.base)
    if not len(split_indices(len(arrays.train_x), len(arrays.test_x), cfg.data, cfg.run.seed)["val"]):
        raise UserError(f"{space.path}: search.metric={space.search.metric} cannot be measured: "
                        f"data.val_fraction={cfg.data.val_fraction} leaves no validation images; allowed: "
                        f"data.val_fraction in (0, 1) that keeps at least one image")
