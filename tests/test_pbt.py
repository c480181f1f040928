"""Population-based training: a mutation survives the restore of a donor's checkpoint, only keys that
can change mid-training are mutated, exploits are recorded in results.csv and the plot, the export
is a trial's own best checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl

from tune_cifar.training import KeepConfiguredHyperparameters
from tune_cifar.optim import lr_factor


class SaveAtFirstValidation(pl.Callback):
    """Saves the trainer's full state after the first epoch's validation, where Ray's
    TuneReportCheckpointCallback saves a trial's checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


class Probe(pl.Callback):
    """The optimizer's values at the first training step after the restore."""

    def __init__(self) -> None:
        self.seen = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen is None:
            sched = trainer.lr_scheduler_configs[0].scheduler
            self.seen = {"groups": [{k: v for k, v in g.items() if k != "params"}
                                    for g in trainer.optimizers[0].param_groups],
                         "step": sched.last_epoch, "base_lrs": list(getattr(sched, "base_lrs", [])),
                         "last_lr": sched.get_last_lr(), "total": int(trainer.estimated_stepping_batches),
                         "per_epoch": int(trainer.estimated_stepping_batches) // trainer.max_epochs}


def _donor_and_resume(tiny_cfg, tmp_path, schedule: list[str], keep: bool) -> dict:
    """Train with lr=0.1, momentum 0.9, weight decay 5e-4 and checkpoint after epoch 1; resume that
    checkpoint with lr=0.01, momentum 0.5, weight decay 1e-3 (a PBT exploit + explore)."""
    from tune_cifar.data import load_data
    from tune_cifar.training import fit as run_trial

    common = ["optimizer=sgd", "trainer.max_epochs=2", *schedule]
    donor = tiny_cfg(*common, "optimizer.lr=0.1", "optimizer.momentum=0.9", "optimizer.weight_decay=5e-4")
    arrays = load_data(donor.data, donor.task.task)
    ckpt = tmp_path / "donor.ckpt"
    run_trial(donor, arrays, None, [SaveAtFirstValidation(ckpt)])
    assert ckpt.is_file()

    mutated = tiny_cfg(*common, "optimizer.lr=0.01", "optimizer.momentum=0.5", "optimizer.weight_decay=1e-3")
    probe = Probe()
    run_trial(mutated, arrays, None, [*([KeepConfiguredHyperparameters()] if keep else []), probe], ckpt_path=ckpt)
    return {"cfg": mutated, **probe.seen}


@pytest.mark.parametrize("warmup", [0.0, 1.5])
def test_restored_optimizer_follows_the_new_config_under_a_cosine_schedule(tiny_cfg, tmp_path, warmup):
    seen = _donor_and_resume(tiny_cfg, tmp_path, ["optimizer.scheduler.name=cosine",
                                                   f"optimizer.scheduler.warmup_epochs={warmup}"], keep=True)
    sched = seen["cfg"].optimizer.scheduler
    assert seen["step"] == seen["per_epoch"] > 0  # resumed after one epoch of steps
    factor = lr_factor(seen["step"], seen["total"], int(warmup * seen["per_epoch"]), sched, seen["per_epoch"])
    assert 0 < factor < 1
    decay, no_decay = seen["groups"]
    for group in (decay, no_decay):
        assert group["lr"] == pytest.approx(0.01 * factor, rel=1e-9)  # the schedule factor of the new rate
        assert group["initial_lr"] == pytest.approx(0.01)
        assert group["momentum"] == 0.5
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert seen["base_lrs"] == pytest.approx([0.01, 0.01])
    assert seen["last_lr"] == pytest.approx([0.01 * factor] * 2)


def test_without_the_callback_the_checkpoint_undoes_the_mutation(tiny_cfg, tmp_path):
    """The trap the callback closes: Lightning restores the donor's lr, momentum and weight decay."""
    seen = _donor_and_resume(tiny_cfg, tmp_path, ["optimizer.scheduler.name=cosine"], keep=False)
    decay = seen["groups"][0]
    factor = lr_factor(seen["step"], seen["total"], 0, seen["cfg"].optimizer.scheduler, seen["per_epoch"])
    assert decay["lr"] == pytest.approx(0.1 * factor) and decay["momentum"] == 0.9
    assert decay["weight_decay"] == 5e-4 and seen["base_lrs"] == pytest.approx([0.1, 0.1])


def test_restored_optimizer_follows_the_new_config_under_onecycle(tiny_cfg, tmp_path):
    import torch

    seen = _donor_and_resume(tiny_cfg, tmp_path, ["optimizer.scheduler.name=onecycle"], keep=True)
    # OneCycleLR's rate at the restored step, computed by a fresh schedule with the new max_lr
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=seen["total"], cycle_momentum=False)
    for _ in range(seen["step"]):
        opt.step()
        ref.step()
    for group in seen["groups"]:
        assert group["max_lr"] == pytest.approx(0.01) and group["initial_lr"] == pytest.approx(0.01 / 25)
        assert group["lr"] == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        assert group["momentum"] == 0.5
    assert seen["groups"][0]["weight_decay"] == 1e-3
    assert not math.isclose(seen["groups"][0]["lr"], 0.01)  # mid-cycle, not the peak


