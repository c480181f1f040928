"""Searchers and schedulers over seeds, replayed on recorded learning curves (simulated time).

    python bench/search_seeds.py [--curves bench/data/curves.json] [--seeds 50] [--num-samples 16]
                                 [--concurrency 2] [--grace-period 1] [--reduction-factor 2]
                                 [--n-startup-trials 4] [--clock epochs|recorded] [--out bench/data/search_seeds]

What is real: every learning curve (``bench/record_curves.py``: each configuration of a grid over
cpu_small.yaml's parameters trained once on real Fashion-MNIST, validation and test accuracy per epoch).
What is replayed: the searches. Each method runs ``--num-samples`` trials, ``--concurrency`` at a time, over
the grid; a trial's epoch-k result is the recorded epoch-k value of its configuration, and it takes one
unit of simulated time (``--clock recorded``: the recorded seconds of that epoch instead). The real
libraries decide: Optuna's ``TPESampler`` (as ``tune_cifar.search.registry`` builds it:
multivariate, group, constant liar) or ``RandomSampler`` through ``study.ask``/``study.tell``, and Ray's
``ASHAScheduler`` through ``on_trial_add``/``on_trial_result``/``on_trial_complete`` (what Tune's
controller calls) with a minimal trial stand-in. Methods:

- ``fifo_random``: every trial runs ``max_epochs`` epochs; random search (the baseline).
- ``asha_random``: ASHA, random search.
- ``asha_tpe_before``: ASHA + TPE fed as Ray's ``OptunaSearch`` does (before issue 12 §1): per-epoch values
  reported while a trial continues, then every trial told COMPLETE with its last reported value (a trial
  ASHA stops: its rung value).
- ``asha_tpe``: ASHA + TPE after issue 12 §1: every epoch's value reported; a trial ASHA stops is told
  PRUNED, a trial that runs to ``max_epochs`` COMPLETE with its best epoch's value.

PBT is not replayed: its trials continue from another trial's weights with new hyperparameters, a curve
that no recording of single configurations contains.

Reported per method, over searcher seeds: the median and spread (min-max, IQR) of the best validation
accuracy so far (best trial at its best epoch: what the search exports) against cumulative trial-epochs,
at 25/30/50/100 % of FIFO's budget (``num_samples * max_epochs``), the trial-epochs each search used, and
the test accuracy of its export (the recorded test accuracy of the best trial's best epoch).
"""

from __future__ import annotations

import argparse
import heapq
import json
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
METRIC = "accuracy/val"
METHODS = ("fifo_random", "asha_random", "asha_tpe_before", "asha_tpe")
FRACTIONS = (0.25, 0.30, 0.50, 1.00)


class Curves:
    """The recorded curves, looked up by a configuration's parameters."""

    def __init__(self, doc: dict):
        self.grid, self.max_epochs = doc["grid"], doc["epochs"]
        self.by_key = {self.key(c["params"]): c["curve"] for c in doc["configs"]}

    @staticmethod
    def key(params: dict) -> tuple:
        return tuple(params[k] for k in ("optimizer.optimizer", "optimizer.lr", "optimizer.weight_decay",
                                         "data.train_batch_size", "model.model_name"))

    def suggest(self, trial) -> dict:
        """Define-by-run over the grid, as cpu_small.yaml's space: lr depends on the optimizer; lr and
        weight decay are ordinal indices into their log-spaced grid values (TPE's numeric kernel over them)."""
        g = self.grid
        opt = trial.suggest_categorical("optimizer.optimizer", g["optimizer.optimizer"])
        lrs = g["optimizer.lr"][opt]
        wds = g["optimizer.weight_decay"]
        return {"optimizer.optimizer": opt,
                "optimizer.lr": lrs[trial.suggest_int(f"optimizer.lr@{opt}", 0, len(lrs) - 1)],
                "optimizer.weight_decay": wds[trial.suggest_int("optimizer.weight_decay", 0, len(wds) - 1)],
                "data.train_batch_size": trial.suggest_categorical("data.train_batch_size",
                                                                   g["data.train_batch_size"]),
                "model.model_name": trial.suggest_categorical("model.model_name", g["model.model_name"])}

    def curve(self, params: dict) -> list[dict]:
        return self.by_key[self.key(params)]


