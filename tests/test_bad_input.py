"""Bad input on the user's path (issue 11, item 5): each kind is refused by the program a user runs
(``python -m tune_cifar.<cmd>`` in a subprocess) with one line on stderr naming the key or file and
what is allowed, exit status 2, no traceback, and nothing left behind: no half-made run folder,
nothing already produced replaced.

Each subprocess pays for importing torch and Lightning (~5 s of CPU): one case per kind runs by
default; the same check on the other command paths (``--debug``, other values) is marked slow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cifar_files import CIFAR10_CLASSES as CLASSES
from conftest import tiny_overrides, write_space

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: nothing is absent")
SLOW = pytest.mark.slow


def variants(default, *others):
    """Parametrize values: the first runs by default, the others are marked slow."""
    return [default, *(pytest.param(o, marks=SLOW) for o in others)]


DEBUG = variants(False, True)  # search, then search --debug


def cli(prog: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"tune_cifar.{prog}", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def refused(proc: subprocess.CompletedProcess, prog: str, *needles: str) -> str:
    """Exit 2, exactly one stderr line (the error), no traceback, each needle in it."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}: {err[-3000:]}"
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-3000:]
    assert err.startswith(f"tune_cifar.{prog}: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def train_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return tiny_overrides(data_root, out, *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar10_root) -> dict:
    """One tiny training run (tiny_cnn, 10 classes): its checkpoint, for resume and predict."""
    from tune_cifar import train
    from tune_cifar.config import load_config

    out = tmp_path_factory.mktemp("trained")
    result = train.run(load_config(tiny_overrides(cifar10_root, out)))
    run = Path(result["output_dir"])
    return {"run": run, "last": run / "checkpoints" / "last.ckpt", "best": run / result["best_checkpoint"]}


# --------------------------------------------------------------------------- hardware asked for but absent


@no_gpu
@pytest.mark.parametrize("precision", variants("auto", "32-true", "bf16-mixed"))
def test_train_on_an_absent_gpu(cifar10_root, tmp_path, precision):
    out = tmp_path / "outputs"
    proc = cli("train", *train_args(cifar10_root, out, "trainer.accelerator=gpu", f"trainer.precision={precision}"))
    refused(proc, "train", "trainer.accelerator=gpu", "no CUDA GPU", "trainer.accelerator=cpu")
    assert not out.exists()


@no_gpu
@pytest.mark.parametrize("debug", DEBUG)
def test_search_on_an_absent_gpu(cifar10_root, tmp_path, debug):
    space = write_space(tmp_path, cifar10_root, {"num_samples": 1})
    proc = cli("search", space, "search.resources.gpu=1", *(["--debug"] if debug else []))
    refused(proc, "search", "search.resources.gpu=1", "no GPU", "allowed: 0")
    assert not (tmp_path / "outputs").exists()


@no_gpu
def test_predict_on_an_absent_gpu(trained, tmp_path):
    proc = cli("predict", "--checkpoint", trained["best"], "--device", "cuda", "--out", tmp_path / "p")
    refused(proc, "predict", "--device cuda", "no CUDA GPU", "--device cpu")
    assert not (tmp_path / "p").exists()


# --------------------------------------------------------------------------- output places that cannot be used


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    return f


@pytest.mark.parametrize("under", variants(True, False), ids=["under a file", "is a file"])
def test_train_output_dir_that_is_a_file(cifar10_root, a_file, under):
    out = a_file / "sub" if under else a_file
    proc = cli("train", *train_args(cifar10_root, out))
    refused(proc, "train", f"run.output_dir={out}", str(a_file), "allowed: a folder")
    assert a_file.read_text() == "mine\n"


@pytest.mark.parametrize("debug", DEBUG)
def test_search_output_dir_under_a_file(cifar10_root, tmp_path, a_file, debug):
    space = write_space(tmp_path, cifar10_root, {"num_samples": 1})
    proc = cli("search", space, "--output-dir", a_file / "runs", *(["--debug"] if debug else []))
    refused(proc, "search", "search.storage_path=", str(a_file), "allowed: a folder")
    assert a_file.read_text() == "mine\n"


def test_predict_out_that_is_a_file(trained, a_file):
    proc = cli("predict", "--checkpoint", trained["best"], "--out", a_file)
    refused(proc, "predict", f"--out={a_file} is the file {a_file}", "allowed: a folder")
    assert a_file.read_text() == "mine\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("prog", variants("train", "search"))
def test_output_dir_not_writable(cifar10_root, tmp_path, prog):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if prog == "train":
            proc = cli("train", *train_args(cifar10_root, locked / "outputs"))
        else:
            proc = cli("search", write_space(tmp_path, cifar10_root, {"num_samples": 1}),
                       "--output-dir", locked / "outputs")
        refused(proc, prog, str(locked), "not writable")
        assert listing(locked) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/1").is_dir() or os.access("/proc/1", os.W_OK),
                    reason="needs a folder nobody can create files in, even root: Linux's /proc/<pid>")