# --------------------------------------------------------------------------- a real PBT search


def pbt_space(tmp_path: Path, data_root: Path, search: dict | None = None, params: dict | None = None,
              base: list | None = None) -> Path:
    import yaml

    doc = {
        "base": ["data=cifar10", f"data.dataset_path={data_root}", "data.download=false",
                 "data.val_fraction=0.25", "data.train_batch_size=32", "data.inference_batch_size=128",
                 "model=small_cnn", "model.model_name=tiny_cnn", "trainer.log_every_n_steps=1",
                 "optimizer=adamw", "optimizer.scheduler.name=none", *(base or [])],
        "params": params or {"optimizer.lr": {"loguniform": [1e-5, 0.05]},
                             "task.label_smoothing": {"uniform": [0.0, 0.2]}},
        "search": {"experiment": "pbt", "storage_path": str(tmp_path / "outputs"),
                   "scheduler": {"name": "pbt", "max_epochs": 3, "perturbation_interval": 1},
                   "searcher": {"name": "random", "seed": 0}, **(search or {})},
    }
    path = tmp_path / "pbt.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cifar_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar10_pbt")
    write_cifar10(root, n_train=600, n_test=100, seed=0)  # good and bad learning rates differ at epoch 1
    return root


@pytest.mark.slow
def test_pbt_search_exploits_keeps_the_mutation_and_exports_a_trials_own_best(tmp_path, data_root, capsys):
    """4 trials on 2 CPUs, as the bundled pbt_cpu_small: PBT is synchronous (issue 18), so no exploit
    compares a trial with one that is epochs ahead."""
    import json

    import numpy as np
    import pandas as pd
    import ray
    import torch

    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    strong, weak = {"optimizer.lr": 0.01}, {"optimizer.lr": 1e-5}
    path = pbt_space(tmp_path, data_root, {
        "num_samples": 4, "resources": {"cpu": 1}, "scheduler": {"name": "pbt", "max_epochs": 4, "perturbation_interval": 1},
        "searcher": {"name": "random", "seed": 0,
                     "points_to_evaluate": [strong, {"optimizer.lr": 0.005}, weak, {"optimizer.lr": 2e-5}]}})
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        out = run_search(load_space(path))
    finally:
        ray.shutdown()
    assert "PBT: synchronous, since the population of 4 trials is larger than the 2 that train at once" \
        in capsys.readouterr().out
    run_dir = Path(out["ray_dir"])
    table = pd.read_csv(out["results"])
    rows = {p.parent.name.removeprefix("trial_"): pd.read_csv(p) for p in run_dir.glob("trial_*/progress.csv")}
    events = [json.loads(line) for line in (run_dir / "pbt_exploits.jsonl").read_text().splitlines()]
    print(table.to_string(), *events, sep="\n")

    # Exploits happened; Ray's own log has each one, results.csv counts them and names the donors.
    assert events and len((run_dir / "pbt_global.txt").read_text().splitlines()) == len(events)
    # Synchronous: no exploit before every trial has reached the interval. A trial's function may report
    # one more epoch before Tune's pause takes effect, so the two sides differ by one interval at most
    # (asynchronous, a trial waiting for a CPU is compared with trials epochs ahead).
    assert all(abs(e["epoch"] - e["donor_epoch"]) <= 1 for e in events), events
    by_id = table.set_index("trial_id")
    assert by_id["exploits"].sum() == len(events) and set(by_id.index) == set(rows)
    for e in events:
        assert e["donor"] in by_id.index and e["donor"] in by_id.loc[e["trial_id"], "cloned_from"]
    for trial_id, trial_events in pd.DataFrame(events).groupby("trial_id"):  # its last config, not its donor's
        assert by_id.loc[trial_id, "optimizer.lr"] == pytest.approx(trial_events["config"].iloc[-1]["optimizer.lr"])
    assert (run_dir / "learning_curves.png").is_file()

    # The mutation survived the restore: the epoch after an exploit trained at the NEW config's rate,
    # not at the donor's rate restored with its optimizer state.
    # (An exploit of a trial already at max_epochs trains nothing after it: synchronous PBT can decide one
    # at the last interval, when the trial's function has already finished; README says so.)
    # (Nor does one decided just as the trial's function reported its next, last epoch.) An exploit trained
    # after it if its trial has more rows of the epoch after the donor's than it had trained when exploited.
    def rows_of_next_epoch(e) -> int:
        return int((rows[e["trial_id"]]["training_iteration"] == e["donor_epoch"] + 1).sum())

    trained_after = [e for e in events
                     if e["donor_epoch"] < 4 and rows_of_next_epoch(e) > (e["epoch"] > e["donor_epoch"])]
    assert trained_after, "every exploit copied a finished trial or came at the end: nothing trained after it"
    for e in trained_after:
        mine, donor = rows[e["trial_id"]], rows[e["donor"]]
        # the epoch after it: a trial exploited twice has several rows of that epoch number in its
        # progress.csv (one before an exploit, one after), so one of them, not the last, is this exploit's
        after = mine.loc[mine["training_iteration"] == e["donor_epoch"] + 1, "optimizer/lr"]
        donor_lr = donor.loc[donor["training_iteration"] == e["donor_epoch"], "optimizer/lr"].iloc[-1]
        assert any(math.isclose(lr, e["config"]["optimizer.lr"], rel_tol=1e-6) for lr in after), (e, list(after))
        assert not math.isclose(e["config"]["optimizer.lr"], donor_lr)
    # epochs trained, not inherited from donors
    assert out["trial_epochs"] == sum(len(r) for r in rows.values()) == table["epochs_trained"].sum()

    # The export: the top row's trial at its best epoch, from a checkpoint in that trial's own folder.
    from tune_cifar.checkpoint import read_checkpoint
    from tune_cifar.export import find_best, read_export

    best = table.iloc[0]
    exp = read_export(find_best(tmp_path / "outputs"))
    assert exp.metrics["trial_id"] == best["trial_id"] and exp.metrics["epoch"] == best["best_epoch"]
    assert exp.metrics["accuracy/val"] == pytest.approx(best["accuracy/val"])
    mine = rows[best["trial_id"]]
    at_best = mine[(mine["training_iteration"] == best["best_epoch"])
                   & np.isclose(mine["accuracy/val"], best["accuracy/val"])]
    own = read_checkpoint(run_dir / f"trial_{best['trial_id']}" / at_best["checkpoint_dir_name"].iloc[-1] / "model.ckpt")
    exported = exp.classifier.state_dict()  # its keys are those of every checkpoint (model.*, mean, std)
    assert any(k.startswith("model.") for k in exported)
    assert all(torch.equal(own["state_dict"][k], v) for k, v in exported.items())


