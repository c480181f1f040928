"""Where a search's wall time goes, against its compute floor (issue 19).

    python bench/search_overhead.py --rounds 5                       # the figures in BENCHMARKS.md
    python bench/search_overhead.py --rounds 1 --variant 1batch      # quick look
    python bench/search_overhead.py --rounds 1 -- data.train_subset=1000 search.num_samples=4   # smaller

Each round runs, for each variant, the search as a user does (``python -m tune_cifar.search cpu_small``
in a subprocess, every extra argument after ``--`` added to its command line) with
``TUNE_CIFAR_TIMELINE`` set (tune_cifar/timeline.py: the driver and every trial append timestamps of
their stages to one file), then its **compute floor**: the same trials (each trial's sampled config from
its ``params.json``, as many epochs as it ran) in a plain PyTorch loop (training steps with the same
augmentation and optimizer, then the validation steps with the same metrics) on as many processes as the
search ran trials at once, with as many threads each; imports and data loading are not timed, only the
loop (from all processes ready to the last trial done). Variants alternate within a round:

- ``demo``: ``cpu_small`` as it stands (8 trials, ASHA, 2 at a time, 4,000 training images);
- ``1batch``: the same with 1-batch epochs (``trainer.limit_train_batches=1 trainer.limit_val_batches=1``):
  what a fast GPU trial looks like to the driver, nearly all of it overhead.

Printed per variant: every phase in wall seconds (median and min-max over the rounds) so that the
rows add up to the search's wall time. While trials run, the time of the ``max_concurrent_trials`` lanes
is split into stages (lane-seconds / lanes; "lanes idle" is what no trial process used), so a row
reads as the wall time it costs. Also: launch -> first report, a trial's set-up in a fresh and in a reused
worker, checkpoint writes as a share of an epoch, overhead per trial, wall / floor. The load average is
printed with each round: on a shared machine read the figures with it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tune_cifar.timeline import TIMELINE_ENV, now  # noqa: E402 - light: no torch

warnings.filterwarnings("ignore")
SPACE = "cpu_small"
VARIANTS = {"demo": [], "1batch": ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]}


# --------------------------------------------------------------------------- the search, timed


def run_search(out: Path, variant: str, extra: list[str], name: str, python: str = sys.executable) -> dict:
    """The search in a subprocess with the timeline on; returns launch/exit times, the events, the run folder."""
    timeline = out / f"{name}.timeline.jsonl"
    env = {**os.environ, TIMELINE_ENV: str(timeline)}
    cmd = [python, "-m", "tune_cifar.search", SPACE, *VARIANTS[variant], *extra,
           f"search.experiment={name}", "--output-dir", str(out / "outputs")]
    log = out / f"{name}.log"
    launch = now()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=out, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    end = now()
    if rc != 0:
        raise SystemExit(f"search {name} failed (exit {rc}); see {log}")
    events = [json.loads(line) for line in timeline.read_text().splitlines() if line.strip()]
    run_dir = Path(json.loads((next((out / "outputs" / name).glob("*/best.json"))).read_text())["run_dir"])
    return {"launch": launch, "exit": end, "events": sorted(events, key=lambda e: e["t"]), "run_dir": run_dir,
            "cmd": cmd}


def _spans(events, start: str, end: str) -> list[float]:
    return [b["t"] - a["t"] for a, b in zip(events, events[1:]) if a["event"] == start and b["event"] == end]


def decompose(run: dict, lanes: int) -> dict:
    """Wall-time phases of one search (seconds); rows add up to launch -> exit."""
    ev, launch, exit_t = run["events"], run["launch"], run["exit"]
    driver = next(e["pid"] for e in ev if e["event"] == "driver_main")
    at = {e["event"]: e["t"] for e in ev if e["pid"] == driver}  # the driver's stages, each once
    rows: dict[str, float] = {}

    def phase(name, a, b):
        rows[name] = rows.get(name, 0.0) + max(0.0, b - a)

    phase("interpreter and imports (driver)", launch, at["driver_main"])
    phase("config, checks, run folder", at["driver_main"], at["data_start"])
    phase("data decode", at["data_start"], at["ray_start"])
    phase("Ray start", at["ray_start"], at["ray_end"])
    phase("object-store put, resource checks", at["ray_end"], at["put_end"])
    # Tune's experiments: the search's trials, and any later one (search.final's re-evaluation: final.py)
    starts = [e["t"] for e in ev if e["pid"] == driver and e["event"] == "fit_start"]
    ends = [e["t"] for e in ev if e["pid"] == driver and e["event"] == "fit_end"]
    fits = list(zip(starts, ends))
    phase("Tuner set-up", at["put_end"], fits[0][0])
    for (_, end), (start, _) in zip(fits, fits[1:]):
        phase("between Tune experiments (results, re-evaluation plan, a new Tuner)", end, start)
    window = sum(b - a for a, b in fits)

    def fit_of(t: float) -> tuple[float, float]:  # the experiment a worker's event belongs to
        return next(((a, b) for a, b in reversed(fits) if a <= t), fits[0])

    # the trials: per worker process, its stages; lane-seconds / lanes
    lane: dict[str, float] = defaultdict(float)
    by_pid: dict[int, list[dict]] = defaultdict(list)
    for e in ev:
        if e["pid"] != driver:
            by_pid[e["pid"]].append(e)
    results = {(e["trial"], e["epoch"]): e["t"] for e in ev if e["event"] == "driver_result"}
    setups = {"fresh": [], "reused": []}
    epoch_s, ckpt_s, ckpt_bytes = [], [], []
    for pev in by_pid.values():
        first = next(e for e in pev if e["event"] == "trial_start")
        lane["fit start -> a worker's first trial (Tune start-up, worker start, imports)"] += first["t"] - max(first["process_start"],
                                                                                 fit_of(first["t"])[0])
        trial = epoch = epoch_start = written = set_up_from = None
        for a, b in zip(pev, pev[1:]):
            d, key = b["t"] - a["t"], (a["event"], b["event"])
            if a["event"] == "trial_start":
                trial, fresh, set_up_from = a["trial"], a["n"] == 1, a["t"]
            if b["event"] == "epoch_start" and set_up_from is not None:  # the trial's first epoch
                setups["fresh" if fresh else "reused"].append(b["t"] - set_up_from)
                set_up_from = None
            if key == ("trial_end", "trial_start"):
                lane["between trials (worker reused)"] += d
            elif key == ("trial_start", "fit_start"):
                lane["trial set-up: config, model, data module, Trainer"] += d
            elif key in (("fit_start", "sanity_start"), ("fit_start", "train_start"), ("sanity_end", "train_start"),
                         ("train_start", "epoch_start")):
                lane["trial set-up: Lightning's fit start (a restore)"] += d
            elif key == ("sanity_start", "sanity_end"):
                lane["sanity-check validation"] += d
            elif key == ("epoch_start", "val_start"):
                lane["training steps"] += d
                epoch, epoch_start = b["epoch"], a["t"]
            elif key == ("val_start", "val_end"):
                lane["validation steps"] += d
                epoch_s.append(b["t"] - epoch_start)
            elif key == ("val_end", "ckpt_written"):
                lane["checkpoint write"] += d
                ckpt_s.append(d)
                ckpt_bytes.append(b.get("bytes", 0))
                written = b["t"]
            elif a["event"] == "ckpt_written" and b["event"] in ("report_end", "fit_left", "trial_end"):
                got = results.get((trial, epoch + 1))
                if got is None or not written <= got <= b["t"]:
                    got = b["t"]
                lane["report: checkpoint copy, result to the driver"] += got - written
                if b["event"] == "report_end":
                    lane["report: the driver's answer (Tune's loop, scheduler, searcher)"] += b["t"] - got
                else:  # stopped at its report (ASHA): Tune's decision, the stop reaching the trial, Lightning's teardown
                    lane["trial stopped: the driver's decision, Lightning's teardown"] += b["t"] - got
            elif key == ("fit_left", "trial_end"):
                lane["trial end: memory release"] += d
            elif b["event"] == "fit_left":
                lane["trial end: Lightning's teardown, a stop"] += d
            elif a["event"] in ("report_end", "train_end") or b["event"] == "trial_end":
                lane["epoch end (Lightning)"] += d
            else:
                lane[f"other: {a['event']} -> {b['event']}"] += d
        lane["after the worker's last trial"] += max(0.0, fit_of(pev[-1]["t"])[1] - pev[-1]["t"])
    busy = sum(lane.values())
    lane["lanes idle (no trial process yet, or fewer trials than lanes)"] = max(0.0, lanes * window - busy)
    for k, v in lane.items():
        if v:
            rows[f"trials: {k}"] = v / lanes
    phase("Tune's end (state read), Ray shutdown", fits[-1][1], at["finish_start"])
    phase("results.csv and summary", at["finish_start"], at["results_written"])
    phase("plots", at["results_written"], at["plots_written"])
    phase("parameter importance", at["plots_written"], at["importance_done"])
    phase("export choice", at["importance_done"], at["scoring_start"])
    phase("final scoring (test split)", at["scoring_start"], at["scoring_end"])
    phase("export write", at["scoring_end"], at["export_written"])
    phase("driver exit", at["export_written"], exit_t)
    wall = exit_t - launch
    first_report = min((e["t"] for e in ev if e["event"] == "driver_result"), default=float("nan")) - launch
    trials = {e["trial"] for e in ev if e["event"] == "trial_start"}
    return {"rows": rows, "wall": wall, "window": window, "first_report": first_report,
            "setup_fresh": setups["fresh"], "setup_reused": setups["reused"],
            "epoch_s": epoch_s, "ckpt_s": ckpt_s, "ckpt_bytes": ckpt_bytes, "trials": len(trials),
            "unaccounted": wall - sum(rows.values())}


# --------------------------------------------------------------------------- the compute floor


def trial_jobs(run: dict) -> tuple[list[dict], dict, Path]:
    """(trials in the order they started, each with its config and the epochs it trained; the run's
    search.yaml; the run folder). Epochs are counted from the timeline (validations a trial ran), so a
    trial stopped early and a re-evaluation run (search.final, in ``<run>/reeval/``) count what they did."""
    import yaml

    run_dir = run["run_dir"]
    search = yaml.safe_load((run_dir / "search.yaml").read_text())
    order, epochs, current = [], defaultdict(int), {}
    for e in run["events"]:
        if e["event"] == "trial_start":
            current[e["pid"]] = e["trial"]
            if e["trial"] not in order:
                order.append(e["trial"])
        elif e["event"] == "val_start" and e["pid"] in current:
            epochs[current[e["pid"]]] += 1
    jobs = []
    for trial in order:
        params = next(run_dir.glob(f"**/trial_{trial}/params.json"))
        jobs.append({"trial": trial, "config": json.loads(params.read_text()), "epochs": epochs[trial]})
    return jobs, search, run_dir


def _floor_worker(space_args: list[str], threads: int, ready, jobs, done) -> None:
    import torch

    torch.set_num_threads(threads)
    from tune_cifar.data import ImageDataModule, load_data
    from tune_cifar.optim import Steps, build_optimizer, build_schedule
    from tune_cifar.search.space import load_space
    from tune_cifar.training import build_system

    space = load_space(SPACE, space_args)
    cfg0 = space.trial_config({})
    arrays = load_data(cfg0.data, cfg0.task.task)
    ready.wait()
    while True:
        job = jobs.get()
        if job is None:
            return
        t0 = time.perf_counter()
        cfg = space.trial_config(space.values(job["config"]))
        torch.manual_seed(cfg.run.seed)
        system = build_system(cfg, arrays)
        dm = ImageDataModule(cfg.data, arrays, seed=cfg.run.seed, device=torch.device("cpu"))
        dm.setup("fit")
        t = cfg.trainer
        train, val = dm.train_dataloader(), dm.val_dataloader()
        n_train = len(train) if t.limit_train_batches is None else min(len(train), int(t.limit_train_batches))
        n_val = len(val) if t.limit_val_batches is None else min(len(val), int(t.limit_val_batches))
        opt = build_optimizer(system.parameters(), cfg.optimizer)
        sched = build_schedule(opt, cfg.optimizer, Steps(total=n_train * t.max_epochs, per_epoch=n_train))
        gen = torch.Generator().manual_seed(0)
        for epoch in range(job["epochs"]):
            system.train()
            for i, (x, y) in enumerate(train):
                if i == n_train:
                    break
                loss = system.loss(system(dm.augment(x, gen)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            system.eval()
            with torch.no_grad():
                for i, (x, y) in enumerate(val):
                    if i == n_val:
                        break
                    logits = system(x)
                    system.loss(logits, y)
                    for m in system.val_metrics.values():
                        m.update(system.probabilities(logits), y.long())
                for m in system.val_metrics.values():
                    m.compute()
                    m.reset()
        done.put((job["trial"], time.perf_counter() - t0))


def compute_floor(jobs: list[dict], lanes: int, threads: int, space_args: list[str]) -> dict:
    """Wall seconds of the jobs' plain loops on ``lanes`` processes (taken in order as each frees)."""
    ctx = mp.get_context("spawn")
    ready, queue, done = ctx.Barrier(lanes + 1), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_floor_worker, args=(space_args, threads, ready, queue, done)) for _ in range(lanes)]
    for p in procs:
        p.start()
    for j in jobs:
        queue.put(j)
    for _ in procs:
        queue.put(None)
    ready.wait()  # every process has imported and loaded its data
    t0 = time.perf_counter()
    per_trial = dict(done.get() for _ in jobs)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return {"wall": wall, "per_trial": per_trial, "trial_epochs": sum(j["epochs"] for j in jobs)}


