"""Population-based training (``search.scheduler.name: pbt``): Ray's ``PopulationBasedTraining``.

Every ``perturbation_interval`` epochs a trial in the bottom ``quantile_fraction`` of the population
restores the latest checkpoint of one in the top fraction (exploit) and continues with that trial's
hyperparameters perturbed (explore: continuous values times 0.8 or 1.2, choices moved to a neighbour,
or with ``resample_probability`` drawn anew), clipped to the space's bounds.

- Ray refuses a search algorithm (OptunaSearch) with PBT: the initial population is drawn by Ray's
  ``BasicVariantGenerator`` from the same distributions (seeded by ``search.searcher.seed``; the
  ``points_to_evaluate`` first), and the distributions are PBT's ``hyperparam_mutations``.
- Only keys whose new value takes effect in a restored trial may be searched (MUTABLE): the model,
  batch size, optimizer or schedule type of a donor's checkpoint cannot change in mid-training.
- The mutated optimizer values survive the restore: training.KeepConfiguredHyperparameters, in every trial.
- Ray logs each exploit to ``pbt_global.txt`` in the run folder (and the lineage of each trial to
  ``pbt_policy_<trial id>.txt``), naming trials by tag; ``RecordingPBT`` writes the same events by
  trial id to ``pbt_exploits.jsonl``, which results.csv (``exploits``, ``cloned_from``) and the plot read.
- Synchronous when the population is larger than the trials that can train at once (``scheduler.synch:
  null``, the default; ``true``/``false`` force it): Ray's asynchronous PBT ranks each trial by its last
  result, whatever epoch that came from, so a trial still waiting for a slot at epoch 2 would be exploited
  for being behind, not for being worse. Synchronous PBT decides once the whole population has reached
  each interval (a trial may report one epoch more before its pause takes effect). ``concurrent_trials`` counts the slots from the Ray cluster's nodes.

registry.py registers these parts as the ``pbt`` scheduler (``SchedulerParts``). ``check_space`` has no Ray
import (``load_space`` calls it); the rest imports Ray (or Lightning) when called.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from ..errors import UserError

# Values a restored trial takes from its (mutated) config rather than from the donor's checkpoint.
MUTABLE = ("optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "task.label_smoothing")
MUTABLE_SECTIONS = ("data.augment.",)  # the datamodule is rebuilt from the config when a trial restarts
ALLOWED_TEXT = ", ".join(MUTABLE) + ", data.augment.*"
GLOBAL_LOG = "pbt_global.txt"  # Ray's log of exploits (by trial tag), in the run folder
EVENTS = "pbt_exploits.jsonl"  # the same events by trial id (RecordingPBT), in the run folder
# Checkpoints per trial at least: a donor's latest one must outlive the restore into the trial that
# copies it (Ray warns below 3; the latest checkpoint is always kept, the one before may be a donor's).
MIN_CHECKPOINTS = 4
LR_METRIC = "optimizer/lr"  # reported by PBT trials: the first param group's rate at the end of each epoch


def mutable(key: str) -> bool:
    return key in MUTABLE or key.startswith(MUTABLE_SECTIONS)


def check_space(space) -> None:
    """Refuse, in one line, a space PBT cannot run: a sampled key a restored trial cannot change,
    or a condition on a sampled key (PBT mutates each value on its own)."""
    sampled = {p.key for p in space.sampled}
    for p in space.sampled:
        if not mutable(p.key):
            raise UserError(f"{space.path}: params.{p.key} cannot change in mid-training, which "
                            f"search.scheduler.name=pbt does (a trial continues from another trial's "
                            f"checkpoint); allowed under pbt: {ALLOWED_TEXT} (set {p.key} in base, or use "
                            f"scheduler asha or fifo)")
        refs = [*p.when, *([p.depends_on] if p.depends_on else [])]
        bad = [r for r in refs if r in sampled]
        if bad:
            raise UserError(f"{space.path}: params.{p.key} depends on the sampled {bad[0]}; under "
                            f"search.scheduler.name=pbt each parameter is mutated on its own; allowed: "
                            f"conditions on fixed values only")


def distributions(space) -> dict:
    """{dotted key: Dist} of the parameters a PBT trial samples (conditions resolved on fixed values)."""
    values, out = dict(space.context), {}
    for p in space.params:
        if p.active(values):
            out[p.key] = p.dist(values)
    return out


def _ray_domain(dist):
    from ray import tune

    k, a = dist.kind, dist.args
    if k == "value":
        return a[0]
    if k == "choice":
        return tune.choice(list(a))
    if k == "uniform":
        return tune.uniform(float(a[0]), float(a[1]))
    if k == "loguniform":
        return tune.loguniform(float(a[0]), float(a[1]))
    if k == "int":
        return tune.randint(a[0], a[1] + 1)  # Ray's upper bound is exclusive
    return tune.choice(list(range(a[0], a[1] + 1, a[2])))  # qint


def _mutation(dist):
    """What PBT perturbs: an ordered list (moved to a neighbour) or a Ray domain (scaled)."""
    if dist.kind == "choice":
        return list(dist.args)
    if dist.kind == "qint":
        a = dist.args
        return list(range(a[0], a[1] + 1, a[2]))
    return _ray_domain(dist)


class ClipToSpace:
    """PBT's custom_explore_fn: a value scaled by 0.8 / 1.2 stays inside its distribution's bounds
    (Ray does not clip; e.g. label smoothing or a probability must stay valid)."""

    def __init__(self, bounds: dict) -> None:
        self.bounds = bounds  # key -> (low, high, is_int)

    def __call__(self, config: dict) -> dict:
        for key, (lo, hi, is_int) in self.bounds.items():
            if key in config:
                v = min(max(config[key], lo), hi)
                config[key] = int(round(v)) if is_int else float(v)
        return config


def param_space(space) -> dict:
    """Tuner's param_space: each sampled key's Ray domain (the initial population)."""
    return {key: _ray_domain(d) for key, d in distributions(space).items() if d.sampled}


def _recording_pbt():
    from ray.tune.schedulers import PopulationBasedTraining

    class RecordingPBT(PopulationBasedTraining):
        """Ray's PBT that also writes each exploit with trial ids to EVENTS: its own pbt_global.txt
        names trials by their experiment tag, which results do not carry."""

        def _log_config_on_step(self, trial_state, new_state, trial, trial_to_clone, new_config):
            super()._log_config_on_step(trial_state, new_state, trial, trial_to_clone, new_config)
            event = {"trial_id": trial.trial_id, "epoch": trial.last_result.get("training_iteration", 0),
                     "donor": trial_to_clone.trial_id,
                     "donor_epoch": trial_to_clone.last_result.get("training_iteration", 0),
                     "config": {k: new_config[k] for k in self._hyperparam_mutations if k in new_config}}
            path = Path(trial.local_experiment_path) / EVENTS  # rewritten whole: never a half line (atomic)
            before = path.read_text() if path.is_file() else ""
            write_text(path, before + json.dumps(event, default=str) + "\n")

    return RecordingPBT


def node_resources() -> list[dict]:
    """Each alive node's resources ({"CPU": .., "GPU": ..}) of the Ray cluster, or of this machine's CPUs
    when Ray is not started (a scheduler built outside a search)."""
    import os

    import ray

    if not ray.is_initialized():
        return [{"CPU": float(os.cpu_count() or 1)}]
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def concurrent_trials(s, nodes: list[dict]) -> int | None:
    """How many trials train at once: per node, the trials its CPUs and GPUs hold at what one trial uses
    in all (``search.resources``, times its workers: they share a node), summed over ``nodes``; at most
    ``max_concurrent_trials``. None: no limit (a trial that asks for nothing)."""
    need = {k: float(v) for k, v in s.resources.total().items() if v > 0}
    slots = None
    if need:  # 1e-9: 2 CPUs hold four trials of 0.5 despite float rounding
        slots = sum(min(int(r.get(k, 0) / v + 1e-9) for k, v in need.items()) for r in nodes)
    if s.max_concurrent_trials:
        slots = s.max_concurrent_trials if slots is None else min(slots, s.max_concurrent_trials)
    return slots


def synchronous(s, nodes: list[dict]) -> bool:
    """``scheduler.synch`` if set; automatically (null) synchronous when the population (``num_samples``)
    is larger than the trials that train at once, and says so in one line."""
    if s.scheduler.synch is not None:
        return bool(s.scheduler.synch)
    slots = concurrent_trials(s, nodes)
    if slots is None or s.num_samples <= slots:
        return False
    print(f"PBT: synchronous, since the population of {s.num_samples} trials is larger than the {slots} "
          f"that train at once: exploits wait until every trial has reached the interval "
          f"(set search.scheduler.synch=false to keep Ray's asynchronous PBT)", flush=True)
    return True


def make_scheduler(space):
    s, dists = space.search, distributions(space)
    sampled = {k: d for k, d in dists.items() if d.sampled}
    bounds = {k: (d.args[0], d.args[1], d.kind == "int") for k, d in sampled.items()
              if d.kind in ("uniform", "loguniform", "int")}
    return _recording_pbt()(
        time_attr="training_iteration", perturbation_interval=s.scheduler.perturbation_interval,
        burn_in_period=s.scheduler.burn_in_period, quantile_fraction=s.scheduler.quantile_fraction,
        resample_probability=s.scheduler.resample_probability, synch=synchronous(s, node_resources()),
        hyperparam_mutations={k: _mutation(d) for k, d in sampled.items()}, custom_explore_fn=ClipToSpace(bounds))


def make_search_alg(space):
    """The initial population: Ray's variant generator (PBT refuses a SearchGenerator such as OptunaSearch)."""
    import numpy as np
    from ray.tune.search import BasicVariantGenerator

    s = space.search
    return BasicVariantGenerator(points_to_evaluate=[dict(p) for p in s.searcher.points_to_evaluate] or None,
                                 random_state=np.random.default_rng(s.searcher.seed))