# --------------------------------------------------------------------------- fast checks of the parts


@pytest.mark.parametrize("search, nodes, synch", [
    ({"num_samples": 4, "resources": {"cpu": 1}}, [{"CPU": 2.0}], True),  # pbt_cpu_small on 2 CPUs
    ({"num_samples": 4, "resources": {"cpu": 1}}, [{"CPU": 4.0}], False),  # all train at once
    ({"num_samples": 4, "resources": {"cpu": 0.5}}, [{"CPU": 2.0}], False),
    ({"num_samples": 4, "resources": {"cpu": 1}}, [{"CPU": 2.0}, {"CPU": 2.0}], False),  # two nodes
    ({"num_samples": 4, "resources": {"cpu": 1, "gpu": 0.5}}, [{"CPU": 16.0, "GPU": 1.0}], True),  # GPU slots
    ({"num_samples": 4, "resources": {"cpu": 1, "gpu": 0.5}}, [{"CPU": 16.0, "GPU": 2.0}], False),
    ({"num_samples": 4, "resources": {"cpu": 1}, "scheduler": {"synch": False}}, [{"CPU": 2.0}], False),  # forced
    ({"num_samples": 2, "resources": {"cpu": 1}, "scheduler": {"synch": True}}, [{"CPU": 2.0}], True),
])
def test_pbt_is_synchronous_when_the_population_exceeds_the_slots(tmp_path, data_root, capsys, monkeypatch,
                                                                  search, nodes, synch):
    from tune_cifar.search import pbt
    from tune_cifar.search.space import load_space

    scheduler_section = {"name": "pbt", "max_epochs": 3, "perturbation_interval": 1, **search.pop("scheduler", {})}
    space = load_space(pbt_space(tmp_path, data_root, {**search, "scheduler": scheduler_section}))
    monkeypatch.setattr(pbt, "node_resources", lambda: nodes)
    assert pbt.make_scheduler(space)._synch is synch
    printed = capsys.readouterr().out
    auto = "synch" not in scheduler_section
    assert ("PBT: synchronous, since the population of 4 trials is larger than the 2 that train at once"
            in printed) is (synch and auto)
    assert printed.count("\n") == (1 if synch and auto else 0)