# --------------------------------------------------------------------------- rounds and the table


def _stat(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    med = statistics.median(values)
    return f"{med:.2f}" if len(values) == 1 else f"{med:.2f} ({min(values):.2f}-{max(values):.2f})"


def table(variant: str, columns: dict[str, list[dict]]) -> str:
    """One markdown table: a row per phase, a column per checkout (``now``, ``before``) of its rounds."""
    labels = list(columns)
    every = [r for rounds in columns.values() for r in rounds]
    names = list(dict.fromkeys(k for r in every for k in r["decomposition"]["rows"]))
    n = max(len(rounds) for rounds in columns.values())
    lines = [f"#### {variant}: {n} round(s), seconds, median (min-max)", "",
             "| phase | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]

    def row(name, f, fmt="{}"):
        cells = [fmt.format(_stat([f(r) for r in columns[label]])) for label in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    d = lambda r: r["decomposition"]  # noqa: E731
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    for k in names:
        row(k, lambda r, k=k: d(r)["rows"].get(k, 0.0))
    row("(rows vs wall: not accounted for)", lambda r: d(r)["unaccounted"])
    row("**search wall (launch -> exit)**", lambda r: d(r)["wall"], "**{}**")
    row("compute floor (plain loop, same trial-epochs, same concurrency)", lambda r: r["floor"]["wall"])
    row("**wall / floor**", lambda r: d(r)["wall"] / r["floor"]["wall"], "**{}**")
    row("overhead per trial: (wall - floor) / trials", lambda r: (d(r)["wall"] - r["floor"]["wall"]) / d(r)["trials"])
    row("launch -> first report", lambda r: d(r)["first_report"])
    row("trial set-up, fresh worker (trial start -> first epoch), median", lambda r: med(d(r)["setup_fresh"]))
    row("trial set-up, reused worker, median", lambda r: med(d(r)["setup_reused"]))
    row("checkpoint write / epoch (train + val), median %",
        lambda r: 100 * med([c / e for c, e in zip(d(r)["ckpt_s"], d(r)["epoch_s"])]))
    row("checkpoint file, KiB, median", lambda r: med(d(r)["ckpt_bytes"]) / 1024)
    row("trials", lambda r: d(r)["trials"])
    row("trial-epochs", lambda r: r["floor"]["trial_epochs"])
    lines.append("| load average (1 min) at the start of each round | " + " | ".join(
        ", ".join(f"{r['load'][0]:.1f}" for r in columns[label]) for label in labels) + " |")
    return "\n".join(lines)


def print_tables(results: dict[str, list[dict]]) -> None:
    """``results``: "<variant> <checkout>" -> rounds; one table per variant."""
    variants = list(dict.fromkeys(k.split()[0] for k in results))
    for variant in variants:
        columns = {k.split()[1]: v for k, v in results.items() if k.split()[0] == variant and v}
        print(table(variant, columns) + "\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variant", choices=("both", *VARIANTS), default="both")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", help="write every round's figures to this file")
    p.add_argument("--before", metavar="PYTHON", help="also run each search with this interpreter (e.g. another "
                   "worktree's .venv/bin/python, for a before/after comparison in the same rounds)")
    p.add_argument("extra", nargs="*", help="after --: more arguments for the search (e.g. search.num_samples=4)")
    p.add_argument("--tables", metavar="JSON", help="only print the tables of an earlier run's --json file")
    args = p.parse_args(argv)
    if args.tables:
        results = json.loads(Path(args.tables).read_text())
        print_tables(results)
        return results
    out = Path(args.out or tempfile.mkdtemp(prefix="search_overhead_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    variants = list(VARIANTS) if args.variant == "both" else [args.variant]
    pythons = {"now": sys.executable, **({"before": args.before} if args.before else {})}
    results: dict[str, list[dict]] = {f"{v} {label}": [] for v in variants for label in pythons}
    for r in range(args.rounds):
        for variant in variants if r % 2 == 0 else variants[::-1]:  # alternate which goes first
            for label in list(pythons) if r % 2 == 0 else list(pythons)[::-1]:
                load = os.getloadavg()
                run = run_search(out, variant, args.extra, f"{variant}_{label}_{r}", pythons[label])
                jobs, search, _ = trial_jobs(run)
                lanes = int(search["search"].get("max_concurrent_trials") or 1)
                threads = max(1, int(search["search"]["resources"]["cpu"]))
                dec = decompose(run, lanes)
                floor = compute_floor(jobs, lanes, threads, [*VARIANTS[variant], *args.extra])
                results[f"{variant} {label}"].append({"load": load, "decomposition": dec, "floor": floor})
                print(f"round {r + 1} {variant} {label}: load {load[0]:.1f}, wall {dec['wall']:.1f} s, floor "
                      f"{floor['wall']:.1f} s ({floor['trial_epochs']} trial-epochs, {lanes} lanes x {threads} "
                      f"thread(s)), first report {dec['first_report']:.1f} s", flush=True)
    print(f"\ncommand: python bench/search_overhead.py --rounds {args.rounds}"
          f"{' --variant ' + args.variant if args.variant != 'both' else ''}"
          f"{' --before ' + args.before if args.before else ''}"
          f"{' -- ' + ' '.join(args.extra) if args.extra else ''}\nruns in {out}\n")
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
