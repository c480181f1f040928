"""The real Hydra config composes, overrides work, bad values give one-line errors."""

import pytest

from tune_cifar.config import CONFIG_DIR, config_from_dict, load_config, set_dotted, to_plain, compose
from tune_cifar.errors import UserError


def test_default_config_keeps_the_seed_sections_and_keys():
    cfg = load_config()
    assert cfg.data.name == "cifar10" and cfg.data.num_classes == 10
    assert cfg.model.provider_name == "timm" and cfg.model.model_name == "resnet18"
    assert cfg.model.modifiers.cifar_stem is True
    assert cfg.task.task == "classification_multiclass"
    assert cfg.optimizer.optimizer == "sgd" and cfg.optimizer.metrics == {"accuracy": {}}
    t = cfg.trainer  # Malpolon's trainer keys, with its defaults
    assert (t.accelerator, t.devices, t.max_epochs, t.val_check_interval, t.check_val_every_n_epoch) == \
        ("auto", 1, 10, 1.0, 1)
    assert cfg.run.experiment == "cifar10_resnet18"  # interpolated from data and model


@pytest.mark.parametrize("group", ["data", "model", "optimizer", "task", "trainer"])
def test_every_option_of_every_group_composes(group):
    for option in sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")):
        extra = ["data.num_classes=3", "data.dataset_path=/tmp/x"] if option == "folder" else []
        extra += ["data.num_classes=2"] if option == "classification_binary" else []
        cfg = load_config([f"{group}={option}", *extra])
        picked = {"data": cfg.data.name, "task": cfg.task.task, "optimizer": cfg.optimizer.optimizer,
                  "model": cfg.model.model_name, "trainer": "default"}[group]
        assert picked in option, (group, option)  # e.g. model=tv_resnet18 gives model_name resnet18


def test_overrides_and_group_switches():
    cfg = load_config(["optimizer=adamw", "optimizer.lr=0.003", "model=small_cnn", "data=cifar100",
                       "trainer.max_epochs=3", "+model.model_kwargs.drop_rate=0.1"])
    assert cfg.optimizer.optimizer == "adamw" and cfg.optimizer.lr == pytest.approx(0.003)
    assert cfg.model.provider_name == "builtin" and cfg.data.num_classes == 100
    assert cfg.trainer.max_epochs == 3 and cfg.model.model_kwargs["drop_rate"] == 0.1
    assert cfg.run.experiment == "cifar100_small_cnn"