def test_the_bundled_pbt_space_is_synchronous_on_two_cpus(monkeypatch, capsys):
    from tune_cifar.search import pbt
    from tune_cifar.search.space import load_space

    monkeypatch.setattr(pbt, "node_resources", lambda: [{"CPU": 2.0}])
    assert pbt.make_scheduler(load_space("pbt_cpu_small"))._synch is True
    assert "population of 4 trials is larger than the 2 that train at once" in capsys.readouterr().out


@pytest.mark.parametrize("key, spec", [
    ("model.model_name", {"choice": ["tiny_cnn", "small_cnn"]}),
    ("data.train_batch_size", {"choice": [32, 64]}),
    ("optimizer.optimizer", {"choice": ["sgd", "adamw"]}),
    ("optimizer.scheduler.name", {"choice": ["cosine", "none"]}),
])
def test_pbt_refuses_a_parameter_that_cannot_change_in_mid_training(tmp_path, data_root, key, spec):
    from tune_cifar.errors import UserError
    from tune_cifar.search.space import load_space

    path = pbt_space(tmp_path, data_root, params={"optimizer.lr": {"loguniform": [1e-4, 0.1]}, key: spec})
    with pytest.raises(UserError) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: params.{key} cannot change in mid-training") and "\n" not in msg
    assert "allowed under pbt: optimizer.lr, optimizer.weight_decay, optimizer.momentum, task.label_smoothing, " \
           "data.augment.*" in msg


def test_pbt_space_from_the_command_line_exits_2_in_one_line(tmp_path, data_root):
    """The user's path: the console entry, a bad PBT space, exit 2, one line, nothing created."""
    import subprocess
    import sys

    path = pbt_space(tmp_path, data_root, params={"optimizer.lr": {"loguniform": [1e-4, 0.1]},
                                                 "model.model_name": {"choice": ["tiny_cnn", "small_cnn"]}})
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "params.model.model_name cannot change in mid-training" in lines[0], proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("search, refused", [
    ({"searcher": {"name": "tpe"}}, "search.searcher.name='tpe' is not allowed; allowed: random under pbt"),
    ({"max_concurrent_trials": 2}, "search.max_concurrent_trials=2 is not allowed; allowed: null under pbt"),
    ({"scheduler": {"name": "pbt", "quantile_fraction": 0.6}},
     "search.scheduler.quantile_fraction=0.6 is not allowed; allowed: > 0 and <= 0.5"),
    ({"scheduler": {"name": "pbt", "perturbation_interval": 0}},
     "search.scheduler.perturbation_interval=0 is not allowed; allowed: an integer >= 1 (epochs)"),
])
def test_pbt_settings_are_checked(tmp_path, data_root, search, refused):
    from tune_cifar.errors import UserError
    from tune_cifar.search.space import load_space

    with pytest.raises(UserError, match="^" + __import__("re").escape(f"{tmp_path / 'pbt.yaml'}: {refused}")):
        load_space(pbt_space(tmp_path, data_root, search))


