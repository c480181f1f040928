"""tune_cifar.predict on exports and checkpoints of tiny training runs: metrics, images, conversion, bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_overrides
from tune_cifar import predict, train
from tune_cifar.config import load_config
from tune_cifar.export import write_export
from tune_cifar.classifier import Classifier

GROUPS = "data.label_groups={vehicle: [airplane, automobile, ship, truck], animal: [bird, cat, deer, dog, frog, horse]}"


def _export(result: dict, cfg, root: Path) -> Path:
    """Export a training run the way tune_cifar.search does (flat metrics: .../val and .../test)."""
    run = Path(result["output_dir"])
    metrics = {"trial_id": "t0", "metric": "accuracy/val", "epoch": cfg.trainer.max_epochs,
               **result["val"], **result["test"]}
    return write_export(root / cfg.run.experiment / "best", run / result["best_checkpoint"], config=cfg.to_dict(),
                        metrics=metrics, hyperparameters={"optimizer.lr": cfg.optimizer.lr},
                        experiment=cfg.run.experiment, link_root=root)


def _trained(tmp_path_factory, data_root: Path, *extra: str, overrides: list[str] | None = None) -> dict:
    out = tmp_path_factory.mktemp("outputs")
    cfg = load_config(overrides if overrides is not None else tiny_overrides(data_root, out, *extra))
    result = train.run(cfg)
    export = _export(result, cfg, out)
    return {"cfg": cfg, "result": result, "root": out, "export": export,
            "checkpoint": Path(result["output_dir"]) / result["best_checkpoint"]}


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory, cifar10_root):
    # a seeded test subset: predict must rebuild exactly the split the run was tested on
    return _trained(tmp_path_factory, cifar10_root, "trainer.max_epochs=3", "data.test_subset=40")


@pytest.fixture(scope="module")
def binary(tmp_path_factory, cifar10_root):
    return _trained(tmp_path_factory, cifar10_root, "task=classification_binary", "data.num_classes=2", GROUPS)


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    from cifar_files import write_image_folder

    root = write_image_folder(tmp_path_factory.mktemp("multilabel"), classes=("cat", "dog", "fox"),
                              n_per_class=8, size=32)
    rows = ["file,labels"] + [f"{f.relative_to(root).as_posix()},{f.parent.name}{' night' if i % 2 else ''}"
                              for i, f in enumerate(sorted(root.rglob("*.png")))]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("outputs")
    overrides = [o for o in tiny_overrides(root, out) if not o.startswith(("data=", "data.dataset_path"))]
    overrides = ["data=folder", f"data.dataset_path={root}", "data.num_classes=4", "data.labels_csv=labels.csv",
                 "task=classification_multilabel", "task.label_smoothing=0.1", *overrides]
    return _trained(tmp_path_factory, root, overrides=overrides)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _test_split_ids(cfg) -> list[int]:
    from tune_cifar.data import ImageDataModule, load_data

    dm = ImageDataModule(cfg.data, load_data(cfg.data, cfg.task.task), seed=cfg.run.seed)
    dm.setup("test")
    return dm.split_indices["test"].tolist()


# --------------------------------------------------------------------------- evaluation


def test_moved_export_reproduces_the_reported_test_accuracy(multiclass, tmp_path):
    moved = tmp_path / "elsewhere" / "my_model"
    shutil.copytree(multiclass["export"], moved)  # the export folder alone, at a new place
    r = predict.main(["--export", str(moved)])
    reported = json.loads((moved / "metrics.json").read_text())["accuracy/test"]
    assert r["accuracy"] == pytest.approx(reported, abs=1e-6)
    assert r["metrics"]["accuracy/test"] == pytest.approx(reported, abs=1e-6)
    assert r["reported"]["accuracy/test"] == reported and r["reported_on_this_split"]
    out = Path(r["out_dir"])
    assert out.parent == moved.parent / "predict"  # default: next to the export
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == r["accuracy"] and saved["data"]["samples"] == 40
    cm = np.array(saved["confusion_matrix"]["matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 40 and np.trace(cm) / 40 == pytest.approx(r["accuracy"])
    for i, name in enumerate(saved["confusion_matrix"]["classes"]):
        expected = cm[i, i] / cm[i].sum() if cm[i].sum() else None
        assert saved["per_class_accuracy"][name] == pytest.approx(expected)
    rows = _rows(out / "predictions.csv")
    assert [int(row["sample"]) for row in rows] == _test_split_ids(multiclass["cfg"])
    assert np.mean([int(row["correct"]) for row in rows]) == pytest.approx(r["accuracy"])
    first = rows[0]
    assert first["predicted"] == first["top1"] and float(first["top1_prob"]) >= float(first["top5_prob"])


def test_best_pointer_and_overrides(multiclass, tmp_path):
    r = predict.main(["--best", "--output-dir", str(multiclass["root"]), "--out", str(tmp_path / "p"),
                      "--batch-size", "7", "data.test_subset=null", "--top-k", "2"])
    assert r["data"]["samples"] == 60 and r["data"]["test_subset"] is None  # the whole test set
    assert not r["reported_on_this_split"]  # the run was tested on a subset
    assert r["source"]["path"] == str(multiclass["export"].resolve())
    assert list(_rows(tmp_path / "p" / "predictions.csv")[0])[-2:] == ["top2", "top2_prob"]


def test_library_functions_take_the_frozen_options(multiclass, tmp_path):
    """The steps of main, called as a library with predict.Options (no argparse), give the CLI's numbers;
    every command-line argument has its Options field."""
    import dataclasses

    from tune_cifar.predict.cli import options_from_args, parse_args
    from tune_cifar.predict.evaluation import evaluate
    from tune_cifar.predict.settings import make_config

    options = predict.Options(checkpoint=str(multiclass["checkpoint"]), out=str(tmp_path / "lib"),
                              overrides=("data.test_subset=null",), top_k=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.top_k = 3  # type: ignore[misc]
    loaded = predict.load(options)
    r = evaluate(loaded, make_config(loaded, options), options, torch.device("cpu"), predict.Clock())
    cli = predict.main(["--checkpoint", str(multiclass["checkpoint"]), "--out", str(tmp_path / "cli"),
                        "--top-k", "2", "data.test_subset=null"])
    assert r["data"]["samples"] == cli["data"]["samples"] == 60
    assert r["accuracy"] == cli["accuracy"] and r["metrics"] == cli["metrics"]
    args = parse_args(["--images", "a.png", "--top-k", "3", "x=1"])
    fields = {f.name for f in dataclasses.fields(predict.Options)}
    assert set(vars(args)) - {"best"} == fields  # --best is the default source, no field of its own
    assert options_from_args(args) == predict.Options(images=("a.png",), top_k=3, overrides=("x=1",))


def test_training_checkpoint_with_its_run_folder(multiclass):
    r = predict.main(["--checkpoint", str(multiclass["checkpoint"])])
    assert r["accuracy"] == pytest.approx(multiclass["result"]["test"]["accuracy/test"], abs=1e-6)
    assert r["reported"] == pytest.approx(multiclass["result"]["test"])  # from results.json
    assert Path(r["out_dir"]).parent == Path(multiclass["result"]["output_dir"]).resolve() / "predict"


def test_auto_precision_on_a_gpu_is_the_one_the_model_was_trained_with(multiclass):
    """A CPU run records 32-true: on a GPU, predict scores it in float32, not in bf16 autocast."""
    import dataclasses

    from tune_cifar.predict import Options, load_checkpoint
    from tune_cifar.predict.inference import autocast_for
    from tune_cifar.predict.settings import make_config

    loaded = load_checkpoint(Path(multiclass["checkpoint"]))
    assert loaded.hparams["trained_precision"] == "32-true"
    cfg = make_config(loaded, Options())
    assert cfg.trainer.precision == "auto"
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert loaded.precision(cfg, gpu) == "32-true" and loaded.precision(cfg, cpu) == "auto"
    assert type(autocast_for(gpu, loaded.precision(cfg, gpu))).__name__ == "nullcontext"  # float32
    loaded.net.extra_hparams["trained_precision"] = "bf16-mixed"
    assert loaded.precision(cfg, gpu) == "bf16-mixed"
    explicit = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, precision="16-mixed"))
    assert loaded.precision(explicit, gpu) == "16-mixed"  # an explicit setting wins


def test_bare_checkpoint_needs_only_the_data_path(multiclass, cifar10_root, tmp_path):
    bare = tmp_path / "model.ckpt"
    shutil.copy(multiclass["checkpoint"], bare)  # no config.yaml, no results.json next to it
    r = predict.main(["--checkpoint", str(bare), "--data-path", str(cifar10_root), "data.download=false"])
    assert r["data"]["samples"] == 60 and r["reported"] == {} and 0 <= r["accuracy"] <= 1
    # on the run's seeded 40-image test subset it scores what the run recorded
    r = predict.main(["--checkpoint", str(bare), "--data-path", str(cifar10_root), "data.download=false",
                      "data.test_subset=40", "--out", str(tmp_path / "subset")])
    assert r["data"]["samples"] == 40
    assert r["accuracy"] == pytest.approx(multiclass["result"]["test"]["accuracy/test"], abs=1e-6)


def test_inference_model_equals_the_lightning_system(multiclass):
    """predict's Classifier is the one the training system holds; checkpoint keys are its own."""
    from tune_cifar.checkpoint import read_checkpoint
    from tune_cifar.config import OptimizerConfig, TaskConfig, build_section
    from tune_cifar.models import ModelSpec
    from tune_cifar.system import ClassificationSystem, InputSpec

    net = predict.load_checkpoint(multiclass["checkpoint"]).net
    ckpt = read_checkpoint(multiclass["checkpoint"])
    hp = ckpt["hyper_parameters"]
    system = ClassificationSystem(ModelSpec.from_dict(hp["model_spec"]), build_section(TaskConfig, hp["task"], "task"),
                                  build_section(OptimizerConfig, hp["optimizer"], "optimizer"),
                                  InputSpec.from_dict(hp["input_spec"]), fetch_weights=False)
    system.load_state_dict(ckpt["state_dict"])  # Lightning's own resume path
    assert set(system.state_dict()) == set(ckpt["state_dict"]) == set(net.state_dict())
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.equal(net(x), system.eval()(x))


