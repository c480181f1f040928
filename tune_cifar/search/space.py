"""Search-space files: parse and validate the YAML, build Optuna's define-by-run function.

No Ray here: the driver, the Ray workers and ``--debug`` all use it. The schema is
documented in ``search_spaces/README.md``. Every error is one line naming the file and key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ..config import Config, build_section, compose, config_from_dict, set_dotted, to_plain
from ..errors import UserError, allowed
from ..metrics import check_metrics

KINDS = ("choice", "uniform", "loguniform", "int", "qint", "value")
SECTIONS = ("base", "params", "search")
SCHEDULERS = ("asha", "fifo")
SEARCHERS = ("tpe", "random")
# Set by the search itself, never sampled: key -> what to use instead.
RESERVED = {
    "trainer.max_epochs": "search.scheduler.max_epochs",
    "trainer.val_check_interval": "nothing (trials validate once per epoch)",
    "trainer.check_val_every_n_epoch": "nothing (trials validate once per epoch)",
    "trainer.devices": "search.resources.gpu",
    "trainer.accelerator": "search.resources.gpu",
    "task.monitor": "search.metric",
    "task.monitor_mode": "search.mode",
}
# The dataset is read once in the driver and shared by all trials: these cannot vary per trial.
LOADED_ONCE = ("data.name", "data.dataset_path", "data.download", "data.cifar100_labels", "data.image_size",
               "data.labels_csv", "data.label_groups", "data.num_classes", "task.task")


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Dist:
    """One distribution: ``kind`` in KINDS with its arguments (bounds inclusive)."""

    kind: str
    args: tuple

    @property
    def sampled(self) -> bool:
        return self.kind != "value"

    def _indexed(self) -> bool:  # Optuna only takes scalar choices: others are picked by index
        return self.kind == "choice" and not all(_scalar(o) for o in self.args)

    def suggest(self, trial, name: str):
        k, a = self.kind, self.args
        if k == "value":
            return copy.deepcopy(a[0])
        if k == "choice":
            if self._indexed():
                return copy.deepcopy(a[trial.suggest_categorical(name, list(range(len(a))))])
            return trial.suggest_categorical(name, list(a))
        if k in ("uniform", "loguniform"):
            return trial.suggest_float(name, float(a[0]), float(a[1]), log=k == "loguniform")
        return trial.suggest_int(name, a[0], a[1], step=a[2] if k == "qint" else 1)

    def contains(self, v) -> bool:
        k, a = self.kind, self.args
        if k in ("value", "choice"):
            return any(v == o and isinstance(v, bool) == isinstance(o, bool) for o in a)
        if not _number(v) or not a[0] <= v <= a[1]:
            return False
        if k in ("int", "qint"):
            return int(v) == v and (k == "int" or (v - a[0]) % a[2] == 0)
        return True

    def to_optuna(self, v):
        """A value as Optuna stores it (the index for non-scalar choices)."""
        return next(i for i, o in enumerate(self.args) if o == v) if self._indexed() else v

    def examples(self) -> list:
        """Values that must all fit the config (every choice, both bounds)."""
        k, a = self.kind, self.args
        if k in ("value", "choice"):
            return list(a)
        if k in ("uniform", "loguniform"):
            return [float(a[0]), float(a[1])]
        return [a[0], a[1]]

    def describe(self) -> str:
        k, a = self.kind, self.args
        if k == "value":
            return repr(a[0])
        if k == "choice":
            return "one of " + ", ".join(map(str, a))
        if k == "qint":
            return f"an integer in [{a[0]}, {a[1]}] in steps of {a[2]}"
        return f"{'an integer' if k == 'int' else 'a number'} in [{a[0]}, {a[1]}]"


def parse_dist(where: str, kind: str, args) -> Dist:
    if kind == "value":
        return Dist("value", (args,))
    if kind == "choice":
        if not isinstance(args, list):
            raise UserError(f"{where}: choice needs a list of options, got {args!r}")
        if not args:
            raise UserError(f"{where}: empty choice; allowed: a list of at least one option")
        return Dist("choice", tuple(args))
    shape = "[low, high, step]" if kind == "qint" else "[low, high]"
    if not isinstance(args, list) or len(args) != len(shape.split(",")) or not all(map(_number, args)):
        raise UserError(f"{where}: {kind} needs {shape} as numbers, got {args!r}")
    lo, hi = args[0], args[1]
    if kind in ("int", "qint") and not all(isinstance(x, int) for x in args):
        raise UserError(f"{where}: {kind} bounds must be integers, got {args!r}")
    if lo > hi:
        raise UserError(f"{where}: low {lo} > high {hi}; allowed: low <= high")
    if kind == "loguniform" and lo <= 0:
        raise UserError(f"{where}: loguniform bounds must be > 0, got low={lo}; allowed: 0 < low <= high")
    if kind == "qint":
        q = args[2]
        if q < 1 or (hi - lo) % q:
            raise UserError(f"{where}: qint step {q} must be >= 1 and divide high - low = {hi - lo}")
    return Dist(kind, tuple(args))


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """A dotted config key with its distribution, conditions and optional parent."""

    key: str
    dists: dict  # parent value -> Dist; the single key None without depends_on
    when: dict = field(default_factory=dict)  # other key -> tuple of values that activate this one
    depends_on: Optional[str] = None

    @property
    def sampled(self) -> bool:
        return any(d.sampled for d in self.dists.values())

    def active(self, values: dict) -> bool:
        return all(values.get(k) in vs for k, vs in self.when.items())

    def dist(self, values: dict) -> Dist:
        return self.dists[values[self.depends_on] if self.depends_on else None]

    def name(self, values: dict) -> str:
        """Optuna's name: a parent-dependent parameter has one distribution per parent value."""
        return f"{self.key}@{values[self.depends_on]}" if self.depends_on else self.key


