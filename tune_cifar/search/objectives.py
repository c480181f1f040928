"""Several objectives: the metric/mode lists, the Pareto front of a search's trials, and ``search.pick``.

- ``parse_objectives``: ``search.metric`` / ``search.mode`` as one name or a list (``[accuracy/val,
  model/latency_ms]`` with ``[max, min]``), checked: same lengths, known names, no name twice.
- ``pareto_front``: the trials no other trial dominates (at least as good on every objective, better on
  one), each objective in its own direction.
- ``PickRule``: which front member becomes ``best/``, e.g. ``max accuracy/val where model/latency_ms <= 5``.
  A tiny grammar read with regular expressions (never ``eval``)::

      RULE      := (max|min) METRIC [where CONDITION (and CONDITION)*]
      CONDITION := METRIC (<=|<|>=|>) NUMBER

No Ray, no torch: the settings check (before any trial), ``--debug`` and the reports read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import UserError

MODES = ("max", "min")


@dataclass(frozen=True)
class Objective:
    name: str  # a reported metric, e.g. accuracy/val or model/latency_ms
    mode: str  # max or min

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def as_list(value) -> list:
    """One name, a list of names, or None -> a list (None: empty)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_objectives(where: str, metric, mode, known: Iterable[str],
                     default_mode: Callable[[str], str]) -> list[Objective]:
    """``search.metric`` and ``search.mode`` (each a string or a list) as objectives, checked; a mode left
    out (None, or the whole list) is each metric's default (``default_mode``: min for a loss or a cost)."""
    metrics, modes = as_list(metric), as_list(mode)
    known = sorted(set(known))
    if not metrics:
        raise UserError(f"{where}: search.metric is empty; allowed: a metric or a list of them ({', '.join(known)})")
    if modes and len(modes) != len(metrics):
        raise UserError(f"{where}: search.metric has {len(metrics)} names ({', '.join(map(str, metrics))}) but "
                        f"search.mode has {len(modes)} ({', '.join(map(str, modes))}); allowed: one mode per metric")
    for m in metrics:
        if not isinstance(m, str) or m not in known:
            raise UserError(f"{where}: search.metric={m!r} is not allowed; allowed: {', '.join(known)}")
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    if twice:
        raise UserError(f"{where}: search.metric names {', '.join(twice)} twice; allowed: each objective once")
    modes = modes or [None] * len(metrics)
    out = []
    for m, d in zip(metrics, modes):
        d = d if d is not None else default_mode(m)
        if d not in MODES:
            which = f" (for {m})" if len(metrics) > 1 else ""
            raise UserError(f"{where}: search.mode={d!r}{which} is not allowed; allowed: max, min")
        out.append(Objective(m, d))
    return out


# --------------------------------------------------------------------------- the Pareto front


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def dominates(a: Mapping, b: Mapping, objectives: Sequence[Objective]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    at_least = all(not o.better(b[o.name], a[o.name]) for o in objectives)
    return at_least and any(o.better(a[o.name], b[o.name]) for o in objectives)


def pareto_front(rows: Sequence[Mapping], objectives: Sequence[Objective]) -> list[int]:
    """Indices (in ``rows``' order) of the rows no other row dominates, among those with a finite value of
    every objective; rows equal on every objective are all kept."""
    scored = [i for i, r in enumerate(rows) if all(_finite(r.get(o.name)) for o in objectives)]
    return [i for i in scored if not any(dominates(rows[j], rows[i], objectives) for j in scored if j != i)]


# --------------------------------------------------------------------------- search.pick

_NAME = r"[A-Za-z_][\w.\-]*(?:/[\w.\-]+)*"
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RULE = re.compile(rf"^\s*(?P<mode>max|min)\s+(?P<metric>{_NAME})(?:\s+where\s+(?P<conditions>.*?))?\s*$")
_CONDITION = re.compile(rf"^\s*(?P<metric>{_NAME})\s*(?P<op><=|>=|<|>)\s*(?P<value>{_NUMBER})\s*$")
_OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}
GRAMMAR = "'max|min METRIC [where METRIC OP NUMBER [and ...]]' with OP one of <=, <, >=, >"
EXAMPLE = "max accuracy/val where model/latency_ms <= 5"


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    def holds(self, row: Mapping) -> bool:
        v = row.get(self.metric)
        return _finite(v) and _OPS[self.op](float(v), self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class PickRule:
    """``search.pick``: the front member that is best by ``objective`` among those meeting ``conditions``."""

    objective: Objective
    conditions: tuple[Condition, ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text, known: Iterable[str], where: str = "search.pick") -> "PickRule":
        """Read a rule; ``known``: the metrics it may name (the objectives and what every trial reports)."""
        bad = f"{where}={text!r} is malformed; allowed: {GRAMMAR}, e.g. '{EXAMPLE}'"
        if not isinstance(text, str) or len(text) > 500:
            raise UserError(bad)
        m = _RULE.match(text)
        if not m:
            raise UserError(bad)
        conditions = []
        if m["conditions"] is not None:
            for part in re.split(r"\s+and\s+", m["conditions"]):
                c = _CONDITION.match(part)
                if not c:
                    raise UserError(f"{where}={text!r}: condition {part.strip()!r} is malformed; allowed: "
                                    f"METRIC OP NUMBER with OP one of <=, <, >=, >, e.g. 'model/latency_ms <= 5'")
                conditions.append(Condition(c["metric"], c["op"], float(c["value"])))
        known = sorted(set(known))
        for name in [m["metric"], *(c.metric for c in conditions)]:
            if name not in known:
                raise UserError(f"{where}={text!r} names {name}, which the search does not record; allowed: "
                                f"{', '.join(known)}")
        return cls(Objective(m["metric"], m["mode"]), tuple(conditions), " ".join(text.split()))

    @property
    def names(self) -> set[str]:
        """The metrics it reads."""
        return {self.objective.name, *(c.metric for c in self.conditions)}

    def satisfied(self, row: Mapping) -> bool:
        return _finite(row.get(self.objective.name)) and all(c.holds(row) for c in self.conditions)

    def choose(self, rows: Sequence[Mapping]) -> int | None:
        """Index of the best row meeting every condition (of equal ones the first); None if none does."""
        best = None
        for i, row in enumerate(rows):
            if self.satisfied(row) and (best is None or self.objective.better(row[self.objective.name],
                                                                                rows[best][self.objective.name])):
                best = i
        return best

    def why_none(self, rows: Sequence[Mapping]) -> str:
        """One line: which condition no row meets, with the closest value there is."""
        parts = []
        for c in self.conditions:
            values = [float(r[c.metric]) for r in rows if _finite(r.get(c.metric))]
            if not any(c.holds(r) for r in rows):
                near = (min if c.op in ("<=", "<") else max)(values) if values else None
                parts.append(f"{c} (closest: {near:.4g})" if near is not None else f"{c} (no values)")
        detail = "; ".join(parts) or "no trial meets all of its conditions at once"
        return f"search.pick '{self.text}': no trial on the Pareto front ({len(rows)}) satisfies it: {detail}"

    def __str__(self) -> str:
        return self.text or f"{self.objective.mode} {self.objective.name}"


def first_objective_rule(objectives: Sequence[Objective]) -> PickRule:
    """The rule without ``search.pick``: best by the first objective."""
    o = objectives[0]
    return PickRule(o, (), f"{o.mode} {o.name}")
