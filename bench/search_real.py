"""Real searches (not replayed) confirming issue 18's headline: ASHA + TPE at half FIFO + random's budget.

    nice -n 19 python bench/search_real.py [--seeds 0 1 2 3 4] [--budget 32] [--fraction 0.5]
                                           [--images 2000] [--max-epochs 4] [--concurrency 2] [--reeval]
                                           [--work /tmp/search_real] [--out bench/data/search_real.json]
    python bench/search_real.py --report    # the table again from the JSON, no search

Each search is what a user runs: ``python -m tune_cifar.search SPACE.yaml run.seed=S search.searcher.seed=S
search.experiment=... --output-dir WORK`` in a subprocess (Ray started by the search, real training on
Fashion-MNIST from ``/usr/share/datasets/fashion-mnist``, offline). SPACE.yaml is ``search_spaces/cpu_small.yaml``
with its ``params`` as they are and its ``base`` and ``search`` blocks replaced per method (written into WORK):
``--images`` training images, 2,000 validation and 2,000 test images, ``--max-epochs`` epochs per trial,
``--concurrency`` trials at a time, 1 CPU each. Arms (issue 18's headline, both plain: ``search.final.top_k: 0``):

- ``fifo_random``: FIFO + random sampling, ``search.budget.trial_epochs`` = ``--budget``;
- ``asha_tpe``: ASHA (grace period 1, reduction factor 3: the defaults BENCHMARKS.md chose) + TPE (4 start-up
  trials, as cpu_small), budget = ``--fraction`` x ``--budget``;
- ``--reeval`` adds ``asha_tpe_reeval``: the same at the same budget with ``search.final: {top_k: 2, seeds: 1}``
  reserved out of it (``budget_share`` 0.5: two runs of max_epochs). Not run yet (BENCHMARKS.md).

Pairing: searcher seed S (``search.searcher.seed``) and ``run.seed`` = 1000 + S (the validation split, the data
subsets and the training draws; the same for every arm of seed S, different across seeds), so arms of one seed
differ only by the method. The budget rule is the search's own (running trials finish: a search may overshoot
by less than one trial's epochs; the epochs actually trained are recorded).

Read per search: the export's **test** accuracy (``<work>/<experiment>/best/metrics.json``, the test set scored
at export), its validation reading (``best.json``), trial-epochs trained and trials started (``results.csv``),
wall time (context only: the machine is shared). Per arm against ``fifo_random``: paired differences by seed,
mean with a 95 % Student t interval, median, wins/ties/losses. The JSON is written after every search; a rerun
skips the (arm, seed) searches it holds (``--fresh``: all again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "cpu_small.yaml"
BASELINE = "fifo_random"

# Student's t 97.5 % quantiles, df 1..30 (a 5-seed interval has df 4: the normal's 1.96 would be 30 % short)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a t interval needs 2 values at least")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959963985  # Cornish-Fisher expansion beyond the table (within 0.0002 for df > 30)
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired(diffs: list[float]) -> dict:
    """Mean of paired differences with a 95 % t interval, median, wins/ties/losses."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    half = t975(n - 1) * statistics.stdev(diffs) / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half, "median": statistics.median(diffs),
            "wins": sum(d > 1e-9 for d in diffs), "ties": sum(abs(d) <= 1e-9 for d in diffs),
            "losses": sum(d < -1e-9 for d in diffs)}