def test_output_dir_where_not_even_root_can_write(cifar10_root):
    proc = cli("train", *train_args(cifar10_root, Path("/proc/1/outputs")))
    refused(proc, "train", "run.output_dir=/proc/1/outputs", "/proc/1 is not writable", "allowed: a folder")


# --------------------------------------------------------------------------- resuming another model


@pytest.mark.parametrize("change", variants(
    ["model.model_name=small_cnn"],
    ["task=classification_binary", "data.num_classes=2",
     "data.label_groups={a: [airplane, automobile, ship, truck], b: [bird, cat, deer, dog, frog, horse]}"],
), ids=["other model", "other class count"])
def test_resume_from_a_checkpoint_of_another_model(cifar10_root, trained, tmp_path, change):
    out = tmp_path / "outputs"
    proc = cli("train", *train_args(cifar10_root, out, *change, "trainer.max_epochs=2", "run.resume=true",
                                    f"run.checkpoint_path={trained['last']}"))
    refused(proc, "train", f"run.checkpoint_path={trained['last']}", "cannot resume", "tiny_cnn with 10 outputs",
            "drop run.resume=true")
    assert not out.exists()  # no stray run folder


# --------------------------------------------------------------------------- YAML that expands without bound


def _laughs(tmp_path: Path, data_root: Path) -> Path:
    """A valid space file plus nine levels of nine aliases each: 9**9 (387 million) values once expanded."""
    space = write_space(tmp_path, data_root, {"num_samples": 1})
    chain = "&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]" + "".join(
        f", &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10))
    text = space.read_text().replace("params:\n", f"params:\n  optimizer.weight_decay: {{choice: [{chain}]}}\n", 1)
    space.write_text(text)
    return space


@pytest.mark.parametrize("debug", DEBUG)
def test_space_file_that_expands_without_bound(cifar10_root, tmp_path, debug):
    space = _laughs(tmp_path, cifar10_root)
    start = time.monotonic()
    proc = cli("search", space, *(["--debug"] if debug else []), timeout=120)
    refused(proc, "search", str(space), "expands to more than 100000 values", "allowed:")
    assert time.monotonic() - start < 60 and len(proc.stdout) < 1000
    assert not (tmp_path / "outputs").exists()


def test_expansion_is_counted_not_built(tmp_path):
    """The count itself is cheap: a file of 9**9 values is refused in well under a second, and a file
    that shares one anchor a few times is fine."""
    from tune_cifar.errors import UserError
    from tune_cifar.search.space import load_yaml

    chain = "&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]" + "".join(
        f", &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10))
    start = time.monotonic()
    with pytest.raises(UserError, match="expands to more than"):
        load_yaml(f"x: [{chain}]", "f.yaml")
    assert time.monotonic() - start < 1
    assert load_yaml("a: &a {x: 1, y: [1, 2]}\nb: *a\nc: *a\n", "f.yaml")["c"] == {"x": 1, "y": [1, 2]}
    with pytest.raises(UserError, match="expands to more than"):
        load_yaml("&a [*a]", "f.yaml")  # a list inside itself


# --------------------------------------------------------------------------- names that escape the output folder


@pytest.mark.parametrize("name", variants("../../escaped", "..", "a/b", "/tmp/abs"))
def test_train_experiment_outside_the_output_dir(cifar10_root, tmp_path, name):
    out = tmp_path / "deep" / "er" / "outputs"
    proc = cli("train", *train_args(cifar10_root, out, f"run.experiment={name}"))
    refused(proc, "train", f"run.experiment={name!r}", "allowed: letters, digits")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("key", variants("search.experiment", "run.experiment"))
@pytest.mark.parametrize("debug", DEBUG)
def test_search_experiment_outside_the_output_dir(cifar10_root, tmp_path, key, debug):
    space = write_space(tmp_path, cifar10_root, {"num_samples": 1})
    if key == "run.experiment":  # the space file names none: the base config's run.experiment is used
        doc = yaml.safe_load(space.read_text())
        del doc["search"]["experiment"]
        space.write_text(yaml.safe_dump(doc))
    proc = cli("search", space, f"{key}=..", *(["--debug"] if debug else []))
    refused(proc, "search", f"{key}='..'", "allowed: letters, digits")
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------- checkpoints needing arbitrary unpickling


class _RunsCode:
    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):  # what a tampered checkpoint does: os.system on load
        return (os.system, (f"touch {self.mark}",))


@pytest.fixture
def hostile_checkpoint(tmp_path) -> Path:
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _RunsCode(tmp_path / "pwned")}, path)
    return path