def test_binary_export_uses_the_threshold(binary, tmp_path):
    r = predict.main(["--export", str(binary["export"]), "--out", str(tmp_path / "a")])
    assert r["task"] == "binary" and r["threshold"] == 0.5
    assert r["accuracy"] == pytest.approx(binary["result"]["test"]["accuracy/test"], abs=1e-6)
    assert r["metrics"]["loss/test"] == pytest.approx(binary["result"]["test"]["loss/test"], rel=1e-5)
    assert np.array(r["confusion_matrix"]["matrix"]).shape == (2, 2)
    low = predict.main(["--export", str(binary["export"]), "--out", str(tmp_path / "b"), "--threshold", "1e-6"])
    assert low["threshold"] == 1e-6 and low["per_class_accuracy"]["animal"] == 1.0  # everything is class 1
    assert low["per_class_accuracy"]["vehicle"] == 0.0
    assert {row["predicted"] for row in _rows(tmp_path / "b" / "predictions.csv")} == {"animal"}


def test_multilabel_export_uses_the_threshold(multilabel, tmp_path):
    r = predict.main(["--export", str(multilabel["export"]), "--out", str(tmp_path / "a")])
    assert r["task"] == "multilabel" and set(r["per_class_accuracy"]) == {"cat", "dog", "fox", "night"}
    assert r["accuracy"] == pytest.approx(multilabel["result"]["test"]["accuracy/test"], abs=1e-6)
    # the loss as in training: with the export's label smoothing
    assert r["metrics"]["loss/test"] == pytest.approx(multilabel["result"]["test"]["loss/test"], rel=1e-5)
    assert 0 <= r["exact_match"] <= 1 and np.array(r["confusion_matrix"]["matrix"]).shape == (4, 2, 2)
    rows = _rows(tmp_path / "a" / "predictions.csv")
    assert all(set(filter(None, row["true"].split(";"))) <= {"cat", "dog", "fox", "night"} for row in rows)
    predict.main(["--export", str(multilabel["export"]), "--out", str(tmp_path / "b"), "--threshold", "0.999999"])
    assert {row["predicted"] for row in _rows(tmp_path / "b" / "predictions.csv")} == {""}


