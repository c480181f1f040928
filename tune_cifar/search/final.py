"""Re-evaluation before export (``search.final: {top_k: 3, seeds: 2}``; ``top_k: 0`` turns it off).

The best reading of a search is a winner's-curse pick: the maximum over many (trial, epoch) readings of a
noisy validation metric. So, after the search's trials, the ``top_k`` best configurations (results.csv's
order: completed and early-stopped trials alike, by their best value of ``search.metric``) are trained again
from scratch, each with ``seeds`` new training seeds (``run.train_seed``: weight init, shuffle order,
augmentation draws; ``run.seed``, hence the validation split, unchanged).

- **Where.** A second Tune experiment in the run folder, ``<run>/reeval/`` (one ``trial_<id>/`` per run),
  FIFO (every run trains all ``scheduler.max_epochs``), a grid over (configuration, seed) and no searcher:
  the Optuna study never hears of these runs (TPE would take them for new trials of known points). Same
  trainable, resources, concurrency, checkpoints, retries and Ctrl-C handling as the search's trials.
  ``reeval.csv`` in the run folder lists the runs; results.csv gains ``reeval_mean``, ``reeval_se``,
  ``reeval_n`` on the re-evaluated configurations' rows.
- **Resume.** ``reeval.json`` (the chosen configurations and seeds) is written before the first run starts:
  a ``--resume`` that finds it continues the re-evaluation and does not run the search's trials again.
- **Score and export.** A configuration's score is the mean of its runs' best validation values, the
  original trial included (n = seeds + 1 when every run completes; a run that failed or did not finish is
  not counted), with its standard error (sample standard deviation / sqrt(n)). The export is the
  configuration with the best mean (of equal means the one ranked first by the search); its weights are
  those of its run that scored best on validation (the original trial or a re-evaluation run; of equal
  values the original), at that run's best epoch. Its metrics.json gains ``"reeval": {"mean", "se", "n", ...}``.
- **Off** for several objectives (a Pareto front, not one best configuration) and for schedulers whose trials
  change hyperparameters in mid-training (PBT: ``SchedulerParts.reevaluates``): budget.final_off.
- **Budget.** Without a trial-epoch budget the re-evaluation adds ``top_k × seeds`` trials of
  ``max_epochs`` epochs (the summary says how many). With one (``search.budget.trial_epochs``) it is held
  back out of it: at most ``final.budget_share`` (25 %), ``budget.final_sizes``; the trials spend the rest.

No Ray at import: the driver imports it; Ray is imported where a Tuner is made.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..atomic import write_text
from ..errors import UserError
from ..timeline import mark
from . import storage
from .stages import timeline_callbacks
from .names import REEVAL
from .budget import final_sizes

FOLDER = "reeval"  # the re-evaluation's Tune experiment, inside the run folder
PLAN = "reeval.json"  # the chosen configurations and seeds, in the run folder
CSV = "reeval.csv"  # one row per re-evaluation run, in the run folder
MEAN, SE, N = "reeval_mean", "reeval_se", "reeval_n"  # results.csv's columns


# --------------------------------------------------------------------------- what is re-evaluated


def train_seeds(space, n: int) -> list[int]:
    """The training seeds of the re-evaluation runs: the search's own training seed (``run.train_seed``, else
    ``run.seed``) + 1, ..., + n (the same for every configuration: they are compared on the same draws)."""
    run = space.base["run"]
    first = run["seed"] if run.get("train_seed") is None else run["train_seed"]
    return [first + j for j in range(1, n + 1)]


def make_plan(space, grid, table) -> dict:
    """What to re-evaluate: the first ``top_k`` exportable rows of results.csv (``table``), with the sampled
    values of their trials (from ``grid``) and the training seeds."""
    from .results import EXPORTED, trial_id_of

    s = space.search
    k, n = final_sizes(s)
    configs = {trial_id_of(r): r.config for r in grid}
    rows = table[table["status"].isin(EXPORTED) & table[s.metric].notna()].head(k)
    return {"metric": s.metric, "mode": s.mode, "train_seeds": train_seeds(space, n),
            "configurations": [{"trial_id": str(r["trial_id"]), "value": float(r[s.metric]),
                                "values": space.values(configs[r["trial_id"]] or {})}
                               for r in rows.to_dict("records")]}


def points(plan: dict) -> list[dict]:
    """The runs, one per (configuration, seed), as each run's config under ``REEVAL`` (``SearchSpace.values``
    reads it): every configuration's first seed before any second one."""
    return [{"of": c["trial_id"], "seed": seed, "values": c["values"]}
            for seed in plan["train_seeds"] for c in plan["configurations"]]


