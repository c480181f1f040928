"""The ``params`` section of a search-space file: distributions (``Dist``), parameters with their conditions
and parents (``Param``), their parsing, and the check that every value they can take makes a valid config
(``check_values``, ``check_models``). Every error is one line naming the file and key."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Optional

from ..config import config_from_dict, set_dotted
from ..data.sources import source_keys
from ..errors import UserError, allowed, nonfinite
from .keys import LOADED_ONCE, RESERVED, TRAIN_SEED, check_key

KINDS = ("choice", "uniform", "loguniform", "int", "qint", "value")


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
    bad = nonfinite(args, "")  # bounds, choices and values: NaN or inf is never meant (.nan, .inf in YAML)
    if bad:
        raise UserError(f"{where}{bad[0]}={bad[1]!r} is not allowed; allowed: a finite number")
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


def parse_param(where: str, key: str, spec, above: dict) -> Param:
    """One ``params`` entry; ``above`` holds the parameters defined before it."""
    check_key(where, key)
    if key in RESERVED:
        raise UserError(f"{where}: {key} is set by the search, not sampled; use {RESERVED[key]}")
    if key == TRAIN_SEED:
        raise UserError(f"{where}: {key} is not a hyperparameter (a configuration is judged over several training "
                        f"seeds); allowed: one value in base, and search.final.seeds for the seeds re-evaluation "
                        f"trains the best configurations with")
    if any(key == k or key.startswith(k + ".") for k in (*LOADED_ONCE, *source_keys())):
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


# --------------------------------------------------------------------------- values against the config


def check_values(where: str, base: dict, key: str, param: Param, parent: Optional[str]) -> None:
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


def check_models(path: str, base: dict, params: dict) -> None:
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
