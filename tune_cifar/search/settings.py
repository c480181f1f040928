"""The ``search`` section of a space file: run settings, validated against the searcher and scheduler registries.

No Ray here: the driver, the Ray workers and ``--debug`` all read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import build_section, config_from_dict, default_mode
from ..errors import FOLDER_NAME, UserError, allowed, is_folder_name
from ..metrics import logged_keys
from . import budget
from .keys import get_dotted
from .objectives import PickRule, parse_objectives
from .registry import SCHEDULERS, SEARCHERS


@dataclass
class Resources:
    cpu: float = 1.0  # per worker (per trial with workers: 1)
    gpu: float = 0.0  # per worker; fractions share a GPU between trials (each worker still uses devices=1)
    workers: int = 1  # > 1: each trial trains data-parallel on this many Ray Train workers (search/distributed.py)

    def for_ray(self) -> dict:
        """What ``tune.with_resources`` reserves per trial (a plain dict, no Ray import): 0.5 GPU packs two
        trials on a card. With several workers the trial's own process only starts and watches them (Ray
        Train reserves the workers' resources itself): it holds no CPU, a token of memory (Tune needs one
        resource)."""
        if self.workers > 1:
            return {"cpu": 0, "memory": DRIVER_MEMORY}
        return {"cpu": self.cpu, "gpu": self.gpu}

    def total(self) -> dict:
        """What one trial uses in all (Ray's resource names)."""
        return {"CPU": self.cpu * self.workers, "GPU": self.gpu * self.workers}


DRIVER_MEMORY = 2 ** 20  # bytes: what a multi-worker trial's own process reserves (a token; 0 CPUs)


@dataclass
class Scheduler:
    name: str = "asha"  # a registered scheduler: asha, fifo, pbt (registry.py)
    max_epochs: int = 10  # every trial's trainer.max_epochs; ASHA's max_t
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: float = 3.0  # ASHA: keep 1/reduction_factor of trials at each rung
    perturbation_interval: int = 2  # PBT: epochs between a trial's exploit/explore decisions
    burn_in_period: int = 0  # PBT: epochs before the first one
    quantile_fraction: float = 0.25  # PBT: the bottom fraction copies the top fraction
    resample_probability: float = 0.25  # PBT: a mutated value is drawn anew instead of scaled / shifted
    # PBT: wait for the whole population at each interval (Ray's synchronous PBT); None: when the
    # population is larger than the trials that train at once (pbt.synchronous)
    synch: Optional[bool] = None


@dataclass
class Searcher:
    name: str = "tpe"  # a registered searcher: tpe, random (Optuna samplers, registry.py)
    seed: int = 0
    n_startup_trials: int = 5  # TPE: random trials before the model kicks in; NSGA-II: its population size
    points_to_evaluate: list = field(default_factory=list)  # [{dotted.key: value, ...}, ...] run first


@dataclass
class Budget:
    # the search's compute in trial-epochs (one epoch of one trial, whatever its workers): trials start until
    # it is spent (budget.py); null: num_samples trials
    trial_epochs: Optional[int] = None


@dataclass
class Final:
    """Re-evaluation before export (final.py): the ``top_k`` best configurations trained again from scratch with
    ``seeds`` new training seeds each; the export is the configuration with the best mean. ``top_k: 0``: off.
    With ``budget.trial_epochs`` it gets at most ``budget_share`` of it (budget.final_sizes)."""

    top_k: int = 3
    seeds: int = 2
    budget_share: float = 0.25


@dataclass
class SearchSettings:
    # a metric, or a list of them (several objectives: the Pareto front); default: the base's task.monitor.
    # Once parsed, metric and mode are the first objective's (ASHA stops on it, a trial's best epoch and the
    # checkpoints kept are by it) and ``objectives`` holds them all (objectives.py).
    metric: Any = None
    mode: Any = None  # max or min (a list with several metrics); default: task.monitor_mode for task.monitor,
    # else min for a loss or a model cost (model/*), max otherwise
    pick: Optional[str] = None  # several objectives: which front member is best/ (objectives.PickRule)
    objectives: list = field(default_factory=list)  # set from metric and mode, not a file key
    # trials; with a budget an optional cap (null: none), without one default 10 (budget.resolve)
    num_samples: Optional[int] = None
    budget: Budget = field(default_factory=Budget)
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
    optuna_storage: Optional[str] = None  # the Optuna study's database URL (default: <run folder>/optuna.db)
    optuna_study: Optional[str] = None  # its study name (default: the experiment name)
    final: Final = field(default_factory=Final)  # re-evaluation of the best configurations before export


def parse_settings(where: str, data: dict, base: dict) -> SearchSettings:
    try:
        s = build_section(SearchSettings, data, "search")
    except UserError as err:
        raise UserError(f"{where}: {str(err).removeprefix('config: ')}") from None
    parts = SCHEDULERS.get(s.scheduler.name)  # an unregistered name is refused below
    if parts and parts.default_searcher and "name" not in (data.get("searcher") or {}):
        s.searcher.name = parts.default_searcher  # e.g. PBT draws its population at random (no Optuna)
    logged = set(logged_keys(config_from_dict(base).task, "val"))  # the base config was validated before
    _objectives(where, data, s, base, logged)
    s.experiment = s.experiment or base["run"]["experiment"]
    s.storage_path = s.storage_path or base["run"]["output_dir"]
    checks = [
        ("num_samples", s.num_samples is None or s.num_samples >= 1,
         "an integer >= 1 (with search.budget.trial_epochs: a cap on the trials, or null for none)"),
        ("time_budget_s", s.time_budget_s is None or s.time_budget_s > 0, "null or > 0"),
        ("max_concurrent_trials", s.max_concurrent_trials is None or s.max_concurrent_trials >= 1,
         "null or an integer >= 1"),
        ("resources.cpu", s.resources.cpu > 0, "> 0"),
        ("resources.gpu", 0 <= s.resources.gpu <= 1, "0 to 1 (a fraction shares one GPU; one GPU per trial at most)"),
        ("resources.workers", isinstance(s.resources.workers, int) and s.resources.workers >= 1,
         "an integer >= 1 (the data-parallel workers of each trial)"),
        ("resources.gpu", s.resources.workers == 1 or s.resources.gpu in (0, 1),
         "0 or 1 with search.resources.workers > 1 (each worker of a trial needs a GPU of its own: NCCL)"),
        ("scheduler.name", s.scheduler.name in SCHEDULERS, allowed(SCHEDULERS)),
        ("scheduler.max_epochs", s.scheduler.max_epochs >= 1, "an integer >= 1"),
        ("scheduler.grace_period", 1 <= s.scheduler.grace_period <= s.scheduler.max_epochs,
         f"1 to scheduler.max_epochs ({s.scheduler.max_epochs})"),
        ("scheduler.reduction_factor", s.scheduler.reduction_factor > 1, "> 1"),
        ("searcher.name", s.searcher.name in SEARCHERS, allowed(SEARCHERS)),
        ("searcher.n_startup_trials", s.searcher.n_startup_trials >= 0, "an integer >= 0"),
        ("checkpoints_to_keep", s.checkpoints_to_keep >= 1, "an integer >= 1"),
        ("max_failures", s.max_failures >= -1, "an integer >= 0, or -1 (retry forever)"),
        ("experiment", is_folder_name(s.experiment), FOLDER_NAME),
        ("optuna_storage", s.optuna_storage is None or "://" in s.optuna_storage,
         "null or a database URL such as sqlite:///optuna.db"),
        ("final.top_k", _count(s.final.top_k, 0), "an integer >= 0 (0: no re-evaluation)"),
        ("final.seeds", _count(s.final.seeds, 1), "an integer >= 1 (training seeds per re-evaluated configuration)"),
        ("final.budget_share", 0 < s.final.budget_share < 1,
         "a fraction in (0, 1): at most this share of search.budget.trial_epochs goes to re-evaluation"),
    ]
    for key, ok, what in checks:
        if not ok:
            value = get_dotted(dataclasses.asdict(s), key)
            raise UserError(f"{where}: search.{key}={value!r} is not allowed; allowed: {what}")
    budget.resolve(where, s, population=parts.population)  # num_samples: the default, a population's size
    if len(s.objectives) > 1 and not parts.uses_study:
        raise UserError(f"{where}: search.metric lists {len(s.objectives)} objectives, but search.scheduler.name="
                        f"{s.scheduler.name} searches with its own algorithm, without the Optuna study that searches "
                        f"several objectives; allowed with several objectives: "
                        f"{allowed(n for n, p in SCHEDULERS.items() if p.uses_study)} (or one metric)")
    if parts.check_settings:  # the scheduler's own values (e.g. PBT's); registered: checked above
        parts.check_settings(where, s)
    given = (data.get("final") or {}) if isinstance(data.get("final"), dict) else {}
    off = budget.final_off(s)
    if given.get("top_k") and off:  # asked for in so many words: say it cannot be (the default is quiet)
        raise UserError(f"{where}: search.final.top_k={s.final.top_k} is not allowed here: {off}; "
                        f"allowed: search.final.top_k=0")
    return s


def _count(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _objectives(where: str, data: dict, s: SearchSettings, base: dict, logged: set) -> None:
    """``search.metric`` / ``search.mode`` (one or a list), ``search.pick``: checked, into ``s.objectives``;
    ``s.metric`` / ``s.mode`` become the first objective's."""
    from ..metrics import COST_METRICS

    if "objectives" in data:
        raise UserError(f"{where}: search.objectives is not a file key; allowed: search.metric and search.mode "
                        f"(each a name or a list)")
    task = base["task"]

    def mode_of(metric: str) -> str:  # the base's explicit monitor_mode goes with its own monitor only
        if metric == task["monitor"] and task.get("monitor_mode"):
            return task["monitor_mode"]
        return "min" if metric in COST_METRICS else default_mode(metric)

    metric = s.metric if s.metric not in (None, []) else task["monitor"]
    s.objectives = parse_objectives(where, metric, s.mode, {*logged, *COST_METRICS}, mode_of)
    first = s.objectives[0]
    if first.name in COST_METRICS:
        raise UserError(f"{where}: search.metric starts with {first.name}, a model cost that is the same every "
                        f"epoch; allowed first: a validation metric ({', '.join(sorted(logged))}), which picks each "
                        f"trial's best epoch and is what ASHA stops on")
    s.metric, s.mode = first.name, first.mode
    if s.pick is not None:
        PickRule.parse(s.pick, [*(o.name for o in s.objectives), *COST_METRICS], f"{where}: search.pick")
        if len(s.objectives) == 1:
            raise UserError(f"{where}: search.pick={s.pick!r} chooses among the Pareto front of several objectives, "
                            f"but search.metric is one ({s.metric}); allowed: a list of metrics, or no search.pick")


def names_cost(s: SearchSettings) -> bool:
    """Whether the search uses a model cost (an objective or search.pick names model/*): its trials
    measure them (tune_cifar.cost) and report them with every epoch."""
    from ..metrics import COST_METRICS

    names = {o.name for o in s.objectives}
    if s.pick is not None:
        names |= PickRule.parse(s.pick, [*names, *COST_METRICS]).names
    return bool(names & set(COST_METRICS))


def set_search_key(where: str, data: dict, key: str, value) -> None:
    """A command-line ``search.key=value`` override, set in the raw search section before it is parsed."""
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{where}: override search.{key}: {part} is not a section")
    node[last] = value


def apply_to_base(base: dict, s: SearchSettings) -> None:
    """What every trial shares: the epoch budget, the metric, one device."""
    t = base["trainer"]
    t["max_epochs"] = s.scheduler.max_epochs
    t["val_check_interval"], t["check_val_every_n_epoch"] = 1.0, 1
    t["accelerator"], t["devices"] = ("gpu" if s.resources.gpu > 0 else "cpu"), 1
    base["task"]["monitor"], base["task"]["monitor_mode"] = s.metric, s.mode
    base["run"]["experiment"], base["run"]["output_dir"] = s.experiment, s.storage_path