def read_plan(paths: storage.RunPaths) -> dict | None:
    """The run's reeval.json, or None when the re-evaluation has not started."""
    where = storage._join(paths.ray_dir, PLAN)
    if not storage._exists(where):
        return None
    try:
        plan = json.loads(storage._read_text(where))
        if not isinstance(plan, dict) or not all(isinstance(plan.get(k), list) for k in ("configurations",
                                                                                          "train_seeds")):
            raise ValueError("no configurations or train_seeds")
    except ValueError as err:
        raise UserError(f"--resume: {where} is unreadable ({err}): the re-evaluation's plan is damaged; nothing was "
                        f"changed (restore it from a backup, or start the search again with --new-name)") from None
    return plan


def _write_plan(paths: storage.RunPaths, plan: dict) -> None:
    paths.local.mkdir(parents=True, exist_ok=True)
    write_text(paths.local / PLAN, json.dumps(plan, indent=2))
    storage.upload_reports(paths)  # a URI storage: next to the trials, where --resume looks


# --------------------------------------------------------------------------- the second Tune phase (Ray)


@dataclass
class Phase:
    """A re-evaluation that ran (or was interrupted): its plan, Tune's ResultGrid and trial statuses.
    results.finish uses it through its methods (results.py does not import this module: this one imports it)."""

    plan: dict
    grid: Any
    statuses: dict
    interrupted: bool = False
    runs: Any = None  # reeval.csv's table (score_table)
    found: list = field(default_factory=list)  # each configuration's runs as (run id, value) (score_table)

    def score_table(self, space, table, run_dir):
        """results.csv's ``table`` with each re-evaluated configuration's mean, standard error and n; writes
        reeval.csv (one row per run) into ``run_dir``."""
        self.runs = runs_table(space, self)
        self.found = groups(space, self, table, self.runs)
        write_text(run_dir / CSV, self.runs.to_csv(index=False))
        return with_scores(table, self.found)

    def summary(self, space, table, run_dir) -> str:
        return summary_text(space, self, table, self.runs, run_dir)

    def report(self, run_dir) -> dict:
        """What the search's summary dict (and best.json) says of the re-evaluation."""
        return {"runs": len(self.runs), "trial_epochs": int(self.runs["epochs"].sum()) if len(self.runs) else 0,
                "train_seeds": self.plan["train_seeds"], "csv": str(run_dir / CSV),
                "configurations": {c: dict(zip(("mean", "se", "n"), score([v for _, v in r]))) for c, r in self.found}}

    def progress(self) -> str:
        """How far it got, for the line of an interrupted search."""
        return (f"during the re-evaluation ({len(self.runs)} of {len(self.plan['configurations'])} × "
                f"{len(self.plan['train_seeds'])} runs started)")

    def export_choice(self, space, grid, table):
        return export_choice(space, grid, self, table, self.runs, self.found)


def _has_state(folder: str) -> bool:
    """Whether Tune saved the re-evaluation's state (it can be restored)."""
    import pyarrow.fs

    fs, root = storage._fs(folder)
    try:
        names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(root))]
    except (FileNotFoundError, OSError):
        return False
    return "tuner.pkl" in names and any(n.startswith("experiment_state-") for n in names)


