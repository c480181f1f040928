"""Search-space schema: conversions to Optuna (bounds, conditionals, parents) and every bad file."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from tune_cifar.errors import UserError
from tune_cifar.search.sampler import sample
from tune_cifar.search.space import load_space

REPO = Path(__file__).resolve().parent.parent
BASE = ["data=cifar10", "model=small_cnn", "model.model_name=tiny_cnn"]


def write(tmp_path: Path, params: dict, search: dict | None = None, base=BASE, name="space.yaml") -> Path:
    path = tmp_path / name
    doc = {"base": base, "params": params}
    if search is not None:
        doc["search"] = search
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def samples(space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


# --------------------------------------------------------------------------- conversions


def test_distributions_respect_inclusive_bounds(tmp_path):
    space = load_space(write(tmp_path, {
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
        "optimizer.momentum": {"uniform": [0.8, 0.99]},
        "data.train_batch_size": {"qint": [32, 256, 32]},
        "optimizer.scheduler.step_size": {"int": [1, 3]},
        "data.augment.flip": {"choice": [True, False]},
        "optimizer.weight_decay": 0.001,
    }))
    drawn = samples(space, 200)
    for d in drawn:
        assert 1e-4 <= d["optimizer.lr"] <= 1e-1
        assert 0.8 <= d["optimizer.momentum"] <= 0.99
        assert d["data.train_batch_size"] in range(32, 257, 32)
        assert d["optimizer.scheduler.step_size"] in (1, 2, 3)
        assert "optimizer.weight_decay" not in d  # fixed: part of the base, not sampled
    assert {d["optimizer.scheduler.step_size"] for d in drawn} == {1, 2, 3}  # both ends reachable
    assert {d["data.train_batch_size"] for d in drawn} >= {32, 256}
    logs = [math.log10(d["optimizer.lr"]) for d in drawn]
    assert sum(v < -2.5 for v in logs) > 60  # log scale: half the draws below the geometric mean
    cfg = space.trial_config(drawn[0])
    assert cfg.optimizer.weight_decay == 0.001 and cfg.optimizer.lr == drawn[0]["optimizer.lr"]


def test_when_makes_parameters_conditional(tmp_path):
    space = load_space(write(tmp_path, {
        "optimizer.optimizer": {"choice": ["sgd", "adamw"]},
        "optimizer.momentum": {"uniform": [0.5, 0.6], "when": {"optimizer.optimizer": "sgd"}},
        "optimizer.nesterov": {"value": True, "when": {"optimizer.optimizer": ["sgd"]}},
    }, base=[*BASE, "optimizer.nesterov=false"]))
    drawn = samples(space, 40)
    assert {d["optimizer.optimizer"] for d in drawn} == {"sgd", "adamw"}
    for d in drawn:
        sgd = d["optimizer.optimizer"] == "sgd"
        assert ("optimizer.momentum" in d) == sgd and ("optimizer.nesterov" in d) == sgd
        cfg = space.trial_config(d)
        assert cfg.optimizer.nesterov is sgd
        assert (0.5 <= cfg.optimizer.momentum <= 0.6) if sgd else cfg.optimizer.momentum == 0.9  # base value


def test_depends_on_gives_each_parent_value_its_own_options(tmp_path):
    space = load_space(write(tmp_path, {
        "model.provider_name": {"choice": ["timm", "torchvision"]},
        "model.model_name": {"depends_on": "model.provider_name",
                             "choice": {"timm": ["resnet18", "resnet26"], "torchvision": ["resnet34"]}},
        "optimizer.optimizer": {"choice": ["sgd", "adamw"]},
        "optimizer.lr": {"depends_on": "optimizer.optimizer",
                         "loguniform": {"sgd": [0.01, 0.1], "adamw": [1e-4, 1e-3]}},
    }, base=["data=cifar10", "model=resnet18"]))
    for d in samples(space, 40):
        if d["model.provider_name"] == "timm":
            assert d["model.model_name"] in ("resnet18", "resnet26")
        else:
            assert d["model.model_name"] == "resnet34"
        lo, hi = (0.01, 0.1) if d["optimizer.optimizer"] == "sgd" else (1e-4, 1e-3)
        assert lo <= d["optimizer.lr"] <= hi
    # Optuna sees one distribution per parent value; a given point maps onto those names.
    assert space.to_optuna({"model.provider_name": "torchvision", "model.model_name": "resnet34"}, "x") == {
        "model.provider_name": "torchvision", "model.model_name@torchvision": "resnet34"}
    with pytest.raises(UserError, match=r"model.model_name='resnet18' is outside .* one of resnet34"):
        space.to_optuna({"model.provider_name": "torchvision", "model.model_name": "resnet18"}, "x")
    # A value whose parent is left to the sampler would be dropped without a word: refused instead.
    with pytest.raises(UserError, match=r"^--params: optimizer.lr depends on optimizer.optimizer, which is left "
                                        r"to the sampler; give optimizer.optimizer too$"):
        space.to_optuna({"optimizer.lr": 0.05}, "--params")
    assert space.to_optuna({"optimizer.optimizer": "sgd", "optimizer.lr": 0.05}, "x") == {
        "optimizer.optimizer": "sgd", "optimizer.lr@sgd": 0.05}


def test_given_params_are_used_and_the_rest_sampled(tmp_path):
    space = load_space(write(tmp_path, {
        "optimizer.optimizer": {"choice": ["sgd", "adamw"]},
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
        "model.model_kwargs": {"choice": [{}, {"dropout": 0.2}]},  # non-scalar options: picked by index
    }))
    d = sample(space, {"optimizer.optimizer": "adamw", "model.model_kwargs": {"dropout": 0.2}})
    assert d["optimizer.optimizer"] == "adamw" and d["model.model_kwargs"] == {"dropout": 0.2}
    assert 1e-4 <= d["optimizer.lr"] <= 1e-1
    assert space.trial_config(d).model.model_kwargs == {"dropout": 0.2}
    with pytest.raises(UserError, match="--params: optimizer.lrr is not a sampled parameter"):
        sample(space, {"optimizer.lrr": 0.1})


def test_search_section_defaults_and_trial_settings(tmp_path):
    space = load_space(write(tmp_path, {"optimizer.lr": {"uniform": [0.01, 0.1]}},
                             search={"scheduler": {"max_epochs": 7}}),
                       ["search.num_samples=3", "data.train_subset=100"])
    s = space.search
    assert (s.metric, s.mode, s.num_samples, s.scheduler.name) == ("accuracy/val", "max", 3, "asha")
    assert s.experiment == "cifar10_tiny_cnn" and s.storage_path == "outputs"
    cfg = space.trial_config({"optimizer.lr": 0.05})
    assert cfg.trainer.max_epochs == 7 and cfg.trainer.val_check_interval == 1.0
    assert cfg.trainer.accelerator == "cpu" and cfg.data.train_subset == 100


def test_float_exponents_read_as_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  optimizer.lr: {loguniform: [1e-4, 1e-1]}\n")  # YAML 1.1 would read strings
    assert load_space(path).params[0].dists[None].args == (1e-4, 1e-1)


@pytest.mark.parametrize("name", ["resnet.yaml", "cpu_small.yaml", "optimizers.yaml", "pbt_cpu_small.yaml",
                                  "cpu_small_pareto.yaml"])
def test_shipped_spaces_are_valid(name):
    space = load_space(REPO / "search_spaces" / name)
    for d in samples(space, 5):
        space.trial_config(d)


# --------------------------------------------------------------------------- bad files


BAD = {
    "unknown key": ({"optimizer.lrr": {"uniform": [0.1, 0.2]}},
                    r"params.optimizer.lrr: unknown config key optimizer.lrr \(did you mean optimizer.lr\?\); "
                    r"allowed under optimizer: .*lr"),
    "unknown section key": ({"optimiser.lr": 0.1}, r"unknown config key optimiser.lr .*allowed under the top level: "),
    "unknown distribution": ({"optimizer.lr": {"gauss": [0.1, 0.2]}},
                             r"params.optimizer.lr: unknown distribution 'gauss'; allowed: one of choice, int, "
                             r"loguniform, qint, uniform, value"),
    "empty choice": ({"optimizer.optimizer": {"choice": []}},
                     r"params.optimizer.optimizer.choice: empty choice; allowed: a list of at least one option"),
    "low > high": ({"optimizer.lr": {"uniform": [0.5, 0.1]}},
                   r"params.optimizer.lr.uniform: low 0.5 > high 0.1; allowed: low <= high"),
    "int low > high": ({"data.train_batch_size": {"int": [64, 32]}}, r"low 64 > high 32"),
    "loguniform zero": ({"optimizer.lr": {"loguniform": [0, 0.1]}},
                        r"params.optimizer.lr.loguniform: loguniform bounds must be > 0, got low=0"),
    "loguniform negative": ({"optimizer.lr": {"loguniform": [-1, 0.1]}}, r"loguniform bounds must be > 0"),
    "bad choice value": ({"optimizer.optimizer": {"choice": ["sgd", "rmsprop"]}},
                         r"params.optimizer.optimizer: value 'rmsprop' does not fit the config: "
                         r"optimizer.optimizer='rmsprop' is not allowed; allowed: adam, adamw, sgd"),
    "wrong type": ({"data.train_batch_size": {"uniform": [16, 64]}},
                   r"params.data.train_batch_size: value 16.0 does not fit .*must be of type int"),
    "qint step": ({"data.train_batch_size": {"qint": [32, 100, 32]}}, r"qint step 32 must be >= 1 and divide"),
    "bare list": ({"optimizer.lr": [0.1, 0.2]}, r"a bare list is ambiguous"),
    "reserved": ({"trainer.max_epochs": {"int": [1, 5]}}, r"set by the search.*search.scheduler.max_epochs"),
    "dataset": ({"data.name": {"choice": ["cifar10", "cifar100"]}}, r"loaded once for all trials"),
    "when unknown value": ({"optimizer.optimizer": {"choice": ["sgd", "adamw"]},
                            "optimizer.momentum": {"uniform": [0.8, 0.9], "when": {"optimizer.optimizer": "sdg"}}},
                           r"when.optimizer.optimizer: 'sdg' is never sampled; allowed: one of sgd, adamw"),
    "depends_on missing entry": ({"optimizer.optimizer": {"choice": ["sgd", "adamw"]},
                                  "optimizer.lr": {"depends_on": "optimizer.optimizer",
                                                   "uniform": {"sgd": [0.01, 0.1]}}},
                                 r"optimizer.lr.uniform: no entry for optimizer.optimizer='adamw'"),
    "depends_on below": ({"optimizer.lr": {"depends_on": "optimizer.optimizer", "uniform": {"sgd": [0.01, 0.1]}},
                          "optimizer.optimizer": {"choice": ["sgd"]}},
                         r"depends_on: optimizer.optimizer must be a choice parameter defined above"),
    "unknown model": ({"model.model_name": {"choice": ["tiny_cnn", "tiny_cnnn"]}},
                      r"'tiny_cnnn' is not a builtin model; close: tiny_cnn"),
    "when below": ({"optimizer.momentum": {"uniform": [0.8, 0.9], "when": {"optimizer.optimizer": "sgd"}},
                    "optimizer.optimizer": {"choice": ["sgd", "adamw"]}},
                   r"params.optimizer.momentum.when.optimizer.optimizer: a condition on a parameter must come "
                   r"after it; move optimizer.momentum below optimizer.optimizer"),
    "two distributions": ({"optimizer.lr": {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]}},
                          r"several distributions"),
    "only fixed": ({"optimizer.lr": 0.1}, r"params has no sampled parameter"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_params(tmp_path, case):
    params, pattern = BAD[case]
    path = write(tmp_path, params)
    with pytest.raises(UserError, match=pattern) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg


BAD_SEARCH = {
    "metric": ({"metric": "acc/val"}, r"search.metric='acc/val' is not allowed; allowed: accuracy/val, loss/val"),
    "mode": ({"mode": "maximum"}, r"search.mode='maximum' is not allowed; allowed: max, min"),
    "scheduler": ({"scheduler": {"name": "hyperband"}}, r"search.scheduler.name='hyperband'.*allowed: asha, fifo"),
    "grace": ({"scheduler": {"max_epochs": 2, "grace_period": 3}}, r"grace_period=3 .*allowed: 1 to"),
    "searcher": ({"searcher": {"name": "bohb"}}, r"search.searcher.name='bohb'.*allowed: nsga2, random, tpe"),
    "unknown": ({"num_trials": 3}, r"unknown key search.num_trials; allowed: .*num_samples"),
    "gpu > 1": ({"resources": {"gpu": 2}}, r"search.resources.gpu=2.0 is not allowed"),
    "point": ({"searcher": {"points_to_evaluate": [{"optimizer.lr": 5.0}]}},
              r"points_to_evaluate\[0\]: optimizer.lr=5.0 is outside its distribution; allowed: a number in"),
}


@pytest.mark.parametrize("case", sorted(BAD_SEARCH))
def test_bad_search_section(tmp_path, case):
    search, pattern = BAD_SEARCH[case]
    path = write(tmp_path, {"optimizer.lr": {"uniform": [0.01, 0.1]}}, search=search)
    with pytest.raises(UserError, match=pattern):
        load_space(path)


def test_bad_yaml_and_overrides(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("params: {optimizer.lr: [\n")
    with pytest.raises(UserError, match=r"broken.yaml, line 2, column 1: not valid YAML: "):
        load_space(path)
    with pytest.raises(UserError, match=r"missing.yaml: search-space file not found"):
        load_space(tmp_path / "missing.yaml")
    good = write(tmp_path, {"optimizer.lr": {"uniform": [0.01, 0.1]}})
    with pytest.raises(UserError, match=r"optimizer.lr is searched by"):
        load_space(good, ["optimizer.lr=0.1"])
    with pytest.raises(UserError, match=r"trainer.max_epochs is set by the search; use search.scheduler.max_epochs"):
        load_space(good, ["trainer.max_epochs=3"])
    with pytest.raises(UserError, match=r"unknown key search.bogus"):
        load_space(good, ["search.bogus=1"])
    with pytest.raises(UserError, match=r"^override search.resources=\{cpu: 2, line 1, column \d+: not valid YAML: "):
        load_space(good, ["search.resources={cpu: 2"])
    with pytest.raises(UserError, match=rf"^{tmp_path}: cannot read the search-space file \(IsADirectoryError\)"):
        load_space(tmp_path)


def test_searched_timm_names_may_carry_a_pretrained_tag(tmp_path):
    """The search accepts what create_model accepts (resnet18.a1_in1k), as train does."""
    space = load_space(write(tmp_path, {"model.model_name": {"choice": ["resnet18", "resnet18.a1_in1k"]}},
                             base=["data=cifar10", "model=resnet18"]))
    assert list(space.params[0].dists[None].args) == ["resnet18", "resnet18.a1_in1k"]
    with pytest.raises(UserError, match=r"params.model.model_name: 'resnet18.nope' is not a timm model"):
        load_space(write(tmp_path, {"model.model_name": {"choice": ["resnet18", "resnet18.nope"]}},
                         base=["data=cifar10", "model=resnet18"], name="bad.yaml"))


def test_base_model_and_metrics_are_checked_before_any_trial(tmp_path):
    """Unsearched model and metrics come from the base config: checked on load, not in every trial."""
    good = write(tmp_path, {"optimizer.lr": {"uniform": [0.01, 0.1]}})
    with pytest.raises(UserError, match=rf"^{good}: base config: model.model_name='tiny_cnnn' is not allowed; "
                                        r"allowed: .*tiny_cnn"):
        load_space(good, ["model.model_name=tiny_cnnn"])
    with pytest.raises(UserError, match=rf"^{good}: base config: optimizer.metrics.f2 is not a known metric; "
                                        r"allowed: accuracy, auroc, f1"):
        load_space(good, ["+optimizer.metrics.f2={}"])


def test_search_metric_is_one_the_trials_log(tmp_path):
    """search.metric is checked against the names training logs (tune_cifar.metrics.logged_keys): a metric
    added to the base config can be searched on."""
    good = write(tmp_path, {"optimizer.lr": {"uniform": [0.01, 0.1]}}, search={"metric": "f1/val", "mode": "max"})
    assert load_space(good, ["+optimizer.metrics.f1={average: macro}"]).search.metric == "f1/val"
    with pytest.raises(UserError, match=r"search.metric='f1/val' is not allowed; allowed: accuracy/val, loss/val, "
                                        r"model/flops, model/latency_ms, model/params$"):
        load_space(good)


def test_gpu_requested_without_gpu(tmp_path):
    space = load_space(write(tmp_path, {"optimizer.lr": {"uniform": [0.01, 0.1]}},
                             search={"resources": {"gpu": 0.5}}))
    t = space.trial_config({}).trainer
    assert (t.accelerator, t.devices, t.precision) == ("gpu", 1, "auto")  # each trial's Lightning: one GPU
    assert space.search.resources.for_ray() == {"cpu": 1.0, "gpu": 0.5}  # two trials share a card
    with pytest.raises(UserError, match=r"search.resources.gpu=0.5 but this machine has no GPU; allowed: 0"):
        space.check_gpus(0)
    space.check_gpus(1)


def test_bad_file_from_the_command_line_exits_2(tmp_path, capsys):
    from tune_cifar.search import main

    path = write(tmp_path, {"optimizer.lr": {"loguniform": [0.0, 0.1]}})
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--debug"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "params.optimizer.lr" in err and "allowed" in err


@pytest.mark.parametrize("name", ["cpu_small", "optimizers", "pbt_cpu_small", "resnet"])
def test_a_bundled_space_asked_to_optimise_a_loss_minimises_it(name):
    """The bundled spaces leave mode to the metric, so search.metric=loss/val alone is minimised."""
    assert load_space(name).search.mode == "max"
    s = load_space(name, ["search.metric=loss/val"]).search
    assert (s.metric, s.mode) == ("loss/val", "min")
    assert load_space(name, ["search.metric=loss/val", "search.mode=max"]).search.mode == "max"  # explicit wins


def test_pbt_without_a_searcher_line_draws_at_random(tmp_path):
    """PBT has no Optuna: a space that names no searcher gets random, not the tpe default it would refuse."""
    path = write(tmp_path, {"optimizer.lr": {"loguniform": [0.001, 0.1]}}, search={"scheduler": {"name": "pbt"}})
    assert load_space(path).search.searcher.name == "random"
    written = write(tmp_path, {"optimizer.lr": {"loguniform": [0.001, 0.1]}},
                    search={"scheduler": {"name": "pbt"}, "searcher": {"name": "tpe"}}, name="tpe.yaml")
    with pytest.raises(UserError, match=r"search.searcher.name='tpe' is not allowed; allowed: random"):
        load_space(written)  # a tpe the user wrote is still refused


def test_a_deep_checked_space_stays_so_only_for_what_check_deep_does_not_read(tmp_path, cifar10_root):
    """run_search skips check_deep for a space load_space checked; a copy with another base is checked again
    unless its caller says the new values are none of what check_deep reads (the experiment's name, display)."""
    from conftest import write_space

    path = write_space(tmp_path, cifar10_root, {})
    assert not load_space(path, deep=False).deep_checked
    space = load_space(path)
    assert space.deep_checked and space.renamed("other").deep_checked
    assert space.with_base({"trainer.enable_progress_bar": False}, checked=True).deep_checked
    assert not space.with_base({"model.model_name": "small_cnn"}).deep_checked
    assert not load_space(path, deep=False).with_base({}, checked=True).deep_checked