def _unpickling(proc, prog, path):
    err = refused(proc, prog, str(path), "unpickling arbitrary Python objects (posix.system)", "which can run code",
                  "refused")
    assert "corrupt" not in err and err.endswith("are loaded")  # the whole sentence, not cut
    assert not (path.parent / "pwned").exists()


def test_predict_refuses_a_checkpoint_that_runs_code(hostile_checkpoint, tmp_path):
    _unpickling(cli("predict", "--checkpoint", hostile_checkpoint, "--out", tmp_path / "p"), "predict",
                hostile_checkpoint)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("resume", variants(True, False), ids=["resume", "transfer"])
def test_train_refuses_a_checkpoint_that_runs_code(cifar10_root, hostile_checkpoint, tmp_path, resume):
    out = tmp_path / "outputs"
    proc = cli("train", *train_args(cifar10_root, out, f"run.checkpoint_path={hostile_checkpoint}",
                                    f"run.resume={str(resume).lower()}"))
    _unpickling(proc, "train", hostile_checkpoint)
    assert not out.exists()


def test_a_truncated_checkpoint_is_still_called_corrupt(tmp_path):
    from tune_cifar.checkpoint import _load_failure

    err = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. "
                       "More text that goes on and on")
    assert _load_failure(err) == ("truncated or corrupt (RuntimeError: PytorchStreamReader failed reading zip "
                                  "archive: failed finding central directory.)")


# --------------------------------------------------------------------------- a metric that cannot be measured


@pytest.mark.parametrize("debug", DEBUG)
def test_search_without_validation_images(cifar10_root, tmp_path, debug):
    space = write_space(tmp_path, cifar10_root, {"num_samples": 2})
    start = time.monotonic()
    proc = cli("search", space, "data.val_fraction=0", *(["--debug"] if debug else []))
    refused(proc, "search", "search.metric=accuracy/val cannot be measured", "data.val_fraction=0.0",
            "allowed: data.val_fraction in (0, 1)")
    assert time.monotonic() - start < 120  # before any trial: no Ray, no training
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------- one class, duplicate keys, top-k, CSV


@pytest.mark.parametrize("case", variants(
    ((), "has 1 class (cat); a classifier needs at least 2"),
    (("data.num_classes=1",), "data.num_classes=1 is not allowed; allowed: an integer >= 2"),
), ids=["data", "config"])
def test_train_on_one_class(tmp_path, case):
    from cifar_files import write_image_folder

    extra, needle = case
    root = write_image_folder(tmp_path / "one", classes=("cat",), n_per_class=4, size=16)
    base = [o for o in tiny_overrides(root, tmp_path / "outputs") if not o.startswith(("data=", "data.dataset_path"))]
    refused(cli("train", "data=folder", f"data.dataset_path={root}", *base, *extra), "train", needle)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("debug", DEBUG)