def run(plan_run: storage.RunPlan, grid, statuses: dict, trainable, concurrent: int | None,
        trial_dirname: Callable) -> Phase | None:
    """Re-evaluate the search's best configurations (or continue doing so: ``--resume``); None when there is
    nothing to re-evaluate (no trial to export)."""
    from ray import tune

    from . import interrupt, trust
    from .results import results_table, trial_statuses, unfinished

    space, paths = plan_run.space, plan_run.paths
    s = space.search
    plan = read_plan(paths)
    if plan is None:
        plan = make_plan(space, grid, results_table(space, grid, statuses))
        if not plan["configurations"] or not plan["train_seeds"]:
            return None
        _write_plan(paths, plan)
    folder = storage._join(paths.ray_dir, FOLDER)
    runs = len(plan["configurations"]) * len(plan["train_seeds"])
    if _has_state(folder):
        trust.check_readable(folder)  # whole, before Ray unpickles it (the run folder's trust is checked already)
        print(f"resuming the re-evaluation {folder}", flush=True)
        tuner = tune.Tuner.restore(folder, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        print(f"re-evaluating the top {len(plan['configurations'])} configurations by {s.metric} with "
              f"{_seeds(plan['train_seeds'])} each: {runs} more trials of {s.scheduler.max_epochs} epochs in {folder}",
              flush=True)
        from ray.tune.schedulers import FIFOScheduler

        tuner = tune.Tuner(
            trainable, param_space={REEVAL: tune.grid_search(points(plan))},
            tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, scheduler=FIFOScheduler(), num_samples=1,
                                        max_concurrent_trials=concurrent, trial_dirname_creator=trial_dirname,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=FOLDER, storage_path=paths.ray_dir,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=s.checkpoints_to_keep,
                                                        checkpoint_score_attribute=s.metric,
                                                        checkpoint_score_order=s.mode),
                failure_config=tune.FailureConfig(max_failures=s.max_failures), verbose=1,
                callbacks=timeline_callbacks()))
    with interrupt.while_tuning() as received:  # as the search's own trials: state saved, --resume continues
        mark("fit_start", experiment=FOLDER)  # TUNE_CIFAR_TIMELINE (bench/search_overhead.py)
        again = tuner.fit()
        mark("fit_end", experiment=FOLDER)
    done = trial_statuses(again)
    return Phase(plan, again, done, interrupted=bool(received) or bool(unfinished(done)) or len(done) < runs)


# --------------------------------------------------------------------------- scores and the pick


def score(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error, n) of a configuration's run values; the error is NaN for one run."""
    n = len(values)
    if not n:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n), n


def choose(groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], mode: str) -> tuple[int, int]:
    """The export among re-evaluated configurations: ``groups`` holds, in the search's ranking, each
    configuration's runs as (run id, best value), its original trial first. Returns (configuration index,
    run index): the configuration with the best mean (of equal means the earlier), and its run with the best
    value (of equal values the earlier: the original trial)."""
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    best_g = None
    for i, (_, runs) in enumerate(groups):
        mean = score([v for _, v in runs])[0]
        if math.isfinite(mean) and (best_g is None or better(mean, best_g[1])):
            best_g = (i, mean)
    if best_g is None:
        raise ValueError("no configuration has a value")
    runs = groups[best_g[0]][1]
    best_r = 0
    for j, (_, v) in enumerate(runs):
        if better(v, runs[best_r][1]):
            best_r = j
    return best_g[0], best_r


def runs_table(space, phase: Phase):
    """reeval.csv: one row per run (results.csv's columns, plus the configuration's trial and the training
    seed), by configuration in the search's ranking, then seed."""
    from .results import results_table, trial_id_of

    table = results_table(space, phase.grid, phase.statuses)
    point = {trial_id_of(r): (r.config or {}).get(REEVAL) or {} for r in phase.grid}
    order = {c["trial_id"]: i for i, c in enumerate(phase.plan["configurations"])}
    table.insert(0, "configuration", [point[t].get("of") for t in table["trial_id"]])
    table.insert(1, "train_seed", [point[t].get("seed") for t in table["trial_id"]])
    table["_order"] = table["configuration"].map(order)
    return table.sort_values(["_order", "train_seed"], kind="stable").drop(columns="_order").reset_index(drop=True)


