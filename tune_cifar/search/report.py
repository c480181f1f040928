"""Reports written into a search's run folder at the end (also after an interruption).

- ``learning_curves.png``: every trial's validation metric by epoch; trials stopped early by ASHA
  end in an ``x``, failed trials (error, non-finite loss) in a red ``v``; a PBT exploit is a dashed
  jump in the trial's colour from a star on its donor's point to the trial's next epoch.
- ``parallel_coordinates.png``: one axis per hyperparameter plus the metric, one line per trial,
  coloured by the metric (log axes for log-uniform parameters, categories spread evenly; an
  inactive conditional parameter leaves a gap). Drawn here from results.csv rather than by Optuna's
  ``plot_parallel_coordinate``, which shows COMPLETE trials only: under ASHA most trials are PRUNED,
  and failed or unfinished ones would vanish too.
- ``param_importances.png`` is Optuna's own plot: ``tune_cifar.search.importance``.

matplotlib only (Agg backend); no Ray import. TensorBoard logs are Tune's own, one
``events.out.tfevents.*`` per trial folder: ``tensorboard --logdir <run folder>``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import save_figure

CURVES = "learning_curves.png"
PARALLEL = "parallel_coordinates.png"
STOPPED = "stopped early"
FAILED = ("error", "failed")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _at(curve: pd.DataFrame | None, metric: str, epoch: int) -> float:
    """A trial's last reported value at this epoch (NaN if none)."""
    if curve is None or metric not in curve:
        return math.nan
    rows = curve[curve["training_iteration"] == epoch]
    return float(rows[metric].iloc[-1]) if len(rows) else math.nan


