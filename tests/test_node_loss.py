"""Losing a Ray node, or the whole cluster, mid-search (issue 11, item 3), with bench/node_loss.py's
real multi-node cluster on this machine (a head and two worker nodes, each a ``ray start``)."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def bench():
    spec = importlib.util.spec_from_file_location("node_loss", ROOT / "bench" / "node_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def work():
    path = Path(tempfile.mkdtemp(prefix="nl", dir="/tmp"))  # short: Ray's socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_file(), reason="real Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
def test_a_lost_worker_node_costs_no_trial(work):
    """SIGKILL of every process of the worker node that runs a trial: the trial continues on the other
    node from its last checkpoint; the search ends with exit 0, every trial completed once, an export."""
    run = bench().lose_node(work)
    print(run)
    assert run["exit"] == 0 and run["trials"] == 2 and run["each_once"] and run["statuses"] == ["completed"]
    assert run["exported"] and run["recover_s"] is not None
    assert run["epochs_rerun"] <= 1  # at most the epoch in flight at the kill
    assert run["victim_epochs"][-1] == bench().EPOCHS


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_file(), reason="real Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
def test_the_whole_cluster_lost_then_resume_on_a_new_one(work):
    run = bench().lose_cluster(work)
    print(run)
    assert run["exit"] == 0 and run["trials"] == 2 and run["each_once"] and run["statuses"] == ["completed"]
    assert run["exported"]
