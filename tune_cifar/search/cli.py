"""Hyperparameter search: ``python -m tune_cifar.search SPACE.yaml [overrides] [options]``.

Runs Ray Tune trials (Optuna TPE or random search, ASHA or FIFO scheduling; or population-based
training) over the parameters of a search-space file (schema: search_spaces/README.md), trains the best
configurations again with new training seeds (``search.final``: final.py), then exports the best (mean)
configuration's best checkpoint. Overrides are Hydra-style for the base config (``model=small_cnn``,
``data.train_subset=5000``) or ``search.key=value`` for the file's search section.

Outputs under ``<storage_path>/<experiment>/``: ``<timestamp>/`` (Ray's trials, results.csv,
search.yaml) and ``best/`` (the export); ``<storage_path>/best`` links to the latest export.
``--debug`` runs one trial in this process without Ray (breakpoints work).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import yaml

from ..atomic import NoSpaceLogFilter, disk_full_names, write_text
from ..errors import UserError, check_output_dir, cli_entry
from ..packaged import config_dir_override
from ..timeline import mark
from . import budget, claim, cluster, final, interrupt, storage, trust
from .stages import timeline_callbacks
from .space import SearchSpace, check_deep, check_measurable, load_space

log = logging.getLogger("tune_cifar")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tune_cifar.search", description=__doc__.split("\n")[0],
                                epilog="Example: python -m tune_cifar.search search_spaces/cpu_small.yaml "
                                       "search.num_samples=4 data.train_subset=2000")
    p.add_argument("space_file", help="search-space YAML file, or the name of a bundled one such as cpu_small "
                                      "(see search_spaces/README.md)")
    p.add_argument("overrides", nargs="*", help="key=value for the base config, or search.key=value")
    p.add_argument("--debug", action="store_true", help="run one trial in this process, without Ray")
    p.add_argument("--params", help='with --debug: JSON {"dotted.key": value, ...}; the rest is sampled')
    p.add_argument("--address", help="join this Ray cluster: auto or HOST:PORT (default: start Ray locally)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest run of this experiment (interrupted or killed): same command + --resume")
    p.add_argument("--new-name", action="store_true",
                   help="if the experiment exists, run this search as <experiment>_2 (the first free name)")
    p.add_argument("--num-samples", type=int,
                   help="same as search.num_samples=N (with search.budget.trial_epochs: a cap on the trials)")
    p.add_argument("--output-dir", help="same as search.storage_path=DIR (default: run.output_dir)")
    p.add_argument("--config-dir", action="append", help="a folder of your own config groups, e.g. "
                   "DIR/model/my_net.yaml for model=my_net (repeatable)")
    return p.parse_intermixed_args(list(argv))  # overrides may follow options


# --------------------------------------------------------------------------- the search (Ray)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def run_search(space: SearchSpace, address: str | None = None, overrides: Sequence[str] = (),
               resume: bool = False, new_name: bool = False) -> dict:
    """Run the trials (or ``resume`` the experiment's latest run), write results.csv and the reports,
    export the best trial; returns a summary dict (``interrupted: True`` if stopped before the end)."""
    from .names import STUDY_FILE, study_name
    from .registry import scheduler_parts

    # Ray's table is the progress display; --new-name renames the copy the plan holds
    plan = storage.plan_run(space.with_base({"trainer.enable_progress_bar": False}, checked=True), overrides,
                            resume=resume, new_name=new_name)  # refuses to reuse a name silently
    space, paths, s = plan.space, plan.paths, plan.space.search
    parts = scheduler_parts(s)  # registry.py: what the scheduler supplies or needs
    if plan.resume:
        storage.check_resume(plan)
        trust.check_run(paths.ray_dir, s.storage_path)  # whole, and only ours to write: before Ray reads it
        if parts.uses_study and not s.optuna_storage:  # the run's own study (PBT has none)
            trust.check_study_file(paths.local / STUDY_FILE, study_name(s))
    from . import study  # Optuna and Ray Tune's searcher: after the checks above, so that they answer at once

    if not plan.resume and parts.uses_study and s.optuna_storage:  # the default study is new: in the new run folder
        study.check_study(study.optuna_storage(s), space)  # direction and parameters, before anything is written
    if not space.deep_checked:  # main left the space's slower checks until the run folder's (and study's) passed
        check_deep(space)  # a refusal here leaves nothing: main releases the experiment's lock (claim.py)
    run_dir = paths.local
    # torch and the rest of Ray only now: a refused --resume answers without them
    import ray
    import torch
    from ray import tune

    from ..config import config_from_dict
    from ..data import load_data
    from .results import finish, interrupted, trial_statuses

    if not address:
        space.check_gpus(torch.cuda.device_count())
    cfg = config_from_dict(space.base)
    mark("data_start")
    arrays = load_data(cfg.data, cfg.task.task)  # read and decoded once, shared via the object store
    check_measurable(space, arrays)

    mark("ray_start")
    started = cluster.start_ray(address)
    mark("ray_end")
    try:
        if address:
            space.check_gpus(ray.cluster_resources().get("GPU", 0), "the Ray cluster")
        cluster.check_resources(s, f"the Ray cluster at {address}" if address else "this machine")
        trainable = tune.with_resources(_trial_function(space, arrays, parts.trial_callbacks), s.resources.for_ray())
        mark("put_end")  # the arrays are in the object store
        concurrent = _concurrent_trials(s, population=parts.search_alg is not None)
        # a trial reuses a finished trial's process (torch already imported); not multi-worker trials under PBT:
        # a paused trial's kept process would keep its Train workers (distributed.py), and Tune's advice to turn
        # reuse on for PBT is moot
        reuse = s.resources.workers == 1 or parts.search_alg is None
        if not reuse:
            warnings.filterwarnings("ignore", message="Consider boosting PBT performance", category=UserWarning)
        if paths.resume:
            print(f"resuming {paths.ray_dir}", flush=True)
            tuner = tune.Tuner.restore(paths.ray_dir, trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        else:
            if parts.search_alg:  # the scheduler's own search algorithm (e.g. Ray's PBT takes no Optuna searcher)
                searcher, param_space = parts.search_alg(space)
                _limit_generator(searcher, concurrent)
            else:  # the Optuna study's: run_dir/optuna.db or optuna_storage
                searcher, param_space = study.make_searcher(space, run_dir, paths.name), {}
            searcher = budget.wrap(searcher, s)  # search.budget: trials start until it is spent
            scheduler = parts.build(space)
            # at least what the scheduler needs (PBT: a donor's latest checkpoint must outlive its restore)
            keep = max(s.checkpoints_to_keep, parts.min_checkpoints)
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric=s.metric, mode=s.mode, search_alg=searcher, scheduler=scheduler,
                    num_samples=budget.tune_num_samples(s), max_concurrent_trials=concurrent,
                    time_budget_s=s.time_budget_s, trial_dirname_creator=_trial_dirname,
                    reuse_actors=reuse),
                run_config=tune.RunConfig(
                    name=paths.name, storage_path=paths.storage,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=keep,
                                                            checkpoint_score_attribute=s.metric,
                                                            checkpoint_score_order=s.mode),
                    failure_config=tune.FailureConfig(max_failures=s.max_failures), verbose=1,
                    callbacks=timeline_callbacks()),
            )
        if not paths.resume:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text(run_dir / "search.yaml", yaml.safe_dump(storage.search_record(space, plan.overrides),
                                                               sort_keys=False))
            storage.upload_reports(paths)
        start = time.monotonic()
        # Tune logs a trial's failure with its whole remote traceback; for a full disk the search says it once
        logging.getLogger("ray.tune.execution.tune_controller").addFilter(NoSpaceLogFilter())
        if paths.resume and final.read_plan(paths) is not None:  # the re-evaluation had begun: the trials are done
            grid, received = tuner.get_results(), None
        else:
            with interrupt.while_tuning() as received:  # SIGINT or SIGTERM: Tune saves its state and returns
                mark("fit_start")
                grid = tuner.fit()
                mark("fit_end")
        statuses = trial_statuses(grid)  # from the state Tune saved: running trials are still RUNNING there
        stopped = received is not None and (bool(received) or interrupted(statuses, grid, s,
                                                                          time.monotonic() - start))
        again = None  # re-evaluation of the best configurations (search.final): a second Tune experiment
        if not stopped and budget.reevaluates(s):
            again = final.run(plan, grid, statuses, trainable, concurrent, _trial_dirname)
            stopped = again is not None and again.interrupted
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune's loop ran
        return _interrupted(paths)
    except Exception as err:
        _drop_cut_checkpoints(paths, err)
        raise
    finally:
        if started:
            ray.shutdown()
    try:
        return finish(plan, grid, arrays, statuses, interrupted=stopped, reeval=again)
    except KeyboardInterrupt:  # while writing the reports or exporting: nothing exported
        return _interrupted(paths)
    except Exception as err:
        _drop_cut_checkpoints(paths, err)
        raise


def _drop_cut_checkpoints(paths: storage.RunPaths, err: BaseException) -> None:
    """On a full disk, remove the run's checkpoint folders whose checkpoint is not whole: Ray copies a
    trial's checkpoint into the storage itself (not atomically), and a trial cannot always remove a copy
    cut short (the copy may fail after the trial's own clean-up). Such a file could never be loaded."""
    import shutil

    from ..atomic import is_no_space
    from .names import checkpoint_file
    from .trainable import is_whole

    if not is_no_space(err) or paths.remote:
        return
    run = Path(paths.ray_dir)
    for folder in [*run.glob("trial_*/checkpoint_*"), *run.glob(f"{final.FOLDER}/trial_*/checkpoint_*")]:
        if not is_whole(checkpoint_file(folder)):
            shutil.rmtree(folder, ignore_errors=True)


def _trial_function(space: SearchSpace, arrays, scheduler_callbacks):
    """Tune's function for a trial, with the decoded arrays put once in Ray's object store and the scheduler
    registration's trial callbacks (registry.py)."""
    from ray import tune

    if space.search.resources.workers == 1:  # one process: the trial trains in Tune's own worker
        from .trainable import train_trial

        return tune.with_parameters(train_trial, space=space, arrays=arrays, scheduler_callbacks=scheduler_callbacks)
    import ray

    from .distributed import train_trial_workers, trial_class

    # its Ray Train workers read the arrays themselves: the trial hands them the reference (in a list, which
    # Ray passes as it is) instead of arrays it would copy into every worker
    return trial_class(tune.with_parameters(train_trial_workers, space=space, arrays=[ray.put(arrays)],
                                            scheduler_callbacks=scheduler_callbacks))


def _concurrent_trials(s, population: bool) -> int | None:
    """search.max_concurrent_trials, and with several workers per trial at most the trials whose workers fit
    at once: their Tune processes hold no CPU, so Tune would start every trial, to wait for Ray Train's
    resources (Ray's guide for Tune + Train: limit the trials in flight). Not for a scheduler with its own
    search algorithm over a population that must exist at once (PBT): its trials take turns."""
    if s.resources.workers == 1 or population:
        return s.max_concurrent_trials
    import ray

    from .workers import trials_that_fit

    fit = max(1, trials_that_fit([n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")], s.resources.total()))
    return min(fit, s.max_concurrent_trials or fit)


def _limit_generator(searcher, concurrent: int | None) -> None:
    """search.max_concurrent_trials for a scheduler's own variant generator: Tune limits a Searcher itself
    (ConcurrencyLimiter) but only warns and ignores the limit for a search generator it is handed."""
    from ray.tune.search import BasicVariantGenerator

    if concurrent and isinstance(searcher, BasicVariantGenerator) and not searcher.max_concurrent:
        searcher.max_concurrent = concurrent


def _interrupted(paths: storage.RunPaths) -> dict:
    if storage._exists(storage._join(paths.ray_dir, storage.SEARCH_FILE)):
        how = f"continue it with: {storage.resume_command(paths)}"
    else:
        how = "it had not started; run it again"
    print(f"search interrupted; nothing exported; {how}", file=sys.stderr, flush=True)
    return {"interrupted": True, "run_dir": str(paths.local)}


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    mark("driver_main")  # this module and its imports loaded
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides)
    if args.num_samples is not None:
        overrides.append(f"search.num_samples={args.num_samples}")
    if args.output_dir:
        overrides.append(f"search.storage_path={args.output_dir}")
    if args.config_dir:
        overrides.append(config_dir_override(args.config_dir))
    if args.params and not args.debug:
        raise UserError("--params only works with --debug (a search samples its parameters)")
    # a search: the space's checks that import torch come after the run folder's (run_search), so that a
    # refusal of the experiment's name, lock or state answers at once
    space = load_space(args.space_file, overrides, deep=args.debug)
    s = space.search  # before any folder, Ray or Tuner: the local output place must be usable
    key = "search.local_path" if storage.is_uri(s.storage_path) else "search.storage_path"
    check_output_dir(storage.local_root(s), key)
    if args.debug:
        from .debug import debug

        with interrupt.terminate_as_interrupt():  # SIGTERM like Ctrl-C
            return debug(space, args.params)
    # a full disk (a trial's checkpoint, Tune's state, the study, results.csv): one line naming the storage,
    # exit 2; nothing is exported, so an earlier export and <storage_path>/best stay as they were
    try:
        with interrupt.terminate_as_interrupt(), disk_full_names(s.storage_path):  # SIGTERM like Ctrl-C
            out = run_search(space, args.address, overrides, resume=args.resume, new_name=args.new_name)
    finally:  # the experiment's lock (claim.py), also of a search refused at once
        claim.release_all()
    mark("driver_end")
    if out.get("interrupted"):
        sys.exit(130)
    return out


if __name__ == "__main__":
    main()