def test_condition_on_a_sampled_key_is_refused_but_one_on_a_fixed_value_resolves(tmp_path, data_root):
    from tune_cifar.errors import UserError
    from tune_cifar.search import pbt
    from tune_cifar.search.space import load_space

    with pytest.raises(UserError, match=r"params\.data\.augment\.cutout depends on the sampled data\.augment\.flip"):
        load_space(pbt_space(tmp_path, data_root, params={
            "data.augment.flip": {"choice": [True, False]},
            "data.augment.cutout": {"int": [0, 8], "when": {"data.augment.flip": True}}}))
    space = load_space(pbt_space(tmp_path, data_root, base=["optimizer=sgd"], params={  # sgd: nesterov true
        "optimizer.optimizer": "sgd",
        "optimizer.lr": {"depends_on": "optimizer.optimizer", "loguniform": {"sgd": [1e-3, 0.3]}},
        "optimizer.momentum": {"uniform": [0.5, 0.95], "when": {"optimizer.optimizer": "sgd"}},
        "optimizer.weight_decay": {"loguniform": [1e-5, 1e-2], "when": {"optimizer.nesterov": False}},
        "data.augment.crop_padding": {"qint": [0, 8, 4]}}))
    assert sorted(pbt.distributions(space)) == ["data.augment.crop_padding", "optimizer.lr", "optimizer.momentum"]
    scheduler = pbt.make_scheduler(space)
    mutations = scheduler._hyperparam_mutations
    assert mutations["data.augment.crop_padding"] == [0, 4, 8]  # a choice PBT moves to a neighbour
    assert (mutations["optimizer.lr"].lower, mutations["optimizer.lr"].upper) == (1e-3, 0.3)
    clip = scheduler._custom_explore_fn  # Ray scales by 0.8 / 1.2 without bounds
    assert clip({"optimizer.lr": 0.36, "optimizer.momentum": 0.4}) == {"optimizer.lr": 0.3, "optimizer.momentum": 0.5}
    assert set(pbt.param_space(space)) == set(mutations)