def _hint_fields(cls) -> dict:
    return typing.get_type_hints(cls)


def _unwrap(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def check_key(where: str, key: str) -> None:
    """``key`` must name a config value (any sub-key of a free dict such as model_kwargs is fine)."""
    cls, parts = Config, key.split(".")
    for i, part in enumerate(parts):
        hints = _hint_fields(cls)
        if part not in hints:
            section = ".".join(parts[:i]) or "the top level"
            close = difflib.get_close_matches(part, hints, n=1)
            hint = f" (did you mean {'.'.join(parts[:i] + close)}?)" if close else ""
            raise UserError(f"{where}: unknown config key {key}{hint}; allowed under {section}: {allowed(hints)}")
        hint = _unwrap(hints[part])
        if hint is dict:
            return
        if dataclasses.is_dataclass(hint):
            cls = hint
        elif i < len(parts) - 1:
            raise UserError(f"{where}: {'.'.join(parts[: i + 1])} is a value, not a section")


def get_dotted(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_param(where: str, key: str, spec, above: dict) -> Param:
    """One ``params`` entry; ``above`` holds the parameters defined before it."""
    check_key(where, key)
    if key in RESERVED:
        raise UserError(f"{where}: {key} is set by the search, not sampled; use {RESERVED[key]}")
    if any(key == k or key.startswith(k + ".") for k in LOADED_ONCE):
        raise UserError(f"{where}: {key} changes the dataset, which is loaded once for all trials; "
                        f"set it in base (one dataset per search)")
    if isinstance(spec, list):
        raise UserError(f"{where}: a bare list is ambiguous; write {{choice: [...]}} or {{value: [...]}}")
    if not isinstance(spec, dict):
        return Param(key, {None: Dist("value", (spec,))})
    spec = dict(spec)
    when, parent = spec.pop("when", None) or {}, spec.pop("depends_on", None)
    kinds = [k for k in spec if k in KINDS]
    bad = [k for k in spec if k not in KINDS]
    if bad or len(kinds) != 1:
        what = f"unknown distribution {bad[0]!r}" if bad else (
            "no distribution" if not kinds else f"several distributions ({', '.join(kinds)})")
        raise UserError(f"{where}: {what}; allowed: one of {allowed(KINDS)} (plus when, depends_on)")
    kind, args = kinds[0], spec[kinds[0]]
    if not isinstance(when, dict):
        raise UserError(f"{where}.when: expected a mapping {{other.key: value or [values]}}, got {when!r}")
    conds = {}
    for k, v in when.items():
        _check_ref(f"{where}.when.{k}", k, above)
        vals = tuple(v) if isinstance(v, list) else (v,)
        if k in above:
            for val in vals:
                if not any(d.contains(val) for d in above[k].dists.values()):
                    raise UserError(f"{where}.when.{k}: {val!r} is never sampled; allowed: "
                                    f"{'; '.join(d.describe() for d in above[k].dists.values())}")
        conds[k] = vals
    if parent is None:
        return Param(key, {None: parse_dist(f"{where}.{kind}", kind, args)}, conds)
    _check_ref(f"{where}.depends_on", parent, above)
    if parent not in above or any(d.kind not in ("choice", "value") for d in above[parent].dists.values()):
        raise UserError(f"{where}.depends_on: {parent} must be a choice parameter defined above")
    if not isinstance(args, dict) or not args:
        raise UserError(f"{where}.{kind}: with depends_on, map each value of {parent} to its "
                        f"{kind} arguments, e.g. {{{kind}: {{a: ..., b: ...}}}}")
    options = [o for d in above[parent].dists.values() for o in d.args]
    for v in args:
        if v not in options:
            raise UserError(f"{where}.{kind}.{v}: {parent} never takes the value {v!r}; allowed: {allowed(options)}")
    for o in options:
        if o not in args:
            raise UserError(f"{where}.{kind}: no entry for {parent}={o!r}; give one for each of: {allowed(options)}")
    dists = {v: parse_dist(f"{where}.{kind}.{v}", kind, a) for v, a in args.items()}
    return Param(key, dists, conds, parent)


def _check_ref(where: str, key: str, above: dict) -> None:
    check_key(where, key)
    if key in RESERVED and key not in above:
        raise UserError(f"{where}: {key} is set by the search; it cannot be a condition")


# --------------------------------------------------------------------------- search settings


@dataclass
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractions share a GPU between trials (each trial still uses devices=1)

    def for_ray(self) -> dict:
        """What ``tune.with_resources`` reserves per trial: 0.5 GPU packs two trials on a card."""
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass
class Scheduler:
    name: str = "asha"  # asha or fifo
    max_epochs: int = 10  # every trial's trainer.max_epochs; ASHA's max_t
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: float = 3.0  # ASHA: keep 1/reduction_factor of trials at each rung


@dataclass
class Searcher:
    name: str = "tpe"  # tpe or random (Optuna samplers)
    seed: int = 0
    n_startup_trials: int = 5  # TPE: random trials before the model kicks in
    points_to_evaluate: list = field(default_factory=list)  # [{dotted.key: value, ...}, ...] run first


@dataclass
class SearchSettings:
    metric: Optional[str] = None  # default: the base config's task.monitor (accuracy/val)
    mode: Optional[str] = None  # max or min; default: task.monitor_mode
    num_samples: int = 10
    time_budget_s: Optional[float] = None
    max_concurrent_trials: Optional[int] = None  # default: as many as the resources allow
    resources: Resources = field(default_factory=Resources)
    scheduler: Scheduler = field(default_factory=Scheduler)
    searcher: Searcher = field(default_factory=Searcher)
    experiment: Optional[str] = None  # default: run.experiment
    storage_path: Optional[str] = None  # default: run.output_dir
    checkpoints_to_keep: int = 2  # per trial, best by the metric
    max_failures: int = 0  # retries of a failed trial (resumes from its last checkpoint)
    local_path: Optional[str] = None  # with a URI storage_path: the driver's reports and export (default: outputs)
    optuna_storage: Optional[str] = None  # persistent Optuna study, e.g. sqlite:///optuna.db (default: in memory)
    optuna_study: Optional[str] = None  # its study name (default: the experiment name)


def _settings(where: str, data: dict, base: dict) -> SearchSettings:
    try:
        s = build_section(SearchSettings, data, "search")
    except UserError as err:
        raise UserError(f"{where}: {str(err).removeprefix('config: ')}") from None
    s.metric = s.metric or base["task"]["monitor"]
    s.mode = s.mode or base["task"]["monitor_mode"]
    s.experiment = s.experiment or base["run"]["experiment"]
    s.storage_path = s.storage_path or base["run"]["output_dir"]
    logged = {"loss/val"} | {f"{m}/val" for m in base["optimizer"]["metrics"]}
    checks = [
        ("metric", s.metric in logged, allowed(logged)),
        ("mode", s.mode in ("max", "min"), "max, min"),
        ("num_samples", s.num_samples >= 1, "an integer >= 1"),
        ("time_budget_s", s.time_budget_s is None or s.time_budget_s > 0, "null or > 0"),
        ("max_concurrent_trials", s.max_concurrent_trials is None or s.max_concurrent_trials >= 1,
         "null or an integer >= 1"),
        ("resources.cpu", s.resources.cpu > 0, "> 0"),
        ("resources.gpu", 0 <= s.resources.gpu <= 1, "0 to 1 (a fraction shares one GPU; one GPU per trial at most)"),
        ("scheduler.name", s.scheduler.name in SCHEDULERS, allowed(SCHEDULERS)),
        ("scheduler.max_epochs", s.scheduler.max_epochs >= 1, "an integer >= 1"),
        ("scheduler.grace_period", 1 <= s.scheduler.grace_period <= s.scheduler.max_epochs,
         f"1 to scheduler.max_epochs ({s.scheduler.max_epochs})"),
        ("scheduler.reduction_factor", s.scheduler.reduction_factor > 1, "> 1"),
        ("searcher.name", s.searcher.name in SEARCHERS, allowed(SEARCHERS)),
        ("searcher.n_startup_trials", s.searcher.n_startup_trials >= 0, "an integer >= 0"),
        ("checkpoints_to_keep", s.checkpoints_to_keep >= 1, "an integer >= 1"),
        ("max_failures", s.max_failures >= -1, "an integer >= 0, or -1 (retry forever)"),
        ("experiment", bool(re.fullmatch(r"[\w.-]+", s.experiment)), "letters, digits, _ . -"),
        ("optuna_storage", s.optuna_storage is None or "://" in s.optuna_storage,
         "null or a database URL such as sqlite:///optuna.db"),
    ]
    for key, ok, what in checks:
        if not ok:
            value = get_dotted(dataclasses.asdict(s), key)
            raise UserError(f"{where}: search.{key}={value!r} is not allowed; allowed: {what}")
    return s


# --------------------------------------------------------------------------- the space


@dataclass
class SearchSpace:
    """A parsed search-space file: base config, parameters, search settings."""

    path: str
    base: dict  # resolved plain config every trial starts from (fixed values applied)
    params: list[Param]
    search: SearchSettings
    context: dict = field(default_factory=dict)  # base values of every key a condition reads

    @property
    def sampled(self) -> list[Param]:
        return [p for p in self.params if p.sampled]

    def suggest(self, trial) -> dict:
        """Optuna define-by-run: sample the active parameters; returns {dotted key: value}."""
        values, out = dict(self.context), {}
        for p in self.params:
            if p.active(values):
                values[p.key] = out[p.key] = p.dist(values).suggest(trial, p.name(values))
        return out

    def values(self, config: dict) -> dict:
        """{dotted key: value} of a trial's config (drops Optuna's internal names)."""
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


def _check_values(where: str, base: dict, key: str, param: Param, parent: Optional[str]) -> None:
    """Every choice and both bounds must make a valid config (types, allowed values)."""
    for pv, dist in param.dists.items():
        for v in dist.examples():
            d = copy.deepcopy(base)
            if parent is not None:
                set_dotted(d, parent, pv)
            set_dotted(d, key, copy.deepcopy(v))
            try:
                config_from_dict(d)
            except UserError as err:
                msg = str(err).removeprefix("config: ")
                raise UserError(f"{where}: value {v!r} does not fit the config: {msg}") from None


def _check_models(path: str, base: dict, params: dict) -> None:
    """model.model_name values must exist in their provider (timm, torchvision, builtin)."""
    from ..models import check_model_name, list_models

    name_p, prov_p = params.get("model.model_name"), params.get("model.provider_name")
    if name_p is None and prov_p is None:
        try:
            check_model_name(base["model"]["provider_name"], base["model"]["model_name"])
        except UserError as err:
            raise UserError(f"{path}: base config: {str(err).removeprefix('config: ')}") from None
        return

    providers = [o for d in prov_p.dists.values() for o in d.examples()] if prov_p else [base["model"]["provider_name"]]
    for provider in providers:
        if name_p is None:
            names = [base["model"]["model_name"]]
        elif name_p.depends_on == "model.provider_name":
            names = name_p.dists[provider].examples()
        else:
            names = [o for d in name_p.dists.values() for o in d.examples()]
        for name in names:
            try:
                check_model_name(provider, str(name))  # what create_model accepts (timm tags included)
            except UserError:
                close = difflib.get_close_matches(str(name), list_models(provider), n=3)
                raise UserError(f"{path}: params.model.model_name: {name!r} is not a {provider} model"
                                f"{'; close: ' + ', '.join(close) if close else ''}") from None


def load_space(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SearchSpace:
    """Read and validate a search-space file; ``overrides`` apply to the base config
    (``key=value``, Hydra syntax) or to the search section (``search.key=value``)."""
    where = str(path)
    try:
        raw = yaml.load(Path(path).read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise UserError(f"{where}: search-space file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: cannot read the search-space file ({type(err).__name__}); "
                        f"give a YAML file such as search_spaces/resnet.yaml") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where}: not valid YAML: {' '.join(str(err).split())}") from None
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
                parsed = yaml.load(value, Loader=_Loader)
            except yaml.YAMLError as err:
                raise UserError(f"override {ov}: not a valid YAML value: {' '.join(str(err).split())}") from None
            _set_search(where, search_raw, key.removeprefix("search."), parsed)
            continue
        bare = key.lstrip("+~")
        if bare in params_raw:
            raise UserError(f"override {ov}: {bare} is searched by {where} (params.{bare}); "
                            f"drop the override or the parameter")
        if bare in RESERVED:
            raise UserError(f"override {ov}: {bare} is set by the search; use {RESERVED[bare]}")
        hydra_ov.append(ov)
    base = to_plain(compose([*base_ov, *hydra_ov]))
    try:
        check_metrics(config_from_dict(base))  # the base alone must be valid, its metrics too
    except UserError as err:
        raise UserError(f"{where}: base config: {str(err).removeprefix('config: ')}") from None
    search = _settings(where, search_raw, base)

    params: dict[str, Param] = {}
    for key, spec in params_raw.items():
        if not isinstance(key, str):
            raise UserError(f"{where}: params keys must be dotted config keys, got {key!r}")
        when = spec.get("when") if isinstance(spec, dict) else None
        for k in when if isinstance(when, dict) else ():
            if k in params_raw and k not in params:  # else read as a base-config key: always its base value
                raise UserError(f"{where}: params.{key}.when.{k}: a condition on a parameter must come after "
                                f"it; move {key} below {k}")
        p = parse_param(f"{where}: params.{key}", key, spec, params)
        _check_values(f"{where}: params.{key}", base, key, p, p.depends_on)
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
    _check_models(where, base, params)

    _apply_search(base, search)
    fixed = [p for p in params.values() if not p.sampled and not p.when and not p.depends_on]
    for p in fixed:
        set_dotted(base, p.key, p.dists[None].args[0])
    config_from_dict(base)
    refs = {k for p in params.values() for k in [*p.when, *([p.depends_on] if p.depends_on else [])]}
    context = {k: get_dotted(base, k) for k in refs | set(params)}
    space = SearchSpace(where, base, [p for p in params.values() if p not in fixed], search, context)
    for i, point in enumerate(search.searcher.points_to_evaluate):
        if not isinstance(point, dict):
            raise UserError(f"{where}: search.searcher.points_to_evaluate[{i}] must be a mapping of dotted keys")
        space.to_optuna(point, f"{where}: search.searcher.points_to_evaluate[{i}]")
    return space


def _set_search(where: str, data: dict, key: str, value) -> None:
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{where}: override search.{key}: {part} is not a section")
    node[last] = value


def _apply_search(base: dict, s: SearchSettings) -> None:
    """What every trial shares: the epoch budget, the metric, one device."""
    t = base["trainer"]
    t["max_epochs"] = s.scheduler.max_epochs
    t["val_check_interval"], t["check_val_every_n_epoch"] = 1.0, 1
    t["accelerator"], t["devices"] = ("gpu" if s.resources.gpu > 0 else "cpu"), 1
    base["task"]["monitor"], base["task"]["monitor_mode"] = s.metric, s.mode
    base["run"]["experiment"], base["run"]["output_dir"] = s.experiment, s.storage_path


# --------------------------------------------------------------------------- Optuna


def make_sampler(s: SearchSettings):
    """The Optuna sampler named by ``search.searcher`` (seeded)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if s.searcher.name == "random":
        return optuna.samplers.RandomSampler(seed=s.searcher.seed)
    with warnings.catch_warnings():  # multivariate/group are "experimental" in some Optuna versions
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=s.searcher.seed, n_startup_trials=s.searcher.n_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


def sample(space: SearchSpace, given: Optional[dict] = None, seed: int = 0) -> dict:
    """One configuration without Ray: ``given`` values (checked) plus random draws for the rest."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    if given:
        study.enqueue_trial(space.to_optuna(given, "--params"))
    return space.suggest(study.ask())
