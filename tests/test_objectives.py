"""tune_cifar.search.objectives: metric/mode lists, the Pareto front, and search.pick rules."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tune_cifar.errors import UserError
from tune_cifar.search.objectives import (Objective, PickRule, dominates, first_objective_rule, pareto_front,
                                          parse_objectives)

KNOWN = ["accuracy/val", "loss/val", "model/params", "model/flops", "model/latency_ms"]
ACC, LAT = Objective("accuracy/val", "max"), Objective("model/latency_ms", "min")


def _mode(name):
    return "min" if name.startswith(("loss", "model/")) else "max"


def _parse(metric, mode=None):
    return parse_objectives("space.yaml", metric, mode, KNOWN, _mode)


# --------------------------------------------------------------------------- objectives


def test_one_metric_or_a_list():
    assert _parse("accuracy/val") == [ACC]
    assert _parse(["accuracy/val", "model/latency_ms"], ["max", "min"]) == [ACC, LAT]
    assert _parse(["accuracy/val", "model/latency_ms"]) == [ACC, LAT]  # modes default per metric
    assert _parse(["loss/val", "model/params"], [None, "max"]) == [Objective("loss/val", "min"),
                                                                   Objective("model/params", "max")]


@pytest.mark.parametrize("metric, mode, says", [
    (["accuracy/val", "model/latency_ms"], ["max"], "search.metric has 2 names (accuracy/val, model/latency_ms) "
                                                    "but search.mode has 1 (max)"),
    (["accuracy/val", "model/latency"], None, "search.metric='model/latency' is not allowed; allowed: accuracy/val"),
    (["accuracy/val", "accuracy/val"], None, "search.metric names accuracy/val twice"),
    (["accuracy/val"], ["up"], "search.mode='up' is not allowed; allowed: max, min"),
    (["accuracy/val", "loss/val"], ["max", "up"], "search.mode='up' (for loss/val) is not allowed; allowed: max, min"),
    ([], None, "search.metric is empty"),
])
def test_bad_objectives_are_one_line(metric, mode, says):
    with pytest.raises(UserError) as err:
        _parse(metric, mode)
    assert says in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("space.yaml: ")


# --------------------------------------------------------------------------- the Pareto front


def _row(acc, lat, **more):
    return {"accuracy/val": acc, "model/latency_ms": lat, **more}


def test_front_respects_each_direction():
    rows = [_row(0.9, 5.0), _row(0.8, 2.0), _row(0.85, 6.0), _row(0.7, 1.0), _row(0.9, 5.0), _row(0.6, 1.0)]
    # (0.85, 6) is dominated by (0.9, 5); (0.6, 1) by (0.7, 1); the two equal (0.9, 5) rows are both kept
    assert pareto_front(rows, [ACC, LAT]) == [0, 1, 3, 4]
    # the other way round on latency, the slowest are best
    assert pareto_front(rows, [ACC, Objective("model/latency_ms", "max")]) == [0, 2, 4]


def test_rows_without_a_finite_value_are_not_on_the_front():
    rows = [_row(math.nan, 0.1), _row(0.5, None), _row(0.4, 3.0), _row(0.99, math.inf)]
    assert pareto_front(rows, [ACC, LAT]) == [2]
    assert pareto_front([], [ACC, LAT]) == []


def test_front_is_non_dominated_and_complete_on_random_rows():
    rng = random.Random(0)
    rows = [_row(rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([1.0, 2.0, 3.0]), **{"model/params": rng.random()})
            for _ in range(60)]
    objectives = [ACC, LAT, Objective("model/params", "min")]
    front = pareto_front(rows, objectives)
    assert front
    for i, j in itertools.product(range(len(rows)), front):
        assert not dominates(rows[i], rows[j], objectives)  # nothing beats a member
    for i in set(range(len(rows))) - set(front):
        assert any(dominates(rows[j], rows[i], objectives) for j in front)  # every other row is beaten


# --------------------------------------------------------------------------- search.pick


def test_pick_rule_satisfied():
    rows = [_row(0.9, 7.0), _row(0.85, 4.0), _row(0.8, 2.0), _row(0.85, 4.5)]
    rule = PickRule.parse("max accuracy/val where model/latency_ms <= 5", KNOWN)
    assert rule.choose(rows) == 1  # of two equal accuracies under 5 ms, the first
    assert PickRule.parse("min  model/latency_ms where accuracy/val>0.8", KNOWN).choose(rows) == 1
    both = PickRule.parse("max accuracy/val where model/latency_ms < 4 and accuracy/val >= 0.5", KNOWN)
    assert both.choose(rows) == 2
    assert PickRule.parse("max accuracy/val", KNOWN).choose(rows) == 0
    assert PickRule.parse("max accuracy/val where model/latency_ms <= 4e0", KNOWN).choose(rows) == 1
    assert first_objective_rule([LAT, ACC]).choose(rows) == 2


def test_pick_rule_unsatisfiable_says_why():
    rows = [_row(0.9, 7.0), _row(0.8, 6.2)]
    rule = PickRule.parse("max accuracy/val where model/latency_ms <= 5", KNOWN)
    assert rule.choose(rows) is None
    assert rule.why_none(rows) == ("search.pick 'max accuracy/val where model/latency_ms <= 5': no trial on the "
                                   "Pareto front (2) satisfies it: model/latency_ms <= 5 (closest: 6.2)")
    # each condition alone is met, both together are not
    both = PickRule.parse("max accuracy/val where model/latency_ms <= 6.5 and accuracy/val > 0.85", KNOWN)
    assert both.choose(rows) is None and "no trial meets all of its conditions at once" in both.why_none(rows)
    # a member without the metric does not satisfy a rule on it
    assert PickRule.parse("max accuracy/val where model/params < 10", KNOWN).choose(rows) is None


@pytest.mark.parametrize("text, says", [
    ("accuracy/val where model/latency_ms <= 5", "is malformed; allowed: 'max|min METRIC [where"),
    ("max accuracy/val where model/latency_ms == 5", "condition 'model/latency_ms == 5' is malformed"),
    ("max accuracy/val where model/latency_ms <= five", "condition 'model/latency_ms <= five' is malformed"),
    ("max accuracy/val where __import__('os').system('x') <= 1", "is malformed"),
    ("max accuracy/val where", "is malformed"),
    ("max accuracy/val where model/latency_ms <= 5 or accuracy/val > 0", "is malformed"),
    ("max accuracy/val where latency <= 5", "names latency, which the search does not record; allowed: accuracy/val"),
    ("max acc/val", "names acc/val, which the search does not record"),
    (5, "is malformed"),
])
def test_bad_pick_rules_are_one_line(text, says):
    with pytest.raises(UserError) as err:
        PickRule.parse(text, KNOWN)
    assert says in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("search.pick=")