def test_results_table_and_export_of_pbt_trials(tmp_path, data_root):
    """Exploits from the run folder's log; a trial's id from its folder (its last metrics are its donor's);
    a report whose checkpoint folder a later report reused is never the best (its weights are gone)."""
    import json
    from types import SimpleNamespace

    import pandas as pd

    from tune_cifar.search.results import export_choice, results_table, write_reports
    from tune_cifar.search.space import load_space

    space = load_space(pbt_space(tmp_path, data_root))
    run = tmp_path / "run"
    run.mkdir()
    (run / "pbt_exploits.jsonl").write_text(
        json.dumps({"trial_id": "b", "epoch": 2, "donor": "a", "donor_epoch": 2, "config": {"optimizer.lr": 0.02}})
        + "\n" + '{"trial_id": "b", "epo')  # a line cut by a kill is skipped

    def result(trial_id, accs, its, names, config, metrics_of):
        df = pd.DataFrame({"training_iteration": its, "accuracy/val": accs, "checkpoint_dir_name": names,
                           "time_total_s": [float(i) for i in range(len(its))]})
        kept = [(SimpleNamespace(path=str(run / f"trial_{trial_id}" / n)),
                 {"training_iteration": i, "accuracy/val": a, "config": config})
                for i, a, n in zip(its, accs, names)][-2:]  # what Ray registered and kept
        return SimpleNamespace(metrics_dataframe=df, metrics={"trial_id": metrics_of}, error=None, config=config,
                               path=str(run / f"trial_{trial_id}"), best_checkpoints=kept)

    a = result("a", [0.5, 0.8, 0.85], [1, 2, 3], ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"],
               {"optimizer.lr": 0.01, "task.label_smoothing": 0.1}, "a")
    # b: reported epoch 3 once more after the exploit was decided (0.95, checkpoint_000002), then continued
    # from a's epoch 2 and reused that folder for its epoch 3 (0.6)
    b = result("b", [0.3, 0.4, 0.95, 0.6], [1, 2, 3, 3],
               ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002", "checkpoint_000002"],
               {"optimizer.lr": 0.02, "task.label_smoothing": 0.1}, "a")
    table = results_table(space, [a, b]).set_index("trial_id")
    assert list(table.index) == ["a", "b"]  # not b's 0.95: that checkpoint was overwritten
    assert table.loc["b", "accuracy/val"] == 0.6 and table.loc["b", "epochs_trained"] == 4
    assert (table.loc["b", "exploits"], table.loc["b", "cloned_from"]) == (1, "a@2")
    assert table.loc["a", "exploits"] == 0
    chosen, checkpoint, reported = export_choice(space, [a, b], table.reset_index())
    assert chosen is a and checkpoint.path.endswith("trial_a/checkpoint_000002")
    assert write_reports(space, [a, b], table.reset_index(), run)  # the plot with the exploit drawn
    assert (run / "learning_curves.png").stat().st_size > 0


def test_each_exploit_is_logged_by_ray_and_by_trial_id(tmp_path, data_root):
    """RecordingPBT keeps Ray's pbt_global.txt / pbt_policy_<id>.txt and adds the event by trial id."""
    import json
    from types import SimpleNamespace

    from tune_cifar.search import pbt
    from tune_cifar.search.space import load_space

    scheduler = pbt.make_scheduler(load_space(pbt_space(tmp_path, data_root)))

    def trial(trial_id, epoch, lr):
        return SimpleNamespace(trial_id=trial_id, local_experiment_path=str(tmp_path), local_dir=str(tmp_path),
                               last_result={"training_iteration": epoch},
                               config={"optimizer.lr": lr, "task.label_smoothing": 0.1})

    recipient, donor = trial("r_00001", 2, 1e-5), trial("d_00000", 3, 0.01)
    new = {"optimizer.lr": 0.012, "task.label_smoothing": 0.08}
    scheduler._log_config_on_step(SimpleNamespace(orig_tag="1_x"), SimpleNamespace(orig_tag="0_y"),
                                  recipient, donor, new)
    assert json.loads((tmp_path / pbt.GLOBAL_LOG).read_text())[:4] == ["1_x", "0_y", 2, 3]
    assert (tmp_path / "pbt_policy_r_00001.txt").is_file()
    assert pbt.exploit_events(tmp_path) == {"r_00001": [{"trial_id": "r_00001", "epoch": 2, "donor": "d_00000",
                                                         "donor_epoch": 3, "config": new}]}


def test_a_restarted_trials_truncated_result_json_is_read_from_progress_csv(tmp_path):
    """Ray 2.60 can truncate result.json when a trial restarts from a checkpoint (seen after PBT exploits);
    the results then read the trial's progress.csv, the longer record."""
    from types import SimpleNamespace

    import pandas as pd

    from tune_cifar.search.results import trial_curve

    folder = tmp_path / "trial_x"
    folder.mkdir()
    full = pd.DataFrame({"training_iteration": [1, 2, 3, 4], "accuracy/val": [0.9, 0.5, 0.6, 0.7]})
    full.to_csv(folder / "progress.csv", index=False)
    result = SimpleNamespace(path=str(folder), metrics_dataframe=full.iloc[2:].reset_index(drop=True))
    assert trial_curve(result)["accuracy/val"].tolist() == [0.9, 0.5, 0.6, 0.7]
    (folder / "progress.csv").write_text("")  # an empty file: Ray's own
    assert len(trial_curve(result)) == 2
