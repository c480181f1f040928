"""Fixes from a new-user review of this round (each a unit test of one function)."""

from __future__ import annotations

import shlex

import yaml


def test_the_printed_resume_command_survives_a_shell(tmp_path):
    """An override with spaces and '<=' (a search.pick rule) is quoted: pasted into a shell, the command
    gives the search the same arguments (before, '<= 2' became a redirection from a file named 2)."""
    from tune_cifar.search.storage import SEARCH_FILE, RunPaths, resume_command

    overrides = ["search.pick=max accuracy/val where model/latency_ms <= 2", "data.train_subset=1000"]
    run = tmp_path / "exp" / "2026-01-01_00-00-00"
    run.mkdir(parents=True)
    (run / SEARCH_FILE).write_text(yaml.safe_dump({"space_file": "/x/my space.yaml", "overrides": overrides}))
    paths = RunPaths(experiment="exp", name=run.name, storage=str(tmp_path / "exp"), local=run)
    words = shlex.split(resume_command(paths))
    assert words[:3] == ["python", "-m", "tune_cifar.search"]
    assert words[3:] == ["/x/my space.yaml", *overrides, "--resume"]


def test_predictions_of_a_pareto_member_go_beside_the_front_not_into_it(tmp_path):
    """The search replaces the whole pareto/ folder at its next export: predict's default output for a
    member must not live inside it (it would be deleted); a normal export's goes beside the export."""
    from tune_cifar.predict.loading import _home_of_export

    member = tmp_path / "exp" / "pareto" / "1_abc"
    member.mkdir(parents=True)
    assert _home_of_export(member) == (tmp_path / "exp").resolve()
    best = tmp_path / "exp" / "best"
    best.mkdir()
    assert _home_of_export(best) == (tmp_path / "exp").resolve()


def test_resume_check_sees_user_changes_not_a_newer_release_defaults():
    """A run recorded by the previous release (no search.pick key, synch recorded as False) is resumed by
    this one; a value the user changed is still named."""
    from tune_cifar.search.storage import _diff

    old = {"search": {"num_samples": 8, "scheduler": {"name": "asha", "synch": False}}}
    now = {"search": {"num_samples": 8, "pick": None, "scheduler": {"name": "asha", "synch": None}}}
    assert _diff(old, now) == []
    changed = {"search": {"num_samples": 9, "pick": None, "scheduler": {"name": "asha", "synch": None}}}
    assert _diff(old, changed) == ["search.num_samples: 8 -> 9"]


def test_resume_check_names_a_missing_section():
    """A stored record without a section (None) against this command's section is a difference."""
    from tune_cifar.search.storage import _diff

    assert _diff({"base": None}, {"base": {"model": {"name": "x"}}}) == ["base: None -> {'model': {'name': 'x'}}"]