def arms(budget: int, fraction: float, max_epochs: int, reeval: bool) -> dict[str, dict]:
    """Each arm's ``search`` block (what a user would write in the space file)."""
    small = int(round(budget * fraction))
    common = {"metric": "accuracy/val", "resources": {"cpu": 1, "gpu": 0}, "checkpoints_to_keep": 1}
    asha = {"name": "asha", "max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 3}
    tpe = {"name": "tpe", "n_startup_trials": 4}
    out = {
        "fifo_random": {**common, "budget": {"trial_epochs": budget}, "final": {"top_k": 0},
                        "scheduler": {"name": "fifo", "max_epochs": max_epochs}, "searcher": {"name": "random"}},
        "asha_tpe": {**common, "budget": {"trial_epochs": small}, "final": {"top_k": 0},
                     "scheduler": asha, "searcher": tpe},
    }
    if reeval:
        out["asha_tpe_reeval"] = {**common, "budget": {"trial_epochs": small},
                                  "final": {"top_k": 2, "seeds": 1, "budget_share": 0.5},
                                  "scheduler": asha, "searcher": tpe}
    return out


def write_space(work: Path, arm: str, search: dict, images: int) -> Path:
    space = yaml.safe_load(SPACE.read_text())
    space["base"] = ["data=fashion_mnist", "model=small_cnn", f"data.train_subset={images}",
                     "data.val_subset=2000", "data.test_subset=2000", "optimizer.scheduler.name=cosine"]
    space["search"] = search
    path = work / f"space_{arm}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def read_run(exp_dir: Path) -> dict:
    """What one finished search left: the export's test accuracy (``best/metrics.json``, scored on the test set
    at export), its validation reading, and the run's trials and trial-epochs (the run folder's ``best.json``)."""
    metrics = json.loads((exp_dir / "best" / "metrics.json").read_text())
    runs = sorted(p for p in exp_dir.iterdir() if p.is_dir() and (p / "best.json").exists())  # one: a fresh experiment
    run = json.loads((runs[-1] / "best.json").read_text())
    return {"test_acc": 100 * float(metrics["accuracy/test"]), "val_acc": 100 * float(metrics["accuracy/val"]),
            "trials": run["trials"], "trial_epochs": run["trial_epochs"], "exported": run.get("hyperparameters"),
            "reeval": metrics.get("reeval")}


def run_search(arm: str, seed: int, space: Path, work: Path) -> dict:
    exp = f"real_{arm}_s{seed}"
    shutil.rmtree(work / exp, ignore_errors=True)  # a half-run search of ours from an interrupted rerun
    cmd = [sys.executable, "-m", "tune_cifar.search", str(space), f"run.seed={1000 + seed}",
           f"search.searcher.seed={seed}", f"search.experiment={exp}", "--output-dir", str(work)]
    t0 = time.monotonic()
    log = work / f"{exp}.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=work, stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}).returncode
    wall = time.monotonic() - t0
    row = {"arm": arm, "seed": seed, "run_seed": 1000 + seed, "rc": rc, "wall_s": round(wall, 1),
           "command": " ".join(cmd[1:])}
    if rc != 0:
        row["error"] = log.read_text()[-2000:]
        return row
    row.update(read_run(work / exp))
    return row


def analyse(rows: list[dict]) -> dict:
    ok = {(r["arm"], r["seed"]): r for r in rows if r.get("rc") == 0}
    names = list(dict.fromkeys(r["arm"] for r in rows))
    # only seeds whose every arm finished: a run stopped between the arms of a seed leaves its seed out
    complete = sorted(s for s in {s for (_, s) in ok} if all((arm, s) in ok for arm in names))
    out = {}
    for arm in names:
        seeds = complete
        accs = [ok[(arm, s)]["test_acc"] for s in seeds]
        res = {"seeds": seeds, "test_median": statistics.median(accs) if accs else None,
               "test_mean": statistics.fmean(accs) if accs else None,
               "trials_median": statistics.median(ok[(arm, s)]["trials"] for s in seeds) if seeds else None,
               "epochs_median": statistics.median(ok[(arm, s)]["trial_epochs"] for s in seeds) if seeds else None,
               "wall_median": statistics.median(ok[(arm, s)]["wall_s"] for s in seeds) if seeds else None}
        if arm != BASELINE and len(seeds) >= 2:
            res["vs_baseline"] = paired([ok[(arm, s)]["test_acc"] - ok[(BASELINE, s)]["test_acc"] for s in seeds])
        out[arm] = res
    return out


def table(rows: list[dict], a: dict, budgets: dict) -> str:
    lines = ["| arm | budget (trial-epochs) | seeds | export test acc, mean / median | "
             "− FIFO + random: mean [95 % t CI] | median diff | W/T/L | trials, median | "
             "trial-epochs trained, median | wall s, median |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, r in a.items():
        v = r.get("vs_baseline")
        paired_cells = (f"{v['mean']:+.2f} [{v['lo']:+.2f}, {v['hi']:+.2f}] | {v['median']:+.2f} | "
                        f"{v['wins']}/{v['ties']}/{v['losses']}") if v else "— | — | —"
        lines.append(f"| {arm} | {budgets.get(arm, '?')} | {len(r['seeds'])} | {r['test_mean']:.2f} / "
                     f"{r['test_median']:.2f} | {paired_cells} | {r['trials_median']:g} | {r['epochs_median']:g} | "
                     f"{r['wall_median']:.0f} |")
    per_seed = ["", "| seed | " + " | ".join(a) + " |", "|---:|" + "---:|" * len(a)]
    ok = {(r["arm"], r["seed"]): r for r in rows if r.get("rc") == 0}
    for s in sorted({r["seed"] for r in rows}):
        cells = [f"{ok[(arm, s)]['test_acc']:.2f} ({ok[(arm, s)]['trials']} trials)" if (arm, s) in ok else "failed"
                 for arm in a]
        per_seed.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines + per_seed)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", type=int, default=32, help="FIFO + random's trial-epochs")
    p.add_argument("--fraction", type=float, default=0.5, help="ASHA + TPE's share of --budget")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--reeval", action="store_true", help="a third arm: ASHA + TPE with re-evaluation")
    p.add_argument("--work", type=Path, default=Path("/tmp/search_real"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "search_real.json")
    p.add_argument("--report", action="store_true", help="print the table from --out, run nothing")
    p.add_argument("--fresh", action="store_true", help="run every search again")
    args = p.parse_args(argv)

    doc = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {"rows": []}
    if not args.report:
        plan = arms(args.budget, args.fraction, args.max_epochs, args.reeval)
        for search in plan.values():
            search["max_concurrent_trials"] = args.concurrency
        args.work.mkdir(parents=True, exist_ok=True)
        spaces = {arm: write_space(args.work, arm, search, args.images) for arm, search in plan.items()}
        doc["setup"] = {"budget": args.budget, "fraction": args.fraction, "images": args.images,
                        "max_epochs": args.max_epochs, "concurrency": args.concurrency,
                        "budgets": {arm: s["budget"]["trial_epochs"] for arm, s in plan.items()},
                        "spaces": {arm: yaml.safe_load(path.read_text()) for arm, path in spaces.items()}}
        done = {(r["arm"], r["seed"]) for r in doc["rows"] if r.get("rc") == 0}
        doc["rows"] = [r for r in doc["rows"] if r.get("rc") == 0]
        for seed in args.seeds:  # seed by seed, so a stopped run holds complete pairs
            for arm in plan:
                if (arm, seed) in done:
                    continue
                row = run_search(arm, seed, spaces[arm], args.work)
                print(f"seed {seed} {arm}: rc {row['rc']}, test {row.get('test_acc', float('nan')):.2f}, "
                      f"{row.get('trials')} trials, {row.get('trial_epochs')} trial-epochs, {row['wall_s']:.0f} s",
                      flush=True)
                doc["rows"].append(row)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_suffix(".tmp")
                tmp.write_text(json.dumps(doc, indent=1))
                tmp.replace(args.out)
    doc["analysis"] = analyse(doc["rows"])
    if not args.report:
        args.out.write_text(json.dumps(doc, indent=1))
    print(table(doc["rows"], doc["analysis"], doc.get("setup", {}).get("budgets", {})))
    return doc


if __name__ == "__main__":
    main()