@pytest.mark.parametrize("override, needle", [
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer.lr=fast"], "optimizer.lr"),
    (["data.train_batch_size=0"], "data.train_batch_size"),
    (["data.train_batch_size=-8"], "data.train_batch_size"),
    (["optimizer.optimizer=lamb"], "adamw"),
    (["task.task=regression"], "classification_multiclass"),
    (["model=unknown_model"], "model=unknown_model: no "),
    (["model=unknown_model"], "model/unknown_model.yaml; allowed: resnet18, small_cnn, tv_resnet18"),
    (["optimizer.lrr=0.1"], "unknown key optimizer.lrr (did you mean optimizer.lr?); allowed: lr, metrics, momentum,"),
    (["bogus=1"], "unknown key bogus; allowed: data, model, optimizer, run, task, trainer"),
    (["trainer.accelerator=tpu"], "trainer.accelerator"),
    (["+data.bogus=1"], "data.bogus"),
    (["trainer.precision=8"], "trainer.precision"),
    (["task.task=classification_binary"], "data.num_classes=2"),
    (["+model.model_kwargs.num_classes=7"], "model.model_kwargs.num_classes"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches=-1 is not allowed; allowed: an int >= 0 "
                                       "(batches) or a float in [0, 1] (fraction of an epoch)"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is not allowed"),
    (["trainer.val_check_interval=0"], "allowed: an int >= 1 (batches) or a float in (0, 1]"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
])
def test_bad_values_are_one_line_user_errors(override, needle):
    with pytest.raises(UserError) as err:
        load_config(override)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and "search path" not in msg


def test_lightning_batch_keys_keep_int_versus_float():
    """Lightning reads an int as a number of batches and a float as a fraction: 1 and 1.0 differ."""
    from tune_cifar.training import build_trainer

    cfg = load_config(["trainer.limit_train_batches=1", "trainer.limit_val_batches=0.5",
                       "trainer.val_check_interval=3", "trainer.accelerator=cpu"])
    t = cfg.trainer
    assert (t.limit_train_batches, t.limit_val_batches, t.val_check_interval) == (1, 0.5, 3)
    assert type(t.limit_train_batches) is int and type(t.limit_val_batches) is float
    trainer = build_trainer(cfg, None, checkpointing=False, loggers=False)
    assert (trainer.limit_train_batches, trainer.limit_val_batches, trainer.val_check_interval) == (1, 0.5, 3)
    assert type(trainer.limit_train_batches) is int  # one batch, not the whole epoch (1.0)
    assert type(load_config(["trainer.limit_train_batches=1.0"]).trainer.limit_train_batches) is float


def test_config_from_dict_round_trip_and_set_dotted():
    cfg = load_config(["optimizer=adam"])
    data = cfg.to_dict()
    set_dotted(data, "optimizer.lr", 0.5)
    set_dotted(data, "model.model_name", "resnet34")
    again = config_from_dict(data)
    assert again.optimizer.lr == 0.5 and again.model.model_name == "resnet34"
    with pytest.raises(UserError, match="optimizer.nope"):
        set_dotted(data, "optimizer.nope.deeper", 1)
    with pytest.raises(UserError, match=r"^config: data.name is a value \('cifar10'\), not a section: "
                                        r"data.name.foo does not exist$"):
        set_dotted(data, "data.name.foo", 1)


def test_compose_returns_resolvable_dictconfig():
    plain = to_plain(compose(["data=fashion_mnist"]))
    assert plain["data"]["dataset_path"] == "/usr/share/datasets/fashion-mnist"
    assert plain["run"]["experiment"] == "fashion_mnist_resnet18"


# --------------------------------------------------------------------------- packaged configs, --config-dir


def test_configs_and_spaces_live_in_the_package_and_the_checkout_links_them():
    from pathlib import Path

    import tune_cifar
    from tune_cifar.packaged import SPACES_DIR

    package = Path(tune_cifar.__file__).parent
    assert CONFIG_DIR == package / "conf" and (CONFIG_DIR / "config.yaml").is_file()
    repo = package.parent
    assert (repo / "config").resolve() == CONFIG_DIR.resolve()  # README's config/ and search_spaces/
    assert (repo / "search_spaces").resolve() == SPACES_DIR.resolve()


def test_config_dir_adds_a_users_group_option_next_to_ours(tmp_path):
    from tune_cifar.packaged import config_dir_override, with_config_dirs

    folder = tmp_path / "my configs"  # a space: quoted in Hydra's override grammar
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "my_net.yaml").write_text(
        "defaults:\n  - small_cnn\n  - _self_\nmodel_name: tiny_cnn\nmodel_kwargs: {dropout: 0.25}\n")
    (folder / "optimizer").mkdir()
    (folder / "optimizer" / "my_sgd.yaml").write_text("defaults:\n  - sgd\n  - _self_\nlr: 0.123\n")
    cfg = load_config(with_config_dirs(["--config-dir", str(folder), "model=my_net", "optimizer=my_sgd"]))
    assert (cfg.model.provider_name, cfg.model.model_name) == ("builtin", "tiny_cnn")
    assert cfg.model.model_kwargs == {"pretrained": False, "dropout": 0.25}
    assert cfg.optimizer.optimizer == "sgd" and cfg.optimizer.lr == pytest.approx(0.123)
    assert load_config().model.model_name == "resnet18"  # nothing left behind for the next compose
    # ours are still there, and an unknown option lists both folders' options
    assert load_config([config_dir_override(folder), "model=small_cnn"]).model.model_name == "small_cnn"
    with pytest.raises(UserError, match=r"model=nope: no .*model/nope.yaml or the --config-dir folders; "
                                        r"allowed: my_net, resnet18, small_cnn, tv_resnet18"):
        load_config(with_config_dirs([f"--config-dir={folder}", "model=nope"]))
    with pytest.raises(UserError, match=r"model=my_net: no .*allowed: resnet18, small_cnn"):
        load_config(["model=my_net"])  # without --config-dir


def test_config_dir_must_be_a_folder(tmp_path):
    from tune_cifar.packaged import with_config_dirs

    with pytest.raises(UserError, match=r"^--config-dir .*nowhere: not a folder; give a folder of config groups"):
        with_config_dirs(["--config-dir", str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match=r"^--config-dir needs a folder"):
        with_config_dirs(["model=small_cnn", "--config-dir"])


def test_search_space_by_path_or_bundled_name(tmp_path, monkeypatch):
    from tune_cifar.packaged import SPACES_DIR, bundled_spaces, find_space

    assert bundled_spaces() == ["cpu_small", "cpu_small_pareto", "optimizers", "pbt_cpu_small", "resnet"]
    monkeypatch.chdir(tmp_path)
    assert find_space("cpu_small") == find_space("cpu_small.yaml") == SPACES_DIR / "cpu_small.yaml"
    (tmp_path / "cpu_small.yaml").write_text("mine")
    assert find_space("cpu_small.yaml") == tmp_path.joinpath("cpu_small.yaml").relative_to(tmp_path)  # a file wins
    assert find_space("search_spaces/nope.yaml").as_posix() == "search_spaces/nope.yaml"  # left to the loader
    with pytest.raises(UserError, match=r"^nope: no such search-space file here and no bundled space of that "
                                        r"name; bundled: cpu_small, cpu_small_pareto, optimizers, pbt_cpu_small, "
                                        r"resnet$"):
        find_space("nope")


def test_one_override_parser_reads_numbers_like_train():
    """predict's key=value overrides use Hydra's grammar, as train and search do: 1e-4 is a float."""
    from tune_cifar.config import parse_override

    assert parse_override("optimizer.lr=1e-4") == ("optimizer.lr", pytest.approx(1e-4))
    assert isinstance(parse_override("optimizer.lr=1e-4")[1], float)
    assert parse_override("data.test_subset=null") == ("data.test_subset", None)
    assert parse_override("data.val_fraction=0.2") == ("data.val_fraction", 0.2)
    assert parse_override("data.label_groups={a: [x, y]}") == ("data.label_groups", {"a": ["x", "y"]})
    for bad in ("data.test_subset", "+data.x=1", "~data.x", "data.x=1,2"):
        with pytest.raises(UserError, match="must look like key=value"):
            parse_override(bad)
    assert load_config(["optimizer.lr=1e-4"]).optimizer.lr == parse_override("optimizer.lr=1e-4")[1]


def test_parsed_metrics_belong_to_the_task():
    """Users write optimizer.metrics; once parsed the task holds them (and config.yaml is unchanged)."""
    cfg = load_config(["optimizer.metrics={accuracy: {}, f1: {average: macro}}"])
    assert cfg.task.metrics == {"accuracy": {}, "f1": {"average": "macro"}}
    data = cfg.to_dict()
    assert "metrics" not in data["task"] and data["optimizer"]["metrics"] == cfg.task.metrics
    assert config_from_dict(data).task.metrics == cfg.task.metrics
    data["task"]["metrics"] = {"f1": {}}
    with pytest.raises(UserError, match="task.metrics; the metrics are set as optimizer.metrics"):
        config_from_dict(data)
