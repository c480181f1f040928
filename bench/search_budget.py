"""Budget-matched searches with re-evaluation, replayed over curves recorded with several training seeds.

    python bench/search_budget.py [--curves bench/data/curves.json bench/data/curves_seeds.json]
                                  [--seeds 50] [--fifo-trials 16] [--fractions 0.5 1.0] [--concurrency 2]
                                  [--grace-period 1] [--reduction-factor 2] [--n-startup-trials 4]
                                  [--sweep] [--out bench/data/search_budget]

Issue 18. What is real: the learning curves, each configuration trained with >= 3 training seeds
(``bench/record_curves.py``: ``curves.json`` holds training seed 42, ``curves_seeds.json`` more seeds of a
sub-grid; the validation/test split is the same for all). Only configurations with ``--min-seeds``
seeds are searched; they must form a product grid (lr per optimizer).

What is replayed: the searches, with **the same trial-epoch budget for every method** (a trial-epoch is
counted when it starts; the search keeps starting trials, ``--concurrency`` at a time, until the budget
is committed, and trials still running then end there: each reading they made stays usable; the search
command's ``search.budget.trial_epochs`` lets them finish instead, overshooting by less than one trial's
epochs, which would give ASHA a few epochs more than FIFO here). ASHA spends what it saves on more
configurations. A trial draws one of its configuration's recorded seeds at random
(``numpy`` seeded by (searcher seed, trial number): trial k of every method with the same configuration
gets the same seed, so methods are paired). The libraries decide as in ``bench/search_seeds.py``:
Optuna's ``RandomSampler`` / ``TPESampler`` (as the search builds it) through ask/tell, told PRUNED for a
trial ASHA stops and COMPLETE with its best epoch otherwise, and Ray's ``ASHAScheduler`` (its own
asynchronous rung rule, ``_Bracket.on_result``) through ``on_trial_add/result/complete``.

Because no decision depends on the budget, a search with a smaller budget is a prefix of the same
search with a larger one (its first B epoch starts): each (method, searcher seed) is replayed once at
the largest budget and every smaller budget (and every re-evaluation reserve) is read off that log.

Re-evaluation (``search.final: {top_k, seeds}``): with budget B and reserve R = top_k x seeds x
max_epochs, the search gets B - R; then the top_k configurations by their best trial's best validation
reading are trained again ``seeds`` times from scratch, to max_epochs, each with one of the
configuration's *other* recorded training seeds (drawn without replacement); a configuration's mean is
over n = seeds + 1 values (the original trial's best reading and each re-run's best epoch); the export
is the configuration with the best mean, with the weights of its best-validation run among its seeds.
Fewer distinct configurations than top_k: only those are re-run (the rest of R is unused; reported).

Reported, over searcher seeds, for every method at each budget: the **test** accuracy of what it exports
(the recorded test accuracy of the exported run at its exported epoch) and its regret: the grid's best
expected test accuracy (max over configurations of the mean over its seeds of the test accuracy at the
run's best validation epoch) minus the export's (negative: a lucky export). Paired comparisons (same
searcher seed): mean difference with a 95 % paired t interval and a paired bootstrap interval (10,000
resamples); the regret reduction of re-evaluation: 1 - median(regret with) / median(regret without), with
a paired bootstrap interval. ``--sweep``: ASHA's reduction factor 2/3/4 x grace period 1/2 and the rung
rule's effect (a trial promoted with no other result at its rung, a tie promoted, weak configurations
run to max_epochs).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_seeds import METRIC, Curves, _Trial, make_sampler  # noqa: E402  (bench/ is not a package)

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("fifo_random", "asha_random", "asha_tpe")
FIRST_SEED = 42  # curves.json's training seed (run.seed of the recording: it has no train_seed field)
REEVAL = ((2, 1), (2, 2), (3, 1), (3, 2))  # (top_k, seeds) rows of the re-evaluation table
DEFAULT_REEVAL = (3, 2)  # search.final's default (issue 18)


class SeededCurves(Curves):
    """Several recorded training seeds per configuration, looked up by its parameters."""

    def __init__(self, docs: list[dict], min_seeds: int = 3):
        if not docs:
            raise SystemExit("search_budget: no curves file")
        self.max_epochs = docs[0]["epochs"]
        runs: dict[tuple, dict[int, list]] = {}
        params_of: dict[tuple, dict] = {}
        for doc in docs:
            if doc["epochs"] != self.max_epochs or doc.get("base") != docs[0].get("base"):
                raise SystemExit("search_budget: the curves files were recorded with different settings "
                                 "(epochs or base overrides)")
            for c in doc["configs"]:
                key = self.key(c["params"])
                params_of[key] = c["params"]
                runs.setdefault(key, {})[c.get("train_seed", FIRST_SEED)] = c["curve"]
        self.runs = {k: dict(sorted(v.items())) for k, v in runs.items() if len(v) >= min_seeds}
        if not self.runs:
            raise SystemExit(f"search_budget: no configuration has {min_seeds} recorded seeds")
        self.grid = self._product_grid(docs[-1]["grid"], min_seeds)
        self.runs = {k: v for k, v in self.runs.items()
                     if k[1] in self.grid["optimizer.lr"].get(k[0], ()) and k[2] in self.grid["optimizer.weight_decay"]
                     and k[3] in self.grid["data.train_batch_size"] and k[4] in self.grid["model.model_name"]}
        self.params = {k: params_of[k] for k in self.runs}
        # per configuration: the mean over its seeds of (best val, test acc at that epoch) over full runs
        self.expected = {k: (float(np.mean([best_of(c)[0] for c in v.values()])),
                             float(np.mean([best_of(c)[1] for c in v.values()]))) for k, v in self.runs.items()}
        self.best_key = max(self.expected, key=lambda k: self.expected[k][1])
        self.grid_best_test = self.expected[self.best_key][1]

    def _product_grid(self, order: dict, min_seeds: int) -> dict:
        """The product grid the seeded configurations span; refuses a partial one."""
        keys = list(self.runs)
        opts = [o for o in order["optimizer.optimizer"] if any(k[0] == o for k in keys)]
        grid = {"optimizer.optimizer": opts,
                "optimizer.lr": {o: sorted(v for v in order["optimizer.lr"][o] if any(k[:2] == (o, v) for k in keys))
                                 for o in opts}}  # ascending: the samplers choose an ordinal index
        for i, name in ((2, "optimizer.weight_decay"), (3, "data.train_batch_size"), (4, "model.model_name")):
            grid[name] = [v for v in order[name] if any(k[i] == v for k in keys)]

        def gaps(o, lrs):
            return [(o, lr, wd, bs, m) for lr in lrs for wd in grid["optimizer.weight_decay"]
                    for bs in grid["data.train_batch_size"] for m in grid["model.model_name"]
                    if (o, lr, wd, bs, m) not in self.runs]

        # a recording stopped while adding a learning rate (record_curves.py --subset 24): leave that rate out
        for o in opts:
            grid["optimizer.lr"][o] = [lr for lr in grid["optimizer.lr"][o] if not gaps(o, [lr])] or \
                grid["optimizer.lr"][o]
        missing = [x for o in opts for x in gaps(o, grid["optimizer.lr"][o])]
        if missing:
            raise SystemExit(f"search_budget: the configurations with {min_seeds} seeds are not a product grid; "
                             f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        return grid

    def seeds(self, key: tuple) -> list[int]:
        return list(self.runs[key])


def best_of(curve: list[dict], upto: int | None = None) -> tuple[float, float, int]:
    """(best validation accuracy, test accuracy at that epoch, that epoch) over the first ``upto`` epochs
    (the first epoch reaching the maximum: what a search's best-epoch bookkeeping keeps)."""
    part = curve[:upto] if upto is not None else curve
    i = int(np.argmax([e["val_accuracy"] for e in part]))
    return part[i]["val_accuracy"], part[i]["test_accuracy"], i + 1


# --------------------------------------------------------------------------- one search, replayed once


def simulate(method: str, curves: SeededCurves, seed: int, max_budget: int, concurrency: int = 2,
             grace_period: int = 1, reduction_factor: float = 2, n_startup_trials: int = 4,
             rule: str = "cut") -> dict:
    """One search until ``max_budget`` trial-epochs have started; returns its trials and the order in
    which their epochs started (``starts``: (trial number, epoch)), plus the rung rule's events.
    ``rule="finish"``: the search command's rule instead (search.budget.trial_epochs): a trial starts while
    the finished trials' epochs plus max_epochs per running trial are below the budget, and running
    trials are never cut (the total overshoots by less than max_epochs; no prefix property)."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    np.random.seed(seed)  # ASHAScheduler.on_trial_add draws its bracket with np.random (one bracket here)
    sampler = make_sampler("random" if method.endswith("random") else "tpe", seed, n_startup_trials)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    max_epochs = curves.max_epochs
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max", max_t=max_epochs,
                               grace_period=grace_period, reduction_factor=reduction_factor)
                 if method.startswith("asha") else None)
    running: list = []  # heap of (time the epoch under way ends, trial number); one time unit per epoch
    trials: dict[int, dict] = {}
    starts: list[tuple[int, int]] = []
    # the rung rule's decisions: (index in ``starts`` of the epoch whose result met the rung, no other result
    # at the rung yet (passes unopposed), equal to the cutoff (a tie passes))
    rungs: list[tuple[int, bool, bool]] = []
    now = 0.0

    def begin_epoch(number: int) -> None:
        trials[number]["start_index"] = len(starts)
        starts.append((number, trials[number]["epoch"] + 1))
        heapq.heappush(running, (now + 1.0, number))

    def start_trial() -> None:
        ot = study.ask()
        params = curves.suggest(ot)
        key = Curves.key(params)
        seeds = curves.seeds(key)
        train_seed = seeds[int(np.random.default_rng([seed, ot.number]).integers(len(seeds)))]
        trials[ot.number] = {"ot": ot, "key": key, "train_seed": train_seed, "curve": curves.runs[key][train_seed],
                             "epoch": 0, "ray": _Trial(str(ot.number)), "status": "running", "start_index": 0}
        if scheduler:
            scheduler.on_trial_add(None, trials[ot.number]["ray"])
        begin_epoch(ot.number)

    def room() -> bool:
        if rule == "cut":
            return len(starts) < max_budget
        finished = sum(t["epoch"] for t in trials.values() if t["status"] != "running")
        return finished + max_epochs * len(running) < max_budget

    def fill() -> None:
        while len(running) < concurrency and room():
            start_trial()

    fill()
    while running:
        now, number = heapq.heappop(running)
        t = trials[number]
        t["epoch"] += 1
        epoch = t["epoch"]
        value = t["curve"][epoch - 1]["val_accuracy"]
        result = {"training_iteration": epoch, METRIC: value}
        if scheduler:
            if epoch < max_epochs:  # the rung this result meets, before Ray records it
                for milestone, recorded in scheduler._brackets[0]._rungs:
                    if epoch >= milestone and t["ray"].trial_id not in recorded:
                        cutoff = scheduler._brackets[0].cutoff(recorded)
                        rungs.append((t["start_index"], cutoff is None, cutoff is not None and value == cutoff))
                        break
            stop = scheduler.on_trial_result(None, t["ray"], result) == TrialScheduler.STOP
        else:
            stop = epoch >= max_epochs
        if not stop:
            t["ot"].report(value, epoch)
            if rule == "finish" or len(starts) < max_budget:
                begin_epoch(number)
            else:
                t["status"] = "cut"  # the budget is spent: the trial ends here (nothing more to tell)
            fill()
            continue
        if scheduler:
            scheduler.on_trial_complete(None, t["ray"], result)
        t["ot"].report(value, epoch)
        if epoch < max_epochs:  # issue 12 §1: a stopped trial is PRUNED, a finished one its best epoch
            study.tell(t["ot"], state=TrialState.PRUNED)
        else:
            study.tell(t["ot"], max(e["val_accuracy"] for e in t["curve"][:epoch]))
        t["status"] = "completed" if epoch >= max_epochs else "stopped"
        fill()
    assert len(starts) == sum(t["epoch"] for t in trials.values())  # every started epoch ran
    return {"method": method, "seed": seed, "starts": starts, "rungs": rungs,
            "trials": {n: {k: t[k] for k in ("key", "train_seed", "curve", "epoch", "status")}
                       for n, t in trials.items()}}


# --------------------------------------------------------------------------- a budget read off the log


def evaluate(run: dict, curves: SeededCurves, search_epochs: int, top_k: int = 0, reeval_seeds: int = 0) -> dict:
    """The search that stopped starting epochs after ``search_epochs``, then its re-evaluation."""
    done: dict[int, int] = {}
    for number, _ in run["starts"][:search_epochs]:
        done[number] = done.get(number, 0) + 1
    readings = []  # (best val, test at it, its epoch, trial number) per trial
    for number, epochs in done.items():
        val, test, ep = best_of(run["trials"][number]["curve"], epochs)
        readings.append((val, test, ep, number))
    ranked = sorted(readings, key=lambda r: (-r[0], r[3]))  # best first; ties: the earlier trial
    used = sum(done.values())
    best = ranked[0]
    out = {"search_epochs": used, "reeval_epochs": 0, "trials": len(done),
           "configs": len({run["trials"][n]["key"] for n in done}),
           "export_val": best[0], "export_test": best[1], "export_key": run["trials"][best[3]]["key"]}
    if top_k:
        top: list[tuple] = []  # the best trial of each of the top_k distinct configurations
        for r in ranked:
            if run["trials"][r[3]]["key"] not in {run["trials"][x[3]]["key"] for x in top}:
                top.append(r)
            if len(top) == top_k:
                break
        scored = []
        for rank, (val, test, _, number) in enumerate(top):
            t = run["trials"][number]
            others = [s for s in curves.seeds(t["key"]) if s != t["train_seed"]]
            if len(others) < reeval_seeds:
                raise SystemExit(f"search_budget: re-evaluation with {reeval_seeds} seeds needs "
                                 f"{reeval_seeds + 1} recorded seeds per configuration")
            rng = np.random.default_rng([run["seed"], 1_000_003, rank])
            chosen = [int(x) for x in rng.choice(others, size=reeval_seeds, replace=False)]
            runs = [(val, test, t["train_seed"], done[number])] + [
                (*best_of(curves.runs[t["key"]][s])[:2], s, curves.max_epochs) for s in chosen]
            vals = [r[0] for r in runs]
            scored.append((float(np.mean(vals)), -rank, max(runs), t["key"], runs))
        mean, _, (val, test, _, _), key, runs = max(scored)
        vals = [r[0] for r in runs]
        out.update(reeval_epochs=len(top) * reeval_seeds * curves.max_epochs, export_val=val, export_test=test,
                   export_key=key, reeval_mean=mean, reeval_se=float(np.std(vals, ddof=1) / np.sqrt(len(vals))),
                   reeval_runs=[{"train_seed": r[2], "epochs": r[3], "val": r[0]} for r in runs])
    out["total_epochs"] = out["search_epochs"] + out["reeval_epochs"]
    out["regret"] = curves.grid_best_test - out["export_test"]
    out["export_is_best_config"] = out["export_key"] == curves.best_key
    return out


# --------------------------------------------------------------------------- statistics


def paired_ci(d: np.ndarray, boot: int = 10_000, rng_seed: int = 0) -> dict:
    """Mean of paired differences with a 95 % t interval and a percentile bootstrap interval."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = float(t975(n - 1) * se) if n > 1 else float("nan")
    means = np.random.default_rng(rng_seed).choice(d, size=(boot, n), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": mean, "t_lo": mean - half, "t_hi": mean + half, "boot_lo": float(lo), "boot_hi": float(hi),
            "median": float(np.median(d)), "wins": int((d > 1e-9).sum()), "ties": int((abs(d) <= 1e-9).sum()),
            "losses": int((d < -1e-9).sum()), "n": n}


def t975(df: int) -> float:
    """Student's t 97.5 % quantile (Cornish-Fisher expansion around the normal's; 2.0096 at df 49, within
    0.003 of the exact value for df >= 5, 0.0002 for df >= 10; no SciPy in the environment)."""
    z = 1.959963985
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def reduction_ci(without: np.ndarray, with_: np.ndarray, boot: int = 10_000, rng_seed: int = 0) -> dict:
    """1 - median(with) / median(without) of regrets, paired bootstrap interval over searcher seeds."""
    without, with_ = np.asarray(without, float), np.asarray(with_, float)

    def red(a, b):
        m = np.median(a, axis=-1)
        return np.where(m > 0, 1 - np.median(b, axis=-1) / np.where(m > 0, m, 1), np.nan)

    idx = np.random.default_rng(rng_seed).integers(len(without), size=(boot, len(without)))
    samples = red(without[idx], with_[idx])
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return {"reduction": float(red(without, with_)), "lo": float(lo), "hi": float(hi),
            "median_without": float(np.median(without)), "median_with": float(np.median(with_))}


def pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


# --------------------------------------------------------------------------- main


def budgets_of(curves: SeededCurves, fifo_trials: int, fractions) -> dict[str, int]:
    return {f"{int(round(100 * f))}%": int(round(f * fifo_trials * curves.max_epochs)) for f in fractions}


def analyse(runs: dict[str, list[dict]], curves: SeededCurves, budgets: dict[str, int],
            reevals=REEVAL) -> dict:
    """Every method x budget x re-evaluation setting, and the paired comparisons."""
    rows: dict = {}
    for method, rs in runs.items():
        for bname, b in budgets.items():
            settings = [(0, 0)] + [r for r in reevals if r[0] * r[1] * curves.max_epochs < b]
            for top_k, s in settings:
                reserve = top_k * s * curves.max_epochs
                evs = [evaluate(r, curves, b - reserve, top_k, s) for r in rs]
                rows[(method, bname, top_k, s)] = evs
    out: dict = {"rows": {}, "vs_fifo": {}, "reeval": {}}
    for (method, bname, top_k, s), evs in rows.items():
        test = np.array([e["export_test"] for e in evs])
        reg = np.array([e["regret"] for e in evs])
        out["rows"][f"{method}|{bname}|{top_k}x{s}"] = {
            "method": method, "budget": bname, "budget_epochs": budgets[bname], "top_k": top_k, "seeds": s,
            "reserve_share": top_k * s * curves.max_epochs / budgets[bname],
            "export_test_median": float(np.median(test)), "export_test_q1": float(np.percentile(test, 25)),
            "export_test_q3": float(np.percentile(test, 75)), "regret_median": float(np.median(reg)),
            "regret_mean": float(reg.mean()), "best_config_exported": int(sum(e["export_is_best_config"] for e in evs)),
            "total_epochs": [int(min(e["total_epochs"] for e in evs)), int(max(e["total_epochs"] for e in evs))],
            "search_epochs_max": int(max(e["search_epochs"] for e in evs)),
            "trials_median": float(np.median([e["trials"] for e in evs])),
            "configs_median": float(np.median([e["configs"] for e in evs])),
            "n": len(evs), "export_tests": [float(x) for x in test]}  # per searcher seed (paired comparisons)
        base = rows[("fifo_random", bname, top_k, s)]
        if method != "fifo_random":
            out["vs_fifo"][f"{method}|{bname}|{top_k}x{s}"] = paired_ci(
                test - np.array([e["export_test"] for e in base]))
        if top_k:
            plain = np.array([e["regret"] for e in rows[(method, bname, 0, 0)]])
            on_top = np.array([evaluate(r, curves, budgets[bname], top_k, s)["regret"] for r in runs[method]])
            out["reeval"][f"{method}|{bname}|{top_k}x{s}"] = {
                **reduction_ci(plain, reg),
                "on_top": reduction_ci(plain, on_top),  # the search keeps the whole budget, re-evaluation extra
                "test_gain": paired_ci(test - np.array([e["export_test"] for e in rows[(method, bname, 0, 0)]])),
                "reserve_share": top_k * s * curves.max_epochs / budgets[bname]}
    return out


def rung_stats(rs: list[dict], curves: SeededCurves, budget: int, weak_below: float) -> dict:
    """Per search at ``budget``: promotions without an opponent / by a tie, weak trials run to the end, trial 0."""
    weak_end, weak_epochs, trial0_end, unopposed, ties, decisions = [], [], [], [], [], []
    for r in rs:
        events = [e for e in r["rungs"] if e[0] < budget]
        decisions.append(len(events))
        unopposed.append(sum(e[1] for e in events))
        ties.append(sum(e[2] for e in events))
        done: dict[int, int] = {}
        for number, _ in r["starts"][:budget]:
            done[number] = done.get(number, 0) + 1
        weak = {n for n in done if curves.expected[r["trials"][n]["key"]][0] < weak_below}
        weak_end.append(sum(done[n] >= curves.max_epochs for n in weak))
        weak_epochs.append(sum(done[n] for n in weak) / sum(done.values()))
        trial0_end.append(done.get(0, 0) >= curves.max_epochs)
    return {"weak_trials_run_to_end_median": float(np.median(weak_end)),
            "weak_trials_run_to_end_total": int(sum(weak_end)),
            "weak_epoch_share_median": float(np.median(weak_epochs)),
            "trial0_to_end": int(sum(trial0_end)),
            "unopposed_per_search_median": float(np.median(unopposed)),
            "ties_per_search_median": float(np.median(ties)),
            "decisions_per_search_median": float(np.median(decisions))}


def main_table(a: dict, budgets: dict) -> str:
    lines = ["| budget | method | re-evaluation | export test acc, median [IQR] | regret, median | "
             "− FIFO + random (same re-eval.), mean [95 % t CI] [bootstrap] | W/T/L | trials | best config exported |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in a["rows"].items():
        if r["top_k"] not in (0,) and (r["top_k"], r["seeds"]) != best_fit(r, a):
            continue
        vs = a["vs_fifo"].get(key)
        cmp_ = (f"{pts(vs['mean'])} [{pts(vs['t_lo'])}, {pts(vs['t_hi'])}] [{pts(vs['boot_lo'])}, {pts(vs['boot_hi'])}]"
                if vs else "—")
        wtl = f"{vs['wins']}/{vs['ties']}/{vs['losses']}" if vs else "—"
        reev = f"top {r['top_k']} × {r['seeds']} ({100 * r['reserve_share']:.0f} %)" if r["top_k"] else "off"
        lines.append(f"| {r['budget']} ({r['budget_epochs']}) | {r['method']} | {reev} | "
                     f"{pct(r['export_test_median'])} [{pct(r['export_test_q1'])}–{pct(r['export_test_q3'])}] | "
                     f"{pts(r['regret_median'])} | {cmp_} | {wtl} | {r['trials_median']:.0f} | "
                     f"{r['best_config_exported']}/{r['n']} |")
    return "\n".join(lines)


def best_fit(r: dict, a: dict) -> tuple[int, int]:
    """The largest re-evaluation (top_k x seeds) whose reserve is <= 25 % of the row's budget."""
    fits = [(v["top_k"], v["seeds"]) for v in a["rows"].values()
            if v["budget"] == r["budget"] and v["method"] == r["method"] and 0 < v["reserve_share"] <= 0.25 + 1e-9]
    return max(fits, key=lambda x: (x[0] * x[1], x[1])) if fits else (-1, -1)


def reeval_table(a: dict) -> str:
    lines = ["| budget | method | re-evaluation (share of budget) | regret median without → with | "
             "reduction [95 % bootstrap] | test gain, mean [95 % t CI] | reduction if on top of the budget |",
             "|---|---|---|---:|---:|---:|---:|"]
    for key, r in a["reeval"].items():
        method, bname, setting = key.split("|")
        g = r["test_gain"]
        lines.append(f"| {bname} | {method} | top {setting.replace('x', ' × ')} ({100 * r['reserve_share']:.0f} %) | "
                     f"{pts(r['median_without'])} → {pts(r['median_with'])} | "
                     + (f"{100 * r['reduction']:.0f} % [{100 * r['lo']:.0f}, {100 * r['hi']:.0f}] | "
                        if r["median_without"] > 0 else "n/a (median regret without ≤ 0) | ")
                     + f"{pts(g['mean'])} [{pts(g['t_lo'])}, {pts(g['t_hi'])}] | "
                     + (f"{100 * r['on_top']['reduction']:.0f} % [{100 * r['on_top']['lo']:.0f}, "
                        f"{100 * r['on_top']['hi']:.0f}] |" if r["median_without"] > 0 else "n/a |"))
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--curves", type=Path, nargs="+",
                   default=[ROOT / "bench" / "data" / "curves.json", ROOT / "bench" / "data" / "curves_seeds.json"])
    p.add_argument("--min-seeds", type=int, default=3)
    p.add_argument("--subset", type=int, choices=(16, 24), default=None,
                   help="only record_curves.py's seeded sub-grid of this size (default: every configuration "
                        "with --min-seeds seeds)")
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--fifo-trials", type=int, default=16, help="FIFO's trials at 100 %% of the budget")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--n-startup-trials", type=int, default=4)
    p.add_argument("--sweep", action="store_true", help="also ASHA's reduction factor 2/3/4 x grace period 1/2")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "search_budget")
    args = p.parse_args(argv)

    docs = [json.loads(f.read_text()) for f in args.curves]
    if args.subset:
        from record_curves import subset_configs

        keep = {Curves.key(c) for c in subset_configs(args.subset)}
        docs = [{**d, "configs": [c for c in d["configs"] if Curves.key(c["params"]) in keep]} for d in docs]
    curves = SeededCurves(docs, args.min_seeds)
    budgets = budgets_of(curves, args.fifo_trials, args.fractions)
    top = max(budgets.values()) + max(k * s for k, s in REEVAL) * curves.max_epochs  # + re-evaluation on top
    weak_below = max(v[0] for v in curves.expected.values()) - 0.10

    def replay_all(methods, grace, rf):
        return {m: [simulate(m, curves, seed, top, args.concurrency, grace, rf, args.n_startup_trials)
                    for seed in range(args.seeds)] for m in methods}

    runs = replay_all(METHODS, args.grace_period, args.reduction_factor)
    a = analyse(runs, curves, budgets)
    goal1_key = f"asha_tpe|{min(budgets, key=budgets.get)}|0x0"
    g1 = a["vs_fifo"][goal1_key]
    fits = {k: v for k, v in a["reeval"].items() if v["reserve_share"] <= 0.25 + 1e-9}
    out = {"args": {k: [str(x) for x in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v
                    for k, v in vars(args).items()},
           "configs": len(curves.runs), "seeds_per_config": sorted({len(v) for v in curves.runs.values()}),
           "grid": curves.grid, "max_epochs": curves.max_epochs, "budgets": budgets,
           "grid_best": {"key": list(curves.best_key), "val_mean": curves.expected[curves.best_key][0],
                         "test_mean": curves.grid_best_test},
           "analysis": a,
           "rungs": {m: {b: rung_stats(rs, curves, e, weak_below) for b, e in budgets.items()}
                     for m, rs in runs.items()},
           "goal1": {"comparison": goal1_key, **g1, "met": g1["t_lo"] >= 0 and g1["boot_lo"] >= 0},
           "goal2": {k: {"reduction": v["reduction"], "lo": v["lo"], "met": v["reduction"] >= 0.30}
                     for k, v in fits.items()},
           "budget_check": {k: r["total_epochs"] for k, r in a["rows"].items()}}
    out["finish_rule"] = finish_rule(curves, budgets, args)
    if args.sweep:
        out["sweep"] = {}
        for rf in (2, 3, 4):
            for grace in (1, 2):
                rs = runs if (rf, grace) == (args.reduction_factor, args.grace_period) else \
                    {"fifo_random": runs["fifo_random"], **replay_all(METHODS[1:], grace, rf)}
                sa = analyse(rs, curves, budgets, reevals=())
                out["sweep"][f"rf{rf}_grace{grace}"] = {
                    "rows": {k: v for k, v in sa["rows"].items() if not k.startswith("fifo")},
                    "vs_fifo": sa["vs_fifo"],
                    "rungs": {m: {b: rung_stats(rs[m], curves, e, weak_below) for b, e in budgets.items()}
                              for m in METHODS[1:]}}
        main_rows = out["analysis"]["rows"]
        for s in out["sweep"].values():  # each setting against the main one (--reduction-factor/--grace-period)
            s["vs_main"] = {k: paired_ci(np.array(r["export_tests"]) - np.array(main_rows[k]["export_tests"]))
                            for k, r in s["rows"].items() if not r["top_k"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
    print(f"{len(curves.runs)} configurations x {out['seeds_per_config']} seeds, {curves.max_epochs} epochs; grid best "
          f"{curves.best_key} expected test {pct(curves.grid_best_test)} %; {args.seeds} searcher seeds; "
          f"budgets {budgets} trial-epochs; ASHA grace {args.grace_period}, reduction factor {args.reduction_factor}")
    print(main_table(a, budgets))
    print()
    print(reeval_table(a))
    print()
    print(json.dumps({k: out[k] for k in ("goal1", "goal2", "rungs")}, indent=1))
    print(finish_table(out["finish_rule"]))
    if args.sweep:
        print(sweep_table(out["sweep"], budgets))
    return out


def finish_rule(curves: SeededCurves, budgets: dict, args) -> dict:
    """The headline rows again under the search command's own budget rule (running trials finish; each
    budget and reserve replayed separately): does cutting trials at the budget change the comparison?"""
    out = {}
    for bname, b in budgets.items():
        fit = max(((k, s) for k, s in REEVAL if k * s * curves.max_epochs <= 0.25 * b), default=None,
                  key=lambda x: (x[0] * x[1], x[1]))
        for top_k, s in [(0, 0)] + ([fit] if fit else []):
            evs = {m: [evaluate(r, curves, len(r["starts"]), top_k, s) for r in
                       (simulate(m, curves, seed, b - top_k * s * curves.max_epochs, args.concurrency,
                                 args.grace_period, args.reduction_factor, args.n_startup_trials, rule="finish")
                        for seed in range(args.seeds))] for m in METHODS}
            fifo = np.array([e["export_test"] for e in evs["fifo_random"]])
            for m, es in evs.items():
                test = np.array([e["export_test"] for e in es])
                out[f"{m}|{bname}|{top_k}x{s}"] = {
                    "method": m, "budget": bname, "top_k": top_k, "seeds": s,
                    "export_test_median": float(np.median(test)),
                    "regret_median": float(np.median([e["regret"] for e in es])),
                    "total_epochs": [int(min(e["total_epochs"] for e in es)), int(max(e["total_epochs"] for e in es))],
                    "vs_fifo": paired_ci(test - fifo) if m != "fifo_random" else None}
    return out


def finish_table(rows: dict) -> str:
    lines = ["| budget | method | re-evaluation | trial-epochs spent (min–max) | export test, median | regret, median | "
             "− FIFO + random, mean [95 % t CI] |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows.values():
        vs = r["vs_fifo"]
        lines.append(f"| {r['budget']} | {r['method']} | "
                     + (f"top {r['top_k']} × {r['seeds']}" if r["top_k"] else "off")
                     + f" | {r['total_epochs'][0]}–{r['total_epochs'][1]} | {pct(r['export_test_median'])} | "
                     f"{pts(r['regret_median'])} | "
                     + (f"{pts(vs['mean'])} [{pts(vs['t_lo'])}, {pts(vs['t_hi'])}] |" if vs else "— |"))
    return "\n".join(lines)


def sweep_table(sweep: dict, budgets: dict) -> str:
    lines = ["| ASHA | method | budget | export test, median | − FIFO + random, mean [95 % t CI] | "
             "− the main setting, mean [95 % t CI] | trials | "
             "unopposed / ties / decisions per search | weak trials to max_epochs (total) | trial 0 to end |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in sweep.items():
        for key, r in s["rows"].items():
            if r["top_k"]:
                continue
            vs, rg, vm = s["vs_fifo"][key], s["rungs"][r["method"]][r["budget"]], s["vs_main"][key]
            lines.append(f"| {name} | {r['method']} | {r['budget']} | {pct(r['export_test_median'])} | "
                         f"{pts(vs['mean'])} [{pts(vs['t_lo'])}, {pts(vs['t_hi'])}] | "
                         f"{pts(vm['mean'])} [{pts(vm['t_lo'])}, {pts(vm['t_hi'])}] | {r['trials_median']:.0f} | "
                         f"{rg['unopposed_per_search_median']:.0f} / {rg['ties_per_search_median']:.0f} / "
                         f"{rg['decisions_per_search_median']:.0f} | {rg['weak_trials_run_to_end_total']} | "
                         f"{rg['trial0_to_end']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