def learning_curves(curves: dict[str, pd.DataFrame], status: dict[str, str], metric: str, path: Path,
                    max_epochs: int | None = None, exploits: dict[str, list[dict]] | None = None) -> Path:
    """``curves``: trial id -> DataFrame with ``training_iteration`` and ``metric`` columns; ``exploits``
    (PBT): trial id -> [{donor, donor_epoch}, ...], drawn as a dashed jump from the donor's point."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab20")
    marks = {"stopped": False, "failed": False, "exploit": False}
    colors = {trial: cmap(i % 20) for i, trial in enumerate(sorted(curves))}
    for trial, events in (exploits or {}).items():
        for e in events:  # the trial continues from the donor's checkpoint at the donor's epoch
            x0, x1 = e["donor_epoch"], e["donor_epoch"] + 1
            y0, y1 = _at(curves.get(str(e["donor"])), metric, x0), _at(curves.get(trial), metric, x1)
            if math.isfinite(y0):
                xs, ys = ([x0, x1], [y0, y1]) if math.isfinite(y1) else ([x0], [y0])  # y1: none if it ended at x0
                ax.plot(xs, ys, "--*", color=colors.get(trial, "grey"), ms=10, lw=1, markevery=[0])
                marks["exploit"] = True
    for i, (trial, df) in enumerate(sorted(curves.items())):
        if df is None or not len(df) or metric not in df:
            continue
        d = (df[["training_iteration", metric]].dropna(subset=["training_iteration"])
             .drop_duplicates("training_iteration", keep="last").sort_values("training_iteration"))
        x, y = d["training_iteration"].to_numpy(float), d[metric].to_numpy(float)
        st = status.get(trial, "")
        color = colors[trial]
        # no line into the epoch after an exploit: the weights there are the donor's (the dashed jump)
        cuts = sorted({e["donor_epoch"] + 0.5 for e in (exploits or {}).get(trial, [])})
        lx, ly = np.insert(x, np.searchsorted(x, cuts), cuts), np.insert(y, np.searchsorted(x, cuts), np.nan)
        ax.plot(lx, ly, "-o", color=color, ms=3, lw=1.2, alpha=0.9, label=trial if len(curves) <= 12 else None)
        finite = np.isfinite(y)
        if st == STOPPED and finite.any():
            j = np.flatnonzero(finite)[-1]
            ax.plot(x[j], y[j], "x", color="black", ms=9, mew=2)
            marks["stopped"] = True
        elif st in FAILED:
            j = np.flatnonzero(finite)[-1] if finite.any() else None
            ax.plot(x[j] if j is not None else (x[-1] if len(x) else 0),
                    y[j] if j is not None else np.nanmin(y) if finite.any() else 0, "v", color="red", ms=9)
            marks["failed"] = True
    if marks["stopped"]:
        ax.plot([], [], "x", color="black", ms=9, mew=2, label="stopped early (ASHA)")
    if marks["failed"]:
        ax.plot([], [], "v", color="red", ms=9, label="failed (error / non-finite loss)")
    if marks["exploit"]:
        ax.plot([], [], "--*", color="grey", ms=10, lw=1, label="exploit (PBT): copies the starred trial's weights")
    ax.set_xlabel("epoch (training_iteration)")
    ax.set_ylabel(metric)
    if max_epochs:
        ax.set_xlim(0.8, max_epochs + 0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{metric} by epoch, {len(curves)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)  # whole or not at all (tune_cifar.atomic)
    plt.close(fig)
    return path


def _axis(values: pd.Series, log: bool):
    """Scale one column to [0, 1]; returns (scaled, tick positions, tick labels)."""
    v = values
    numeric = pd.to_numeric(v, errors="coerce")
    if v.notna().sum() and numeric[v.notna()].notna().all() and v.dropna().map(lambda x: not isinstance(x, bool)).all():
        num = numeric.astype(float)
        t = np.log10(num.where(num > 0)) if log else num
        finite = t.to_numpy(dtype=float)
        lo, hi = (np.nanmin(finite), np.nanmax(finite)) if t.notna().any() else (0.0, 1.0)
        span = hi - lo or 1.0
        scaled = (t - lo) / span
        ticks = [0.0, 1.0]
        fmt = (lambda z: f"{10 ** z:.3g}") if log else (lambda z: f"{z:.3g}")
        return scaled, ticks, [fmt(lo), fmt(hi)]
    cats = sorted({str(x) for x in v.dropna()})
    pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    scaled = v.map(lambda x: pos.get(str(x)) if pd.notna(x) else np.nan).astype(float)
    return scaled, list(pos.values()), cats


def parallel_coordinates(table: pd.DataFrame, params: list[str], metric: str, mode: str, path: Path,
                         log_params: set[str] = frozenset()) -> Path:
    """One vertical axis per parameter (and the metric), one line per trial coloured by the metric."""
    plt = _plt()
    cols = [p for p in params if p in table and table[p].notna().any()] + [metric]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(cols)), 5))
    scaled, ticks = {}, {}
    for c in cols:
        scaled[c], pos, labels = _axis(table[c], c in log_params)
        ticks[c] = (pos, labels)
    m = pd.to_numeric(table[metric], errors="coerce")
    finite = m[np.isfinite(m)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")
    x = np.arange(len(cols))
    for i in range(len(table)):
        y = np.array([scaled[c].iloc[i] for c in cols], dtype=float)
        val = m.iloc[i]
        color = cmap((val - lo) / ((hi - lo) or 1.0)) if math.isfinite(val) else (0.6, 0.6, 0.6, 0.6)
        ax.plot(x, y, "-o", color=color, lw=1.5, ms=3, alpha=0.85)  # NaN (inactive) leaves a gap
    for j, c in enumerate(cols):
        ax.axvline(j, color="black", lw=0.8)
        for p, label in zip(*ticks[c]):
            ax.text(j + 0.03, p, str(label), fontsize=7, va="center")
    ax.set_xticks(x, [c + (" (log)" if c in log_params else "") for c in cols], rotation=15, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(cols) - 0.6)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label=metric + " (grey: none)")
    ax.set_title(f"hyperparameters of {len(table)} trials, coloured by best {metric}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)  # whole or not at all (tune_cifar.atomic)
    plt.close(fig)
    return path


def write_reports(run_dir: Path, table: pd.DataFrame, curves: dict[str, pd.DataFrame], space,
                  exploits: dict[str, list[dict]] | None = None) -> list[Path]:
    """Both plots into ``run_dir``; returns their paths."""
    s = space.search
    status = dict(zip(table["trial_id"].astype(str), table["status"])) if len(table) else {}
    out = [learning_curves(curves, status, s.metric, Path(run_dir) / CURVES, s.scheduler.max_epochs, exploits)]
    params = [p.key for p in space.params]
    log_params = {p.key for p in space.params if any(d.kind == "loguniform" for d in p.dists.values())}
    if len(table):
        out.append(parallel_coordinates(table, params, s.metric, s.mode, Path(run_dir) / PARALLEL, log_params))
    return out