class _Trial:
    """What Ray's ASHAScheduler reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def make_sampler(name: str, seed: int, n_startup_trials: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True,
                                      group=True, constant_liar=True)  # as tune_cifar.search.registry.tpe


def replay(method: str, curves: Curves, seed: int, num_samples: int = 16, concurrency: int = 2,
           grace_period: int = 1, reduction_factor: float = 2, n_startup_trials: int = 4,
           clock: str = "epochs") -> dict:
    """One search over the recorded curves; returns its events (cumulative trial-epochs, best so far)."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    np.random.seed(seed)  # ASHAScheduler.on_trial_add draws its bracket with np.random (one bracket here)
    asha = method != "fifo_random"
    sampler = make_sampler("random" if method.endswith("random") else "tpe", seed, n_startup_trials)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    max_epochs = curves.max_epochs
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max", max_t=max_epochs,
                               grace_period=grace_period, reduction_factor=reduction_factor) if asha else None)
    running: list = []  # heap of (time the next epoch ends, trial number)
    trials: dict[int, dict] = {}
    now, used, started = 0.0, 0, 0
    best = None  # (val, test, trial number, epoch)
    anytime: list[tuple[int, float]] = []

    def duration(t: dict) -> float:
        if clock == "epochs":
            return 1.0
        c, e = t["curve"], t["epoch"]
        return c[e]["time_s"] - (c[e - 1]["time_s"] if e else 0.0)

    def start() -> None:
        nonlocal started
        ot = study.ask()
        params = curves.suggest(ot)
        t = {"ot": ot, "params": params, "curve": curves.curve(params), "epoch": 0, "ray": _Trial(str(ot.number))}
        trials[ot.number] = t
        if scheduler:
            scheduler.on_trial_add(None, t["ray"])
        heapq.heappush(running, (now + duration(t), ot.number))
        started += 1

    while started < min(concurrency, num_samples):
        start()
    while running:
        now, number = heapq.heappop(running)
        t = trials[number]
        rec = t["curve"][t["epoch"]]
        t["epoch"] += 1
        used += 1
        value, epoch = rec["val_accuracy"], t["epoch"]
        if best is None or value > best[0]:
            best = (value, rec["test_accuracy"], number, epoch)
        anytime.append((used, best[0]))
        result = {"training_iteration": epoch, METRIC: value}
        if scheduler:
            stop = scheduler.on_trial_result(None, t["ray"], result) == TrialScheduler.STOP
        else:
            stop = epoch >= max_epochs
        values = [c["val_accuracy"] for c in t["curve"][:epoch]]
        if not stop:
            t["ot"].report(value, epoch)  # Ray's OptunaSearch.on_trial_result (only while a trial continues)
            heapq.heappush(running, (now + duration(t), number))
            continue
        if scheduler:
            scheduler.on_trial_complete(None, t["ray"], result)
        if method == "asha_tpe":
            t["ot"].report(value, epoch)  # §1: the last epoch's value is an intermediate value too
            if epoch < max_epochs:
                study.tell(t["ot"], state=TrialState.PRUNED)
            else:
                study.tell(t["ot"], max(values))
        else:  # Ray's OptunaSearch.on_trial_complete: COMPLETE with the last result (the rung value if stopped)
            study.tell(t["ot"], value)
        t["status"] = "completed" if epoch >= max_epochs else "stopped early"
        if started < num_samples:
            start()
    return {"method": method, "seed": seed, "trial_epochs": used, "anytime": anytime,
            "best_val": best[0], "export_test": best[1], "export": {"trial": best[2], "epoch": best[3],
                                                                    **trials[best[2]]["params"]},
            "completed": sum(t["status"] == "completed" for t in trials.values()),
            "states": {s.name: n for s in TrialState if (n := sum(ft.state == s for ft in study.trials))},
            "trials": [{"number": n, "epochs": t["epoch"], "status": t["status"], **t["params"]}
                       for n, t in sorted(trials.items())],
            "study": study,
            "distinct_configs": len({Curves.key(t["params"]) for t in trials.values()})}


