"""Smoke test of the GPU benchmark's CPU path (tiny model, few images), as CI can run it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a benchmark script's CPU path (scripts/gpu_check.sh runs it on a GPU machine)
def test_gpu_epoch_bench_runs_on_cpu():
    out = subprocess.run(
        [sys.executable, "bench/gpu_epoch.py", "--images", "256", "--batch-size", "64", "--epochs", "2",
         "--provider", "builtin", "--model", "tiny_cnn"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "device=CPU" in out.stdout and "images=256 batch=64 precision=auto" in out.stdout
    rows = dict(re.findall(r"^\| (Lightning ClassificationSystem|plain PyTorch loop) \| (\d+) \| n/a \|$",
                           out.stdout, re.M))
    assert len(rows) == 2 and all(int(v) > 0 for v in rows.values())
    ratio = float(re.search(r"ratio Lightning/plain: ([\d.]+)", out.stdout).group(1))
    assert ratio == pytest.approx(int(rows["Lightning ClassificationSystem"]) / int(rows["plain PyTorch loop"]),
                                  rel=0.05)


def _synthetic_curves(path: Path, epochs: int = 4) -> dict:
    """A tiny grid whose curves rise with a per-configuration ceiling (what search_seeds.py replays)."""
    grid = {"optimizer.optimizer": ["sgd", "adamw"], "optimizer.lr": {"sgd": [0.01, 0.1], "adamw": [1e-3, 1e-2]},
            "optimizer.weight_decay": [1e-4], "data.train_batch_size": [32], "model.model_name": ["a", "b"]}
    configs, ceiling = [], 0.5
    for opt in grid["optimizer.optimizer"]:
        for lr in grid["optimizer.lr"][opt]:
            for model in grid["model.model_name"]:
                ceiling += 0.05
                params = {"optimizer.optimizer": opt, "optimizer.lr": lr, "optimizer.weight_decay": 1e-4,
                          "data.train_batch_size": 32, "model.model_name": model}
                curve = [{"epoch": e, "val_accuracy": round(ceiling * (1 - 0.5 ** e), 4), "val_loss": 1.0 / e,
                          "test_accuracy": round(ceiling * (1 - 0.5 ** e) - 0.01, 4), "time_s": float(e)}
                         for e in range(1, epochs + 1)]
                curve[-1]["val_accuracy"] = curve[-2]["val_accuracy"] - 0.02  # the best epoch is not the last
                configs.append({"params": params, "curve": curve})
    doc = {"grid": grid, "epochs": epochs, "configs": configs}
    path.write_text(json.dumps(doc))
    return doc


def test_search_seeds_replay_on_synthetic_curves(tmp_path, capsys):
    """The replay drives Optuna and Ray's ASHA: FIFO runs every epoch, ASHA stops some trials, and what
    Optuna is told differs before/after issue 12 §1 (COMPLETE rung values vs PRUNED + best-epoch values)."""
    import importlib.util

    doc = _synthetic_curves(tmp_path / "curves.json")
    spec = importlib.util.spec_from_file_location("search_seeds", ROOT / "bench" / "search_seeds.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    curves = bench.Curves(doc)
    fifo = bench.replay("fifo_random", curves, seed=0, num_samples=8, concurrency=2)
    assert fifo["trial_epochs"] == 8 * 4 and fifo["completed"] == 8 and fifo["states"] == {"COMPLETE": 8}
    assert fifo["best_val"] == max(b for _, b in fifo["anytime"])
    before = bench.replay("asha_tpe_before", curves, seed=0, num_samples=8, concurrency=2)
    after = bench.replay("asha_tpe", curves, seed=0, num_samples=8, concurrency=2)
    for run in (before, after):
        assert run["trial_epochs"] < 8 * 4 and run["completed"] < 8  # ASHA stopped some trials
    assert before["states"] == {"COMPLETE": 8}
    assert after["states"] == {"COMPLETE": after["completed"], "PRUNED": 8 - after["completed"]}
    for run in (before, after):
        for info, t in zip(run["trials"], run["study"].trials):
            vals = [c["val_accuracy"] for c in curves.curve(info)[: info["epochs"]]]
            assert t.intermediate_values == {e + 1: v for e, v in enumerate(vals if run is after else vals[:-1])}
            if run is before:  # told COMPLETE with its last result: the rung value when ASHA stopped it
                assert t.value == vals[-1]
            elif t.state.name == "COMPLETE":  # ran to the end: told its best epoch, not its last
                assert info["epochs"] == 4 and t.value == max(vals)
    assert any(info["epochs"] == 4 for info in after["trials"]), \
        "no completed trial peaked before its last epoch: the best-vs-last check did not run"

    # the command line, in this process (a second interpreter would import Ray and Optuna again: ~10 s)
    result = bench.main(["--curves", str(tmp_path / "curves.json"), "--seeds", "2", "--num-samples", "6",
                         "--out", str(tmp_path / "seeds")])
    assert json.loads((tmp_path / "seeds.json").read_text())["summary"] == result["summary"]
    assert (tmp_path / "seeds.png").stat().st_size > 0
    assert set(result["summary"]) == {"fifo_random", "asha_random", "asha_tpe_before", "asha_tpe"}
    assert result["summary"]["fifo_random"]["trial_epochs"]["median"] == 6 * 4
    assert "| asha_tpe |" in capsys.readouterr().out


def test_latency_bench_rounds():
    out = subprocess.run([sys.executable, "bench/latency.py", "--rounds", "2", "--runs", "20", "--warmup", "1",
                          "--models", "tiny_cnn"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = re.search(r"^\| tiny_cnn \| 510 \| 0\.37 \| ([\d.]+) \(([\d.]+)\), ([\d.]+) \(([\d.]+)\) \| "
                    r"\*\*([\d.]+)\*\* \(([\d.]+)-([\d.]+)\) \| (yes|no) ", out.stdout, re.M)
    assert row, out.stdout
    a, _, b, _, median, low, high = map(float, row.groups()[:7])
    assert low == min(a, b) and high == max(a, b) and low <= median <= high


def _seeded_curves(tmp_path: Path, epochs: int = 4) -> list[Path]:
    """The synthetic grid recorded with 3 training seeds as record_curves.py writes them: seed 42 in one
    file (no train_seed field, as curves.json), seeds 1 and 2 in another (curves_seeds.json); each seed
    moves a configuration's curve by up to ±2 points."""
    doc = _synthetic_curves(tmp_path / "one.json", epochs)
    doc["base"] = ["data=synthetic"]
    rng = np.random.default_rng(0)
    seeded = {**doc, "configs": []}
    for c in doc["configs"]:
        for seed in (1, 2):
            shift = float(rng.uniform(-0.02, 0.02))
            curve = [{**e, "val_accuracy": e["val_accuracy"] + shift, "test_accuracy": e["test_accuracy"] - shift}
                     for e in c["curve"]]
            seeded["configs"].append({"params": c["params"], "curve": curve, "train_seed": seed})
    paths = [tmp_path / "curves.json", tmp_path / "curves_seeds.json"]
    paths[0].write_text(json.dumps(doc))
    paths[1].write_text(json.dumps(seeded))
    return paths