def groups(space, phase: Phase, table, runs) -> list[tuple[str, list[tuple[str, float]]]]:
    """Each re-evaluated configuration's runs as (run id, best value): the original trial (results.csv's
    ``table``), then its completed re-evaluation runs (``runs``: reeval.csv) by seed."""
    metric = space.search.metric
    original = dict(zip(table["trial_id"].astype(str), table[metric]))
    out = []
    for c in phase.plan["configurations"]:
        done = runs[(runs["configuration"] == c["trial_id"]) & (runs["status"] == "completed") & runs[metric].notna()]
        out.append((c["trial_id"], [(c["trial_id"], float(original.get(c["trial_id"], c["value"]))),
                                    *zip(done["trial_id"].astype(str), done[metric].astype(float))]))
    return out


def with_scores(table, found: list[tuple[str, list[tuple[str, float]]]]):
    """results.csv with ``reeval_mean``, ``reeval_se``, ``reeval_n`` (NaN / empty on rows not re-evaluated)."""
    scores = {c: score([v for _, v in runs]) for c, runs in found}
    table = table.copy()
    ids = table["trial_id"].astype(str)
    table[MEAN] = [scores[t][0] if t in scores else math.nan for t in ids]
    table[SE] = [scores[t][1] if t in scores else math.nan for t in ids]
    table[N] = [scores[t][2] if t in scores else None for t in ids]
    table[N] = table[N].astype("Int64")
    if "error" in table:  # the error text stays the last column
        table = table[[c for c in table.columns if c != "error"] + ["error"]]
    return table


def _seeds(seeds: list[int]) -> str:
    """``2 new training seeds (43, 44)``, ``1 new training seed (43)``."""
    return f"{len(seeds)} new training seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def summary_text(space, phase: Phase, table, runs, run_dir) -> str:
    """The printed lines on the re-evaluation: what it cost, where it is, each configuration's mean."""
    s = space.search
    seeds, k = phase.plan["train_seeds"], len(phase.plan["configurations"])
    epochs = int(runs["epochs"].sum()) if len(runs) else 0
    shown = table[table[N].notna()][["trial_id", s.metric, MEAN, SE, N]]
    return (f"re-evaluation: the top {k} configurations by {s.metric} trained again from scratch with "
            f"{_seeds(seeds)} each (the validation split unchanged): {len(runs)} of "
            f"{k * len(seeds)} more trials, {epochs} trial-epochs, in {run_dir}/{FOLDER}/ and {CSV} (not told to the "
            f"searcher); mean over the original trial and its completed runs:\n"
            + shown.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def export_choice(space, grid, phase: Phase, table, runs, found):
    """((result, checkpoint, reported metrics), the ``reeval`` record) of the export: the best mean's
    configuration, with its best run's weights (``choose``); None if that run kept no checkpoint."""
    from .results import row_checkpoint, trial_id_of

    s = space.search
    i, j = choose(found, s.mode)
    config_id, config_runs = found[i]
    run_id = config_runs[j][0]
    if j == 0:  # the search's own trial
        results, rows = {trial_id_of(r): r for r in grid}, table
    else:
        results, rows = {trial_id_of(r): r for r in phase.grid}, runs
    row = rows[rows["trial_id"].astype(str) == run_id].to_dict("records")[0]
    chosen = row_checkpoint(space, results[run_id], row)
    mean, se, n = score([v for _, v in config_runs])
    seed = None if j == 0 else int(row["train_seed"])
    record = {"metric": s.metric, "mean": mean, "se": None if math.isnan(se) else se, "n": n,
              "values": [v for _, v in config_runs], "trial_id": config_id, "weights_from": run_id,
              "train_seed": seed, "train_seeds": phase.plan["train_seeds"]}
    return chosen, record