def search_alg(space) -> tuple:
    """(search algorithm, param_space) of a PBT search, for ``tune.Tuner``: Ray's PBT takes no Optuna searcher."""
    return make_search_alg(space), param_space(space)


def trial_callbacks(cfg) -> list:
    """What a PBT trial adds: it reports its learning rate (after an exploit it shows the mutation took effect)."""
    from ..training import LogLearningRate

    return [LogLearningRate(LR_METRIC)]


def exploit_events(run_dir: str | Path) -> dict[str, list[dict]]:
    """Each trial's exploits, in order: trial id -> [{epoch, donor, donor_epoch, config}] (EVENTS)."""
    path = Path(run_dir) / EVENTS
    out: dict[str, list[dict]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
            out.setdefault(str(event["trial_id"]), []).append(event)
        except (ValueError, TypeError, KeyError):
            continue  # a line cut by a kill
    return out


def describe_exploits(events: list[dict]) -> str:
    """results.csv's ``cloned_from``: ``<donor id>@<donor's epoch>`` per exploit, in order."""
    return "; ".join(f"{e['donor']}@{e['donor_epoch']}" for e in events)


def results_columns(reports, events: list[dict]) -> dict:
    """A PBT trial's extra results.csv columns: epochs it trained itself (``epochs`` counts inherited ones
    too), its exploits and their donors."""
    return {"epochs_trained": len(reports) if reports is not None else 0, "exploits": len(events),
            "cloned_from": describe_exploits(events)}


def check_settings(where: str, s) -> None:
    """The search section's PBT values (only read with scheduler name pbt)."""
    sc = s.scheduler
    checks = [
        ("scheduler.perturbation_interval", sc.perturbation_interval >= 1, "an integer >= 1 (epochs)"),
        ("scheduler.burn_in_period", sc.burn_in_period >= 0, "an integer >= 0 (epochs)"),
        ("scheduler.quantile_fraction", 0 < sc.quantile_fraction <= 0.5, "> 0 and <= 0.5"),
        ("scheduler.resample_probability", 0 <= sc.resample_probability <= 1, "0 to 1"),
        # the whole population exists at once and takes turns on the resources (PBT pauses trials)
        ("max_concurrent_trials", s.max_concurrent_trials is None,
         "null under pbt (resources.cpu / resources.gpu decide how many trials train at once)"),
        ("searcher.name", s.searcher.name == "random",
         "random under pbt (Ray's PBT takes no Optuna searcher: the initial population is drawn at random)"),
        # a PBT that can never exploit is independent random trials that only look like PBT: say so up front
        ("num_samples", s.num_samples >= 2, "an integer >= 2 under pbt (one trial has no better trial to copy; "
                                            "use search.scheduler.name: fifo for one trial)"),
        ("scheduler.perturbation_interval", sc.perturbation_interval < sc.max_epochs,
         f"fewer epochs than scheduler.max_epochs ({sc.max_epochs}): else PBT never perturbs (fifo runs "
         f"independent trials)"),
        ("scheduler.burn_in_period", sc.burn_in_period < sc.max_epochs,
         f"fewer epochs than scheduler.max_epochs ({sc.max_epochs}): else PBT never perturbs"),
    ]
    for key, ok, what in checks:
        if not ok:
            value = getattr(s, key) if "." not in key else getattr(getattr(s, key.split(".")[0]), key.split(".")[1])
            raise UserError(f"{where}: search.{key}={value!r} is not allowed; allowed: {what}")