def _load_bench(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_budget_replay_spends_the_same_budget(tmp_path, capsys):
    """bench/search_budget.py: every method spends exactly the budget (re-evaluation included), counted from
    the trials each replayed search ran; a smaller budget's search is the larger one's prefix (replayed
    for real here, not assumed); ASHA spends its savings on more trials; re-evaluation re-runs other seeds."""
    paths = _seeded_curves(tmp_path)
    bench = _load_bench("search_budget")
    curves = bench.SeededCurves([json.loads(p.read_text()) for p in paths])
    assert len(curves.runs) == 8 and all(list(v) == [1, 2, 42] for v in curves.runs.values())
    epochs = curves.max_epochs
    for method in bench.METHODS:
        for seed in range(3):
            big = bench.simulate(method, curves, seed, max_budget=40)
            for budget in (40, 16, 13):  # 13: the budget ends inside trials (they are cut)
                small = bench.simulate(method, curves, seed, max_budget=budget)
                ran = {n: t["epoch"] for n, t in small["trials"].items()}
                assert sum(ran.values()) == budget and all(0 < e <= epochs for e in ran.values())
                assert small["starts"] == big["starts"][:budget]  # the prefix the analysis reads
                ev = bench.evaluate(big, curves, budget)
                assert ev["search_epochs"] == ev["total_epochs"] == budget and ev["trials"] == len(ran)
                best = max(max(c["val_accuracy"] for c in small["trials"][n]["curve"][:e]) for n, e in ran.items())
                assert ev["export_val"] == best
                # re-evaluation: top 2 configurations x 2 other seeds, full epochs, inside the same budget
                if budget <= 2 * 2 * epochs:
                    continue
                rev = bench.evaluate(big, curves, budget - 2 * 2 * epochs, top_k=2, reeval_seeds=2)
                if rev["configs"] >= 2:
                    assert rev["total_epochs"] == budget and rev["reeval_epochs"] == 2 * 2 * epochs
                    runs = rev["reeval_runs"]  # n = 3: the original trial (maybe stopped early) and 2 other seeds
                    assert sorted(r["train_seed"] for r in runs) == [1, 2, 42]
                    assert [r["epochs"] for r in runs[1:]] == [epochs, epochs]
                    for r in runs:
                        curve = curves.runs[rev["export_key"]][r["train_seed"]]
                        assert r["val"] == max(e["val_accuracy"] for e in curve[: r["epochs"]])
                    assert rev["reeval_mean"] == pytest.approx(np.mean([r["val"] for r in runs]))
                    assert rev["export_val"] == max(r["val"] for r in runs)
            # the search command's rule (running trials finish): the budget, overshot by less than a trial
            run = bench.simulate(method, curves, seed, max_budget=13, rule="finish")
            spent = sum(t["epoch"] for t in run["trials"].values())
            assert 13 <= spent <= 13 + epochs - 1 and len(run["starts"]) == spent
            assert not [t for t in run["trials"].values() if t["status"] in ("cut", "running")]
    fifo = bench.simulate("fifo_random", curves, 0, max_budget=40)
    assert all(t["epoch"] == epochs for t in fifo["trials"].values()) and len(fifo["trials"]) == 40 // epochs
    asha = bench.simulate("asha_random", curves, 0, max_budget=40)
    assert len(asha["trials"]) > len(fifo["trials"])

    result = bench.main(["--curves", *map(str, paths), "--seeds", "4", "--fifo-trials", "6",
                         "--out", str(tmp_path / "budget")])
    assert json.loads((tmp_path / "budget.json").read_text())["budgets"] == {"50%": 12, "100%": 24}
    rows = result["analysis"]["rows"]
    for key, r in rows.items():  # every method, every re-evaluation reserve: the same total, every search
        assert r["total_epochs"] == [r["budget_epochs"]] * 2 or r["top_k"], key
        assert r["total_epochs"][1] <= r["budget_epochs"], key
    assert {k.split("|")[0] for k in rows} == set(bench.METHODS)
    assert "goal1" in result and "| asha_tpe |" in capsys.readouterr().out


def test_search_overhead_phases_add_up_to_the_wall_time():
    """bench/search_overhead.py's decomposition of a synthetic timeline (no search: the driver and one worker
    running two 1-epoch trials, the second stopped at its report): every second between launch and exit
    lands in exactly one row, lane time included, and the trial stages get their own rows."""
    bench = _load_bench("search_overhead")
    D, W = 1, 2  # driver and worker pids
    driver = [("driver_main", 1.0), ("data_start", 2.0), ("ray_start", 2.5), ("ray_end", 5.0), ("put_end", 5.2),
              ("fit_start", 6.0), ("fit_end", 20.0), ("finish_start", 21.0), ("results_written", 21.2),
              ("plots_written", 22.0), ("importance_done", 22.1), ("scoring_start", 22.2), ("scoring_end", 23.0),
              ("export_written", 23.1), ("driver_end", 23.2)]
    ev = [{"t": t, "pid": D, "event": e} for e, t in driver]
    ev += [{"t": 9.0, "pid": D, "event": "driver_result", "trial": "a", "epoch": 1},
           {"t": 15.0, "pid": D, "event": "driver_result", "trial": "b", "epoch": 1}]
    worker = [("trial_start", 7.0, {"trial": "a", "n": 1, "process_start": 5.5}), ("fit_start", 7.2, {}),
              ("train_start", 7.3, {}), ("epoch_start", 7.3, {"epoch": 0}), ("val_start", 8.0, {"epoch": 0}),
              ("val_end", 8.5, {"epoch": 0}), ("ckpt_written", 8.6, {"bytes": 1000}), ("report_end", 9.2, {"epoch": 0}),
              ("train_end", 9.3, {}), ("fit_left", 9.4, {}), ("trial_end", 9.6, {"trial": "a", "stopped": False}),
              ("trial_start", 10.0, {"trial": "b", "n": 2, "process_start": 5.5}), ("fit_start", 10.1, {}),
              ("train_start", 10.2, {}), ("epoch_start", 10.2, {"epoch": 0}), ("val_start", 14.0, {"epoch": 0}),
              ("val_end", 14.5, {"epoch": 0}), ("ckpt_written", 14.7, {"bytes": 1000}), ("fit_left", 15.5, {}),
              ("trial_end", 15.8, {"trial": "b", "stopped": True})]
    ev += [{"t": t, "pid": W, "event": e, **f} for e, t, f in worker]
    run = {"launch": 0.0, "exit": 24.0, "events": sorted(ev, key=lambda e: e["t"])}
    out = bench.decompose(run, lanes=2)
    rows = out["rows"]
    assert out["wall"] == 24.0 and abs(out["unaccounted"]) < 1e-9
    assert rows["trials: training steps"] == pytest.approx((0.7 + 3.8) / 2)
    assert rows["trials: validation steps"] == pytest.approx((0.5 + 0.5) / 2)
    assert rows["trials: checkpoint write"] == pytest.approx((0.1 + 0.2) / 2)
    assert rows["trials: trial stopped: the driver's decision, Lightning's teardown"] == pytest.approx(0.5 / 2)
    assert rows["trials: between trials (worker reused)"] == pytest.approx(0.4 / 2)
    assert rows["final scoring (test split)"] == pytest.approx(0.8) and rows["driver exit"] == pytest.approx(0.9)
    assert out["first_report"] == 9.0 and out["setup_fresh"] == [pytest.approx(0.3)]
    assert out["setup_reused"] == [pytest.approx(0.2)] and out["trials"] == 2


def test_search_real_pairs_by_seed_with_a_t_interval():
    """bench/search_real.py's statistics: differences paired by seed (a seed with a failed search is left out), a
    Student t interval (df 4 for 5 seeds, not the normal's 1.96), the median and wins/ties/losses."""
    bench = _load_bench("search_real")
    assert bench.t975(4) == pytest.approx(2.776, abs=1e-3)
    assert bench.t975(31) == pytest.approx(2.040, abs=2e-3)  # the expansion takes over from the table smoothly
    base = [80.0, 81.0, 79.5, 82.0, 80.5, 70.0]
    diffs = [1.0, 2.0, 3.0, 4.0, 5.0]
    rows = [{"arm": "fifo_random", "seed": s, "rc": 0, "test_acc": a, "trials": 8, "trial_epochs": 32,
             "wall_s": 1.0} for s, a in enumerate(base)]
    rows += [{"arm": "asha_tpe", "seed": s, "rc": 0, "test_acc": base[s] + d, "trials": 6, "trial_epochs": 18,
              "wall_s": 1.0} for s, d in enumerate(diffs)]
    rows.append({"arm": "asha_tpe", "seed": 5, "rc": 1, "wall_s": 1.0})
    a = bench.analyse(rows)
    assert a["fifo_random"]["seeds"] == a["asha_tpe"]["seeds"] == [0, 1, 2, 3, 4]
    v = a["asha_tpe"]["vs_baseline"]
    half = 2.776 * np.std(diffs, ddof=1) / np.sqrt(5)
    assert v["n"] == 5 and v["mean"] == pytest.approx(3.0)
    assert (v["lo"], v["hi"]) == (pytest.approx(3.0 - half, abs=1e-3), pytest.approx(3.0 + half, abs=1e-3))
    assert (v["median"], v["wins"], v["ties"], v["losses"]) == (pytest.approx(3.0), 5, 0, 0)
    assert "| asha_tpe | 16 | 5 |" in bench.table(rows, bench.analyse(rows), {"asha_tpe": 16})