def best_at(run: dict, budget: float) -> float:
    """Best validation accuracy once ``budget`` trial-epochs were used (a search that ended before: its final)."""
    values = [b for used, b in run["anytime"] if used <= budget]
    return values[-1] if values else float("nan")


def spread(values: list[float]) -> dict:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "min": float(min(values)), "max": float(max(values)),
            "q1": float(q1), "q3": float(q3)}


def summarise(runs: dict[str, list[dict]], fifo_budget: int) -> dict:
    out = {}
    for method, rs in runs.items():
        out[method] = {
            "at": {f"{int(f * 100)}%": spread([best_at(r, f * fifo_budget) for r in rs]) for f in FRACTIONS},
            "trial_epochs": spread([r["trial_epochs"] for r in rs]),
            "export_test": spread([r["export_test"] for r in rs]),
            "completed_trials": spread([r["completed"] for r in rs]),
        }
    target = out["fifo_random"]["at"]["100%"]["median"] - 0.005
    for method, rs in runs.items():
        reach = [next((u for u, b in r["anytime"] if b >= target - 1e-9), None) for r in rs]
        out[method]["epochs_to_fifo_median_minus_0.5"] = {
            "reached": sum(x is not None for x in reach), "of": len(rs),
            "median_fraction_of_fifo": (float(np.median([x if x is not None else np.inf for x in reach]))
                                        / fifo_budget)}
    return out


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table(summary: dict) -> str:
    """Markdown: median [IQR] of best val accuracy (%) at each budget, epochs used, export's test accuracy."""
    head = ("| method | " + " | ".join(f"best val @ {int(f * 100)} %" for f in FRACTIONS)
            + " | trial-epochs used | export test acc | reaches FIFO median − 0.5 |")
    lines = [head, "|---" + "|---:" * (len(FRACTIONS) + 3) + "|"]
    for method, s in summary.items():
        cells = [f"{pct(v['median'])} [{pct(v['q1'])}–{pct(v['q3'])}]" for v in s["at"].values()]
        te, ex, reach = s["trial_epochs"], s["export_test"], s["epochs_to_fifo_median_minus_0.5"]
        frac = reach["median_fraction_of_fifo"]
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {te['median']:.0f} [{te['q1']:.0f}–{te['q3']:.0f}]"
                     + f" | {pct(ex['median'])} [{pct(ex['q1'])}–{pct(ex['q3'])}]"
                     + f" | {reach['reached']}/{reach['of']} seeds, median at "
                     + (f"{100 * frac:.0f} % |" if np.isfinite(frac) else "never |"))
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], fifo_budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.arange(1, fifo_budget + 1)
    fig, ax = plt.subplots(figsize=(8, 5))
    for method, rs in runs.items():
        ys = np.array([[best_at(r, x) for x in xs] for r in rs])
        q1, med, q3 = np.nanpercentile(ys, [25, 50, 75], axis=0)
        end = int(np.median([r["trial_epochs"] for r in rs]))
        line, = ax.plot(xs[:end], 100 * med[:end], label=f"{method} (median, IQR band)",
                        ls="--" if method == "asha_tpe_before" else "-")  # dashed: visible where equal
        ax.fill_between(xs[:end], 100 * q1[:end], 100 * q3[:end], color=line.get_color(), alpha=0.2)
    fifo_final = np.median([r["best_val"] for r in runs["fifo_random"]])
    ax.axhline(100 * fifo_final - 0.5, color="grey", ls=":", lw=1, label="FIFO + random final median − 0.5")
    ax.axvline(0.3 * fifo_budget, color="grey", ls="--", lw=1, label="30 % of FIFO's trial-epochs")
    ax.set_xlabel("cumulative trial-epochs (simulated)")
    ax.set_ylabel("best validation accuracy so far (%)")
    lo = np.nanpercentile([best_at(r, 0.25 * fifo_budget) for rs in runs.values() for r in rs], 10)
    ax.set_ylim(100 * lo - 2, 100 * fifo_final + 2)
    ax.set_title(f"Replayed searches over {len(runs['fifo_random'])} seeds (recorded Fashion-MNIST curves)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--curves", type=Path, default=ROOT / "bench" / "data" / "curves.json")
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--n-startup-trials", type=int, default=4)
    p.add_argument("--clock", choices=("epochs", "recorded"), default="epochs")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "search_seeds",
                   help="writes OUT.json and OUT.png")
    args = p.parse_args(argv)

    curves = Curves(json.loads(args.curves.read_text()))
    runs = {m: [replay(m, curves, seed, args.num_samples, args.concurrency, args.grace_period,
                       args.reduction_factor, args.n_startup_trials, args.clock) for seed in range(args.seeds)]
            for m in METHODS}
    fifo_budget = args.num_samples * curves.max_epochs
    summary = summarise(runs, fifo_budget)
    grid_best = max(max(e["val_accuracy"] for e in c) for c in curves.by_key.values())
    fifo_final = summary["fifo_random"]["at"]["100%"]["median"]
    tpe, rnd = summary["asha_tpe"], summary["asha_random"]
    verdict = {
        "fifo_final_median": fifo_final,
        "asha_tpe_at_30pct_median": tpe["at"]["30%"]["median"],
        "goal_30pct_within_0.5": tpe["at"]["30%"]["median"] >= fifo_final - 0.005 - 1e-9,
        # TPE proposes from its few best trials (gamma: 1-2 of 16): if telling PRUNED/best-epoch values does
        # not change which trials those are, its proposals, and so the whole search, are the same as before §1
        "same_trials_as_before_section1": sum(
            [t["number"] for t in a["trials"]] == [t["number"] for t in b["trials"]]
            and [Curves.key(t) for t in a["trials"]] == [Curves.key(t) for t in b["trials"]]
            for a, b in zip(runs["asha_tpe"], runs["asha_tpe_before"])),
        "asha_tpe_minus_asha_random_points": {k: round(100 * (tpe["at"][k]["median"] - rnd["at"][k]["median"]), 2)
                                              for k in tpe["at"]},
        # paired by seed (TPE's start-up trials are the random sampler's draws for the same seed)
        "asha_tpe_vs_asha_random_wins_ties_losses": {
            f"{int(f * 100)}%": [int(np.sum(d > 1e-9)), int(np.sum(np.abs(d) <= 1e-9)), int(np.sum(d < -1e-9))]
            for f in FRACTIONS
            for d in [np.array([best_at(a, f * fifo_budget) - best_at(b, f * fifo_budget)
                                for a, b in zip(runs["asha_tpe"], runs["asha_random"])])]},
    }
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "configs": len(curves.by_key), "max_epochs": curves.max_epochs, "fifo_budget": fifo_budget,
           "grid_best_val": grid_best, "summary": summary, "verdict": verdict,
           "runs": {m: [{k: v for k, v in r.items() if k not in ("anytime", "study", "trials")} for r in rs]
                    for m, rs in runs.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    plot(runs, fifo_budget, args.out.with_suffix(".png"))
    print(f"{len(curves.by_key)} recorded configurations, {curves.max_epochs} epochs; best of the grid "
          f"{pct(grid_best)} %; {args.seeds} seeds, {args.num_samples} trials, {args.concurrency} at a time, "
          f"FIFO budget {fifo_budget} trial-epochs, clock {args.clock}")
    print(table(summary))
    print(json.dumps(verdict, indent=1))
    return out


if __name__ == "__main__":
    main()