def test_space_file_with_a_duplicate_key(cifar10_root, tmp_path, debug):
    space = write_space(tmp_path, cifar10_root, {"num_samples": 1})
    text = space.read_text().replace("params:\n", "params:\n  optimizer.lr: {loguniform: [0.1, 0.5]}\n", 1)
    space.write_text(text)
    proc = cli("search", space, *(["--debug"] if debug else []))
    refused(proc, "search", str(space), "duplicate key 'optimizer.lr'", "line ")
    assert not (tmp_path / "outputs").exists()


def test_top_k_above_the_class_count_lists_every_class(trained, tmp_path):
    """The stated rule (--help): --top-k above the class count lists every class, once."""
    proc = cli("predict", "--checkpoint", trained["best"], "--top-k", "50", "--out", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    assert header[-2:] == ["top10", "top10_prob"] and "top11" not in header, header
    named = first[header.index("top1")::2]  # every class once, most likely first
    assert sorted(named) == sorted(CLASSES), named
    assert "every class" in cli("predict", "--help").stdout


@pytest.mark.parametrize("name", variants("../outside.png", "/abs/outside.png"))
def test_labels_csv_naming_images_outside_the_dataset(tmp_path, name):
    from cifar_files import write_image_folder

    root = write_image_folder(tmp_path / "ds", classes=("cat", "dog"), n_per_class=4, size=16, split=False)
    outside = tmp_path / "outside.png"
    (root / "cat" / "cat_0.png").rename(outside)
    name = str(outside) if name.startswith("/") else name
    rows = ["file,labels", *(f"{f.relative_to(root).as_posix()},{f.parent.name}" for f in sorted(root.rglob("*.png"))),
            f"{name},cat"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    base = [o for o in tiny_overrides(root, tmp_path / "outputs") if not o.startswith(("data=", "data.dataset_path"))]
    proc = cli("train", "data=folder", f"data.dataset_path={root}", "data.labels_csv=labels.csv",
               "task=classification_multilabel", "data.num_classes=2", *base)
    refused(proc, "train", "labels.csv:", f"image {name} is outside data.dataset_path={root}")
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------- non-finite numbers (issue 17, item 5)


@pytest.mark.parametrize("case", variants(
    ("optimizer.lr=nan", "optimizer.lr=nan"),
    ("optimizer.weight_decay=inf", "optimizer.weight_decay=inf"),
    ("task.label_smoothing=-inf", "task.label_smoothing=-inf"),
    ("data.val_fraction=NaN", "data.val_fraction=nan"),
    ("+model.model_kwargs.drop_rate=nan", "model.model_kwargs.drop_rate=nan"),  # free mappings too
    ("trainer.limit_train_batches=1e999", "trainer.limit_train_batches=inf"),
))
def test_train_refuses_non_finite_numbers(cifar10_root, tmp_path, case):
    """One check where the typed config is built: every number, whatever its key, is finite."""
    override, needle = case
    out = tmp_path / "outputs"
    refused(cli("train", *train_args(cifar10_root, out, override)), "train", needle, "allowed: a finite number")
    assert not out.exists()


@SLOW  # the same check as test_train_refuses_non_finite_numbers, reached through a group file
def test_a_config_dir_file_with_yaml_nan(cifar10_root, tmp_path):
    """YAML's own spelling, in the user's --config-dir group file, is refused the same way."""
    (tmp_path / "mine" / "optimizer").mkdir(parents=True)
    (tmp_path / "mine" / "optimizer" / "odd.yaml").write_text("defaults: [sgd, _self_]\nmomentum: .nan\n")
    out = tmp_path / "outputs"
    proc = cli("train", "--config-dir", tmp_path / "mine", *train_args(cifar10_root, out, "optimizer=odd"))
    refused(proc, "train", "optimizer.momentum=nan", "allowed: a finite number")
    assert not out.exists()


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("case", variants(
    ({"optimizer.lr": {"loguniform": [1e-5, INF]}}, (), "params.optimizer.lr.loguniform[1]=inf"),
    ({"optimizer.weight_decay": {"choice": [0.0, NAN]}}, (), "params.optimizer.weight_decay.choice[1]=nan"),
    ({"optimizer.weight_decay": {"uniform": [-INF, 0.1]}}, (), "params.optimizer.weight_decay.uniform[0]=-inf"),
    ({}, ("search.resources.cpu=nan",), "search.resources.cpu=nan"),  # YAML reads the word: said the same way
    ({}, ("search.scheduler.reduction_factor=.inf",), "search.scheduler.reduction_factor=inf"),
    ({}, ("optimizer.weight_decay=inf",), "base config: optimizer.weight_decay=inf"),
), ids=["bound", "choice", "low", "search override", "search yaml inf", "base override"])
@pytest.mark.parametrize("debug", variants(True, False))
def test_search_refuses_non_finite_numbers(cifar10_root, tmp_path, case, debug):
    """Search-space bounds and choices (written by yaml as .inf, .nan) and search.* numbers."""
    params, overrides, needle = case
    space = write_space(tmp_path, cifar10_root, {"num_samples": 1})
    doc = yaml.safe_load(space.read_text())
    doc["params"].update(params)
    space.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = cli("search", space, *overrides, *(["--debug"] if debug else []))
    refused(proc, "search", needle, "allowed: a finite number")
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------- plugins and the user's own files (items 7, 8)


def plugin_cli(tmp_path: Path, source: str, prog: str, *args) -> tuple[subprocess.CompletedProcess, Path]:
    """``prog`` run with the user's module ``my_plugin`` (``source``) named in TUNE_CIFAR_PLUGINS."""
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "my_plugin.py").write_text(source)
    env = {**os.environ, "TUNE_CIFAR_PLUGINS": "my_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", f"tune_cifar.{prog}", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)
    return proc, folder / "my_plugin.py"


# every registry, one rule: (import, registration, kind, name, who registered it first)
REGISTRATIONS = {
    "optimizer": ("from tune_cifar.optim import register_optimizer", '@register_optimizer("sgd")',
                  "optimizer 'sgd'", "tune_cifar.optim"),
    "schedule": ("from tune_cifar.optim import register_schedule", '@register_schedule("cosine")',
                 "LR schedule 'cosine'", "tune_cifar.optim"),
    "provider": ("from tune_cifar.models import register_provider", '@register_provider("timm", list_models=list)',
                 "model provider 'timm'", "tune_cifar.models"),
    "builtin model": ("from tune_cifar.models import register_builtin", '@register_builtin("small_cnn")',
                      "builtin model 'small_cnn'", "tune_cifar.models"),
    "searcher": ("from tune_cifar.search.registry import register_searcher", '@register_searcher("tpe")',
                 "searcher 'tpe'", "tune_cifar.search.registry"),
    "scheduler": ("from tune_cifar.search.registry import register_scheduler", '@register_scheduler("asha")',
                  "scheduler 'asha'", "tune_cifar.search.registry"),
}


@pytest.mark.parametrize("kind", variants("optimizer", *(k for k in REGISTRATIONS if k != "optimizer"), "source"))
def test_a_plugin_that_registers_an_existing_name(cifar10_root, tmp_path, kind):
    """A name is registered once, in every registry: a plugin repeating one is refused (it would silently
    replace ours: the run "succeeded" with a NaN loss), in one line naming the plugin, its line and the name."""
    if kind == "source":
        source, line, needle, first = ('from tune_cifar.data.sources import register_source\n\n\n'
                                       'def load(path):\n    return None\n\n\nregister_source("cifar10", load)\n',
                                       8, "dataset source 'cifar10'", "tune_cifar.data.cifar")
    else:
        imp, deco, needle, first = REGISTRATIONS[kind]
        source, line = f"{imp}\n\n\n{deco}\ndef mine(*args, **kwargs):\n    return None\n", 4
    out = tmp_path / "outputs"
    proc, path = plugin_cli(tmp_path, source, "train", *train_args(cifar10_root, out))
    refused(proc, "train", f"TUNE_CIFAR_PLUGINS: plugin my_plugin ({path}, line {line})",
            f"my_plugin registers {needle}, which {first} has registered already", "replace=True")
    assert not out.exists()


def test_replace_true_replaces_a_registration_on_purpose(monkeypatch):
    from tune_cifar import optim

    monkeypatch.setattr(optim, "OPTIMIZERS", dict(optim.OPTIMIZERS))

    @optim.register_optimizer("sgd", replace=True)
    def mine(groups, cfg):
        return None

    assert optim.OPTIMIZERS["sgd"] is mine


@pytest.mark.parametrize("case", variants(
    ("import os\n\ndef broken(:\n    pass\n", 3, "SyntaxError: invalid syntax"),
    ("import os\n\n\nraise RuntimeError('no licence\\nfound')\n", 4, "RuntimeError: no licence found"),
    ("import os\nimport not_installed_anywhere\n", 2, "ModuleNotFoundError: No module named 'not_installed_anywhere'"),
), ids=["syntax", "raises", "imports a missing module"])
def test_a_plugin_that_fails_to_import(cifar10_root, tmp_path, case):
    source, line, needle = case
    out = tmp_path / "outputs"
    proc, path = plugin_cli(tmp_path, source, "train", *train_args(cifar10_root, out))
    refused(proc, "train", f"TUNE_CIFAR_PLUGINS: plugin my_plugin ({path}, line {line}): {needle}",
            "python -c 'import my_plugin' shows the traceback")
    assert not out.exists()


def test_a_config_dir_file_that_is_not_yaml(cifar10_root, tmp_path):
    """A YAML syntax error in the user's --config-dir group file: its path and line, not Hydra's 99 lines."""
    group = tmp_path / "mine" / "model"
    group.mkdir(parents=True)
    (group / "my_net.yaml").write_text("defaults: [small_cnn, _self_]\nmodel_name: [tiny_cnn\nwidth: 3\n")
    out = tmp_path / "outputs"
    proc = cli("train", "--config-dir", tmp_path / "mine", *train_args(cifar10_root, out, "model=my_net"))
    refused(proc, "train", f"config: {group / 'my_net.yaml'}, line 3, column 6: not valid YAML: expected ',' or ']'")
    assert not out.exists()


@pytest.mark.parametrize("debug", DEBUG)
def test_a_space_file_that_is_not_yaml(cifar10_root, tmp_path, debug):
    space = write_space(tmp_path, cifar10_root, {"num_samples": 1})
    space.write_text(space.read_text().replace("params:\n", "params:\n  optimizer.weight_decay: {choice: [0.0, 1\n", 1))
    proc = cli("search", space, *(["--debug"] if debug else []))
    refused(proc, "search", f"{space}, line ", ": not valid YAML: ")
    assert not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------- file names that are not UTF-8 (item 9)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a filesystem that takes any bytes as a name")
def test_predict_images_whose_names_are_not_utf8(trained, tmp_path):
    """Names are written byte for byte (read back with errors='surrogateescape'), shown escaped on the
    terminal, and predictions.csv is whole: no UnicodeEncodeError half-way through it."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    names = [b"a.png", b"caf\xe9.png", b"z\xff\xfe.png"]  # Latin-1 and plain invalid bytes
    for name in names:
        Image.new("RGB", (32, 32), (200, 10, 10)).save(os.fsdecode(bytes(folder) + b"/" + name), format="PNG")
    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.predict", "--checkpoint", str(trained["best"]),
                           "--images", str(folder), "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "caf\\xe9.png" in proc.stdout and "z\\xff\\xfe.png" in proc.stdout  # escaped on screen
    assert os.listdir(out) == ["predictions.csv"]  # no temporary file left beside it
    raw = (out / "predictions.csv").read_bytes()
    rows = raw.decode("utf-8", "surrogateescape").splitlines()
    assert len(rows) == 1 + len(names) and rows[0].startswith("file,predicted,")
    written = [os.fsencode(row.split(",")[0]) for row in rows[1:]]
    assert sorted(written) == sorted(bytes(folder) + b"/" + n for n in names)  # the exact bytes
    assert all(Path(os.fsdecode(w)).is_file() for w in written)


# --------------------------------------------------------------------------- issue 17's weak list


@pytest.mark.parametrize("case", variants(
    ("train", "optimizer.lrr=0.1", "unknown key optimizer.lrr (did you mean optimizer.lr?)"),
    ("train", "+trainer.max_epoch=3", "unknown key trainer.max_epoch (did you mean trainer.max_epochs?)"),
    ("search", "search.num_sample=3", "unknown key search.num_sample (did you mean search.num_samples?)"),
    ("search", "search.scheduler.grace_perod=2",
     "unknown key search.scheduler.grace_perod (did you mean search.scheduler.grace_period?)"),
), ids=["train", "train +", "search", "search nested"])
def test_a_typo_in_a_key_says_which_was_meant(cifar10_root, tmp_path, case):
    prog, override, needle = case
    out = tmp_path / "outputs"
    if prog == "train":
        proc = cli("train", *train_args(cifar10_root, out, override))
    else:
        proc = cli("search", write_space(tmp_path, cifar10_root, {"num_samples": 1}), override, "--debug")
    refused(proc, prog, needle, "allowed: ")
    assert not out.exists()


@pytest.mark.parametrize("prog", variants("train", "predict"))
def test_a_key_that_is_not_ascii(cifar10_root, tmp_path, prog, request):
    out = tmp_path / "outputs"
    if prog == "train":
        proc = cli("train", *train_args(cifar10_root, out, "optimizer.lé=0.1"))
        needle = "config override 'optimizer.lé=0.1': the key 'optimizer.lé' is not ASCII"
    else:
        trained = request.getfixturevalue("trained")
        proc = cli("predict", "--checkpoint", trained["best"], "--out", out, "data.tést=1")
        needle = "the key 'data.tést' is not ASCII"
    refused(proc, prog, needle, "allowed: config keys")
    assert not out.exists()


@pytest.mark.parametrize("case", variants(
    ({"perturbation_interval": 3}, {}, "search.scheduler.perturbation_interval=3 is not allowed; allowed: fewer "
                                       "epochs than scheduler.max_epochs (3): else PBT never perturbs"),
    ({"burn_in_period": 5}, {}, "search.scheduler.burn_in_period=5 is not allowed"),
    ({}, {"num_samples": 1}, "search.num_samples=1 is not allowed; allowed: an integer >= 2 under pbt"),
), ids=["interval", "burn-in", "one trial"])
def test_pbt_that_can_never_perturb(cifar10_root, tmp_path, case):
    scheduler, search, needle = case
    space = write_space(tmp_path, cifar10_root, {"num_samples": 4, **search, "scheduler": {
        "name": "pbt", "max_epochs": 3, "perturbation_interval": 1, **scheduler}})
    refused(cli("search", space), "search", str(space), needle)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("case", variants(
    ({"budget": {"trial_epochs": 2}}, "search.budget.trial_epochs=2 is not allowed; allowed: null, or an integer >= "
                                      "scheduler.max_epochs (3): one trial's epochs at least"),
    ({"budget": {"trial_epochs": 2.5}}, "search.budget.trial_epochs=2.5 must be of type int"),
    ({"budget": {"trial_epochs": 12}, "num_samples": 0},
     "search.num_samples=0 is not allowed; allowed: an integer >= 1"),
), ids=["below one trial", "not an integer", "cap 0"])
def test_a_bad_budget(cifar10_root, tmp_path, case):
    """search.budget.trial_epochs (issue 18): more values in tests/test_budget.py, in-process."""
    search, needle = case
    space = write_space(tmp_path, cifar10_root, {**search, "scheduler": {"max_epochs": 3}})
    refused(cli("search", space), "search", str(space), needle)
    assert not (tmp_path / "outputs").exists()


def test_a_space_file_here_wins_over_the_bundled_one_of_that_name(tmp_path):
    """README: "a file of that name in the current folder wins", also named without .yaml."""
    (tmp_path / "cpu_small.yaml").write_text("mine: 1\n")
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.search", "cpu_small", "--debug"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    refused(proc, "search", "cpu_small.yaml: unknown section 'mine'")
    assert listing(tmp_path) == ["cpu_small.yaml"]


def test_threshold_out_of_range_says_what_is_allowed():
    from tune_cifar.config import Config
    from tune_cifar.errors import UserError
    from tune_cifar.predict.inference import effective_threshold
    from tune_cifar.predict.options import Options

    for t in (1.0, 0.0, float("nan")):
        with pytest.raises(UserError, match=r"^--threshold (1|0|nan) is not allowed; allowed: a probability strictly "
                                            r"between 0 and 1 \(0 < T < 1"):
            effective_threshold(Options(threshold=t), Config(), "binary")
    assert effective_threshold(Options(threshold=0.9), Config(), "binary") == 0.9


def test_a_class_folder_without_images_is_warned_about(tmp_path):
    from cifar_files import write_image_folder

    root = write_image_folder(tmp_path / "ds", classes=("cat", "dog"), n_per_class=4, size=16)
    (root / "train" / "bird").mkdir()
    (root / "train" / "bird" / "notes.txt").write_text("to do\n")
    base = [o for o in tiny_overrides(root, tmp_path / "outputs") if not o.startswith(("data=", "data.dataset_path"))]
    proc = cli("train", "data=folder", f"data.dataset_path={root}", "data.num_classes=3", *base,
               "trainer.fast_dev_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warned == [f"tune_cifar: warning: class folder {root / 'train' / 'bird'} has no .png/.jpg/.jpeg images: "
                      f"class 'bird' is an output of the model but is never trained on"], proc.stderr[-3000:]


def test_onnx_export_falls_back_quietly(monkeypatch, tmp_path, capfd):
    """When the TorchScript-based ONNX exporter fails, the torch.export-based one runs without its ~10
    progress lines per export (predict --to onnx then prints its one 'wrote' line)."""
    pytest.importorskip("onnxscript")
    from torch import nn

    from tune_cifar.predict import conversion

    class Net(nn.Module):  # forward(x): the name the fallback's dynamic shapes use, as Classifier's
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    export = torch.onnx.export

    def first_fails(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise RuntimeError("the TorchScript-based exporter cannot trace this model")
        return export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", first_fails)
    conversion.export_onnx(Net().eval(), torch.rand(2, 3, 8, 8), tmp_path / "model.onnx")
    out, err = capfd.readouterr()
    assert (tmp_path / "model.onnx").stat().st_size > 0
    assert out == "" and err == "", (out + err)[-3000:]


@pytest.mark.skipif(not Path("/proc/1").is_dir() or os.access("/proc/1", os.W_OK),
                    reason="needs a folder nobody can create files in, even root: Linux's /proc/<pid>")
def test_predict_to_onnx_into_a_folder_nobody_can_write(trained):
    """The folder is named (before: the exporter was blamed for what was the folder's fault)."""
    proc = cli("predict", "--checkpoint", trained["best"], "--to", "onnx", "--out", "/proc/1/model")
    refused(proc, "predict", "--out=/proc/1/model: /proc/1 is not writable", "allowed: a folder you can write to")


# --------------------------------------------------------------------------- refused before the heavy imports


@pytest.mark.parametrize("prog, args", [
    ("train", ["model.nope=1"]),
    ("search", ["search_spaces/cpu_small.yaml", "search.nope=1"]),
], ids=["train", "search"])
def test_a_config_refusal_answers_before_torch_is_imported(prog, args):
    """A mistyped key is refused from the config alone: torch, Lightning and Ray (seconds of imports, most of
    a bad command's wait, and of the suite's) are imported only once the config is read. Counted with
    python -X importtime, not timed."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", f"tune_cifar.{prog}", *args], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "tune_cifar.config" in imported  # the config was read, in this process
    assert not imported & {"torch", "pytorch_lightning", "ray"}, sorted(imported & {"torch", "pytorch_lightning", "ray"})


@pytest.mark.parametrize("ending, status", [("return {}", 0), ("raise UserError('bad value')", 2),
                                            ("sys.exit(130)", 130)])
def test_a_command_ends_at_once_with_its_output_and_status(tmp_path, ending, status):
    """Run as a command, a CLI ends without the interpreter's teardown (errors.end_process, issue 19), yet
    with everything it printed (a large stdout is flushed first), its exit status and the atexit handlers
    run (where logging and Ray flush and shut down). No torch here: the mechanism only."""
    script = tmp_path / "cmd.py"
    script.write_text(
        "import atexit, sys\n"
        "from tune_cifar.errors import UserError, cli_entry\n"
        f"atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, 'w').write('ran'))\n"
        "@cli_entry\n"
        "def main(argv=None):\n"
        "    print('x' * 100000, end='')\n"
        f"    {ending}\n"
        "main()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == status, out.stderr
    assert out.stdout == "x" * 100000
    assert (tmp_path / "atexit").read_text() == "ran"
    if status == 2:  # a script's main: the program name is its module's
        assert out.stderr.strip().splitlines() == ["tune_cifar.__main__: error: bad value"]