# --------------------------------------------------------------------------- images


def _save(array_chw: np.ndarray, path: Path, mode: str = "RGB", size: int | None = None) -> Path:
    from PIL import Image

    img = Image.fromarray(array_chw.transpose(1, 2, 0), "RGB").convert(mode)
    if size:
        img = img.resize((size, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def test_image_files_get_the_same_predictions_as_the_dataset(multiclass, tmp_path, capsys):
    from tune_cifar.data import load_data

    cfg = multiclass["cfg"]
    arrays = load_data(cfg.data, cfg.task.task)
    ids = _test_split_ids(cfg)[:5]
    folder = tmp_path / "imgs"
    for i in ids:  # the test images themselves, as PNG files in a folder
        _save(arrays.test_x[i], folder / f"{i:03d}.png")
    _save(arrays.test_x[0], folder / "sub" / "gray.jpg", mode="L", size=50)  # converted + resized
    _save(arrays.test_x[0], folder / "sub" / "rgba.png", mode="RGBA", size=20)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image")  # ignored: folders are searched for png/jpg/jpeg
    missing = tmp_path / "missing.jpg"

    dataset = predict.main(["--export", str(multiclass["export"]), "--out", str(tmp_path / "ds")])
    by_id = {int(row["sample"]): row for row in _rows(Path(dataset["out_dir"]) / "predictions.csv")}
    capsys.readouterr()
    r = predict.main(["--export", str(multiclass["export"]), "--out", str(tmp_path / "im"),
                      "--images", str(folder), str(missing)])
    assert r["classified"] == 7 and r["skipped"] == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.jpg" in err and "Traceback" not in err
    rows = {Path(row["file"]).name: row for row in _rows(tmp_path / "im" / "predictions.csv")}
    assert "notes.txt" not in rows and rows["missing.jpg"]["error"] == "not found"
    assert rows["broken.png"]["error"].startswith("unreadable image") and rows["broken.png"]["predicted"] == ""
    classes = predict.load_export(multiclass["export"]).classes
    for i in ids:
        row, want = rows[f"{i:03d}.png"], by_id[i]
        assert row["predicted"] == want["predicted"] and row["top1"] == want["top1"]
        assert float(row["top1_prob"]) == pytest.approx(float(want["top1_prob"]), abs=1e-5)
    assert rows["gray.jpg"]["predicted"] in classes and rows["rgba.png"]["error"] == ""


def test_no_readable_image_exits_2(multiclass, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_text("no")
    with pytest.raises(SystemExit) as exc:
        predict.main(["--export", str(multiclass["export"]), "--images", str(tmp_path / "bad.jpg")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("tune_cifar.predict: error: no readable images")


# --------------------------------------------------------------------------- conversion


def _reference(multiclass, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return x, Classifier.from_checkpoint(multiclass["checkpoint"])(x)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in favour of torch.export
def test_torchscript_matches_pytorch(multiclass, tmp_path):
    r = predict.main(["--export", str(multiclass["export"]), "--to", "torchscript", "--out", str(tmp_path)])
    assert r["verified"] and Path(r["file"]).name == "model.torchscript.pt"
    x, expected = _reference(multiclass)
    with torch.no_grad():
        got = torch.jit.load(r["file"])(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    io = json.loads((tmp_path / "model.torchscript.json").read_text())
    assert io["input"]["dtype"] == "uint8" and io["classes"][0] == "airplane"


def test_onnx_matches_pytorch(multiclass, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install 'tune_cifar[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="checking ONNX outputs needs onnxruntime")
    r = predict.main(["--export", str(multiclass["export"]), "--to", "onnx", "--out", str(tmp_path)])
    assert r["verified"]
    x, expected = _reference(multiclass)
    session = ort.InferenceSession(r["file"], providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- bad inputs


def _copy_export(multiclass, tmp_path: Path) -> Path:
    dest = tmp_path / "export"
    shutil.copytree(multiclass["export"], dest)
    return dest


def _evil(path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, path)


def _other_weights(path: Path) -> None:
    """Keep the hyper-parameters (tiny_cnn), put in the weights of a small_cnn."""
    from tune_cifar.models import ModelSpec, build_model

    ckpt = torch.load(path, weights_only=True)
    other = build_model(ModelSpec(provider="builtin", name="small_cnn", num_classes=10))
    ckpt["state_dict"] = {"mean": ckpt["state_dict"]["mean"], "std": ckpt["state_dict"]["std"],
                          **{f"model.{k}": v for k, v in other.state_dict().items()}}
    torch.save(ckpt, path)


def _other_model(path: Path) -> None:
    """A complete, consistent model.pt of another model, dropped into this export."""
    from tune_cifar.models import ModelSpec, build_model

    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["model_spec"]["name"] = "small_cnn"
    other = build_model(ModelSpec(provider="builtin", name="small_cnn", num_classes=10))
    ckpt["state_dict"] = {"mean": ckpt["state_dict"]["mean"], "std": ckpt["state_dict"]["std"],
                          **{f"model.{k}": v for k, v in other.state_dict().items()}}
    torch.save(ckpt, path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD = {
    "nothing exported": (None, lambda d, t, c: ["--best", "--output-dir", str(t / "empty")], "no exported model"),
    "missing export": (None, lambda d, t, c: ["--export", str(t / "nope")], "export folder"),
    "not an export": (None, lambda d, t, c: ["--export", str(t)], "not a tune_cifar export"),
    "missing checkpoint": (None, lambda d, t, c: ["--checkpoint", str(t / "x.ckpt")], "not found"),
    "truncated weights": (_truncate, None, "truncated or corrupt"),
    "garbage weights": (lambda p: p.write_bytes(b"\x80\x04garbage"), None, "cannot be read"),
    "arbitrary unpickling": (_evil, None, "unpickling arbitrary"),
    "weights of another model": (_other_weights, None, "weights are from a different model"),
    "model.pt of another model": (_other_model, None, "different models"),
    "class-count mismatch": (None, lambda d, t, c: ["--export", str(d), "data.name=cifar100",
                                                    f"data.dataset_path={c}", "data.num_classes=100"],
                             "class-count mismatch: the model has 10 classes"),
    "missing dataset": (None, lambda d, t, c: ["--export", str(d), "--data-path", "/nonexistent/cifar"],
                        "/nonexistent/cifar"),
    "unknown override": (None, lambda d, t, c: ["--export", str(d), "data.colour=red"], "data.colour"),
    "group override": (None, lambda d, t, c: ["--export", str(d), "data=cifar100"], "data.name=cifar100"),
    "threshold on multiclass": (None, lambda d, t, c: ["--export", str(d), "--threshold", "0.3"], "multiclass"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line(case, multiclass, cifar100_root, tmp_path, capsys):
    damage, argv, needle = BAD[case]
    export = _copy_export(multiclass, tmp_path / "copy")
    if damage is not None:
        damage(export / "model.pt")
    args = argv(export, tmp_path, cifar100_root) if argv else ["--export", str(export)]
    with pytest.raises(SystemExit) as exc:
        predict.main([*args, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("tune_cifar.predict: error: ") and needle in err, err


def test_stale_config_blocks_evaluation_but_not_images(multiclass, tmp_path, capsys):
    export = _copy_export(multiclass, tmp_path)
    config = yaml.safe_load((export / "config.yaml").read_text())
    config["data"]["colour"] = "red"  # e.g. a key of another tune_cifar version
    (export / "config.yaml").write_text(yaml.safe_dump(config))
    img = _save(np.zeros((3, 32, 32), np.uint8), tmp_path / "black.png")
    r = predict.main(["--export", str(export), "--images", str(img), "--out", str(tmp_path / "o")])
    assert r["classified"] == 1 and "data.colour" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        predict.main(["--export", str(export), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "data.colour" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_exits_2(multiclass, capsys):
    with pytest.raises(SystemExit) as exc:
        predict.main(["--export", str(multiclass["export"]), "--device", "cuda"])
    assert exc.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err


# --------------------------------------------------------------------------- as a program


def _imported(importtime_stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:")}


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_cli_evaluates_without_ray_or_lightning(multiclass, tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tune_cifar.predict",
                           "--export", str(multiclass["export"]), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy:" in proc.stdout and (tmp_path / "metrics.json").is_file()
    assert not _top(_imported(proc.stderr)) & {"ray", "pytorch_lightning", "lightning"}


def test_cli_images_start_light(multiclass, tmp_path):
    """--images needs neither Ray nor Lightning, torchmetrics or torchvision: start-up is torch's."""
    img = _save(np.zeros((3, 32, 32), np.uint8), tmp_path / "black.png")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tune_cifar.predict",
                           "--export", str(multiclass["export"]), "--out", str(tmp_path / "o"), "--images", str(img)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _top(_imported(proc.stderr)) & {"ray", "pytorch_lightning", "lightning", "torchmetrics",
                                                "torchvision", "timm"}


def test_cli_bad_input_prints_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tune_cifar.predict", "--best", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("tune_cifar.predict: error: no exported model") and "tune_cifar.search" in proc.stderr


@pytest.mark.slow
def test_moved_export_of_a_real_search(cifar10_root, tmp_path):
    """A tiny Ray search exports its best trial; moved elsewhere, predict reproduces its test accuracy."""
    import ray

    from tune_cifar.search.cli import run_search
    from tune_cifar.search.space import load_space

    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump({
        "base": ["data=cifar10", f"data.dataset_path={cifar10_root}", "data.download=false",
                 "data.val_fraction=0.25", "data.train_batch_size=32", "data.test_subset=50",
                 "model=small_cnn", "model.model_name=tiny_cnn"],
        "params": {"optimizer.lr": {"loguniform": [1e-3, 0.05]}, "optimizer.optimizer": "adamw"},
        "search": {"experiment": "tiny", "storage_path": str(tmp_path / "outputs"), "num_samples": 2,
                   "max_concurrent_trials": 1, "resources": {"cpu": 1},
                   "scheduler": {"name": "fifo", "max_epochs": 2}, "final": {"top_k": 0}},
    }, sort_keys=False))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        out = run_search(load_space(space))
    finally:
        ray.shutdown()
    moved = tmp_path / "shipped" / "model"
    shutil.move(out["export"], moved)
    shutil.rmtree(tmp_path / "outputs")  # nothing of the search is left but the moved export
    r = predict.main(["--export", str(moved)])
    assert r["data"]["samples"] == 50
    assert r["accuracy"] == pytest.approx(out["metrics"]["accuracy/test"], abs=1e-6)
