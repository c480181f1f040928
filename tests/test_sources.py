"""Dataset sources: real file formats read back exactly; every bad input is a UserError."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from cifar_files import (
    CIFAR10_CLASSES,
    cifar100_names,
    dump,
    write_cifar10,
    write_cifar100,
    write_cifar_batch,
    write_image_folder,
)
from tune_cifar.data import cifar
from tune_cifar.data.fashion_mnist import FASHION_MNIST_DIR
from tune_cifar.data.sources import (
    ImageArrays,
    group_labels,
    load_source,
    subset,
)
from tune_cifar.errors import UserError


def _raw(file: Path) -> dict:
    """Read a file we wrote ourselves with the unrestricted unpickler (trusted)."""
    with open(file, "rb") as f:
        return pickle.load(f, encoding="bytes")


# --------------------------------------------------------------------------- CIFAR-10 / 100


@pytest.mark.parametrize("protocol", [None, 0, 2, 3, 4, 5])  # None: Python-2 style, like the archives
def test_cifar10_reads_back_exactly(tmp_path, protocol):
    folder = write_cifar10(tmp_path, n_train=53, n_test=21, protocol=protocol)
    a = load_source("cifar10", tmp_path, download=False)
    raws = [_raw(folder / f"data_batch_{i}") for i in range(1, 6)]
    expected_x = np.concatenate([r[b"data"] for r in raws]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(a.train_x, expected_x)
    np.testing.assert_array_equal(a.train_y, np.concatenate([r[b"labels"] for r in raws]))
    test = _raw(folder / "test_batch")
    np.testing.assert_array_equal(a.test_x, test[b"data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(a.test_y, test[b"labels"])
    assert a.train_x.dtype == np.uint8 and a.train_y.dtype == np.int64
    assert a.train_x.shape == (53, 3, 32, 32) and a.test_x.shape == (21, 3, 32, 32)
    assert a.classes == CIFAR10_CLASSES
    assert (a.num_classes, a.in_chans, a.image_size, a.multilabel) == (10, 3, (32, 32), False)
    assert a.mean == (0.4914, 0.4822, 0.4465) and a.std == (0.2470, 0.2435, 0.2616)


def test_cifar_pixels_are_rgb_planes_in_chw_order(tmp_path):
    folder = write_cifar10(tmp_path)
    row = np.arange(3072, dtype=np.int64)
    data = np.stack([row % 251, (row * 7) % 256]).astype(np.uint8)  # 2 images, position-coded
    write_cifar_batch(folder / "data_batch_1", data, {b"labels": [3, 9]})
    a = load_source("cifar10", folder, download=False)  # the folder itself is accepted too
    c, i, j = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    flat = c * 1024 + i * 32 + j  # R plane, then G, then B; each row-major
    np.testing.assert_array_equal(a.train_x[0], flat % 251)
    np.testing.assert_array_equal(a.train_x[1], (flat * 7) % 256)
    assert a.train_y[:2].tolist() == [3, 9]


def test_generated_cifar_is_learnable(tmp_path):
    """Mean colour alone separates the classes, so a tiny model learns them fast."""
    write_cifar10(tmp_path, n_train=200, n_test=100)
    a = load_source("cifar10", tmp_path, download=False)
    feats = lambda x: x.reshape(len(x), 3, -1).mean(-1)  # noqa: E731
    centroids = np.stack([feats(a.train_x[a.train_y == k]).mean(0) for k in range(10)])
    pred = np.argmin(((feats(a.test_x)[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == a.test_y).mean() > 0.95


def test_cifar100_fine_and_coarse(tmp_path):
    folder = write_cifar100(tmp_path, n_train=40, n_test=10, protocol=None)
    fine = load_source("cifar100", tmp_path, download=False, cifar100_labels="fine")
    coarse = load_source("cifar100", tmp_path, download=False, cifar100_labels="coarse")
    raw = _raw(folder / "train")
    np.testing.assert_array_equal(fine.train_x, raw[b"data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(fine.train_y, raw[b"fine_labels"])
    np.testing.assert_array_equal(coarse.train_y, raw[b"coarse_labels"])
    np.testing.assert_array_equal(coarse.test_y, fine.test_y // 5)
    fine_names, coarse_names = cifar100_names()
    assert fine.classes == fine_names and coarse.classes == coarse_names
    assert (fine.num_classes, coarse.num_classes) == (100, 20)
    assert fine.mean == (0.5071, 0.4865, 0.4409)
    with pytest.raises(UserError, match=r"data.cifar100_labels='middle'.*allowed: coarse, fine"):
        load_source("cifar100", tmp_path, download=False, cifar100_labels="middle")


def test_image_size_resizes_array_sources(tmp_path):
    write_cifar10(tmp_path, n_train=10, n_test=5)
    a = load_source("cifar10", tmp_path, download=False, image_size=16)
    assert a.train_x.shape == (10, 3, 16, 16) and a.train_x.dtype == np.uint8


# --------------------------------------------------------------------------- CIFAR errors


def test_missing_cifar_without_download(tmp_path):
    with pytest.raises(UserError) as err:
        load_source("cifar10", tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "data.download=false" in msg
    assert "set data.dataset_path=<folder containing cifar-10-batches-py>" in msg
    assert "\n" not in msg


def _unreachable(monkeypatch, spec_name: str) -> None:
    spec = getattr(cifar, spec_name)
    url = "https://cifar-download.invalid/" + Path(spec.url).name  # .invalid never resolves
    monkeypatch.setattr(cifar, spec_name, dataclasses.replace(spec, url=url))


@pytest.mark.parametrize("name,spec_name", [("cifar10", "CIFAR10"), ("cifar100", "CIFAR100")])
def test_missing_cifar_download_fails_fast(tmp_path, monkeypatch, name, spec_name):
    _unreachable(monkeypatch, spec_name)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"download failed .*set data.dataset_path=") as err:
        load_source(name, tmp_path / "data", download=True)
    assert time.monotonic() - start < 10
    assert str(tmp_path / "data") in str(err.value)
    assert not (tmp_path / "data").exists()  # nothing created when offline


def test_real_url_fails_fast_offline(tmp_path):
    if cifar._probe(cifar.CIFAR10.url, 5.0) is None:
        pytest.skip("www.cs.toronto.edu is reachable: this test would download 163 MB")
    start = time.monotonic()
    with pytest.raises(UserError, match="download failed"):
        load_source("cifar10", tmp_path, download=True)
    assert time.monotonic() - start < 15


def test_probe_gives_up_on_a_silent_host(monkeypatch):
    def silent(*args, **kwargs):
        time.sleep(2)
        raise OSError("answered too late")

    monkeypatch.setattr(socket, "create_connection", silent)
    start = time.monotonic()
    reason = cifar._probe("https://example.org/x.tar.gz", 0.2)
    assert time.monotonic() - start < 1
    assert "no answer from example.org within 0.2 s" in reason


def test_bad_probe_timeout_env(tmp_path, monkeypatch):
    monkeypatch.setenv(cifar.PROBE_TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match=r"TUNE_CIFAR_OFFLINE_PROBE_TIMEOUT='soon' must be a number"):
        load_source("cifar10", tmp_path, download=True)


def test_missing_file_in_cifar_folder(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"data_batch_3: file missing"):
        load_source("cifar10", tmp_path, download=False)


def test_truncated_pickle(tmp_path):
    folder = write_cifar10(tmp_path)
    content = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(content[: len(content) // 2])
    with pytest.raises(UserError, match=r"data_batch_2: truncated or corrupt pickle"):
        load_source("cifar10", tmp_path, download=False)


def test_missing_key(tmp_path):
    folder = write_cifar10(tmp_path)
    d = _raw(folder / "test_batch")
    del d[b"data"]
    dump(d, folder / "test_batch")
    with pytest.raises(UserError, match=r"test_batch: missing key b'data'"):
        load_source("cifar10", tmp_path, download=False)


def test_missing_label_names(tmp_path):
    write_cifar100(tmp_path)
    dump({b"fine_label_names": [b"a"]}, tmp_path / "cifar-100-python" / "meta")
    with pytest.raises(UserError, match=r"meta: missing key b'coarse_label_names'"):
        load_source("cifar100", tmp_path, download=False, cifar100_labels="coarse")


@pytest.mark.parametrize(
    "data,labels,match",
    [
        (np.zeros((4, 100), np.uint8), [0, 1, 2, 3], r"b'data' must be a uint8 array \[N, 3072\], got uint8 \(4, 100\)"),
        (np.zeros((4, 3072), np.float32), [0, 1, 2, 3], r"b'data' must be a uint8 array"),
        (np.zeros((4, 3072), np.uint8), [0, 1, 2], r"b'labels' has shape \(3,\), expected \(4,\)"),
        (np.zeros((4, 3072), np.uint8), [0, 1, 2, 10], r"b'labels' out of range 0..9"),
    ],
)
def test_wrong_shapes_and_labels(tmp_path, data, labels, match):
    folder = write_cifar10(tmp_path)
    dump({b"data": data, b"labels": labels}, folder / "data_batch_4")
    with pytest.raises(UserError, match=r"data_batch_4: " + match):
        load_source("cifar10", tmp_path, download=False)


def test_not_a_dict(tmp_path):
    folder = write_cifar10(tmp_path)
    dump([1, 2, 3], folder / "batches.meta")
    with pytest.raises(UserError, match=r"batches.meta: expected a dict, got list"):
        load_source("cifar10", tmp_path, download=False)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_executing_pickle_is_refused(tmp_path, protocol):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump({b"data": _Exploit(marker), b"labels": []}, folder / "data_batch_1", protocol)
    with pytest.raises(UserError, match=r"data_batch_1: not a CIFAR pickle: refused global (posix|os|nt)\.system"):
        load_source("cifar10", tmp_path, download=False)
    assert not marker.exists()
    dump({b"label_names": _EvalExploit()}, folder / "batches.meta", protocol)
    with pytest.raises(UserError, match=r"batches.meta: not a CIFAR pickle: refused global (builtins|__builtin__).eval"):
        load_source("cifar10", tmp_path, download=False)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST not installed in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    a = load_source("fashion_mnist", None)  # default folder
    assert a.train_x.shape == (60000, 1, 28, 28) and a.test_x.shape == (10000, 1, 28, 28)
    assert a.train_x.dtype == np.uint8 and a.train_y.dtype == np.int64
    assert a.train_y.shape == (60000,) and a.test_y.shape == (10000,)
    assert sorted(np.unique(a.train_y)) == list(range(10)) and sorted(np.unique(a.test_y)) == list(range(10))
    assert np.bincount(a.train_y).tolist() == [6000] * 10  # the real set is balanced
    assert a.classes[0] == "T-shirt/top" and a.classes[9] == "Ankle boot" and a.num_classes == 10
    assert (a.in_chans, a.image_size) == (1, (28, 28))
    pixels = a.train_x.astype(np.float64) / 255  # the normalisation stats are those of these pixels
    assert abs(pixels.mean() - a.mean[0]) < 1e-3 and abs(pixels.std() - a.std[0]) < 1e-3
    assert 0.27 < a.mean[0] < 0.30  # real pixels, not zeros


def _write_idx(file: Path, arr: np.ndarray, magic: bytes | None = None) -> None:
    header = magic or bytes([0, 0, 8, arr.ndim])
    with gzip.open(file, "wb") as f:
        f.write(header + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes())


def _write_fmnist(folder: Path, n: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.arange(n * 784).reshape(n, 28, 28) % 256)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_small_fashion_mnist_files(tmp_path):
    _write_fmnist(tmp_path)
    a = load_source("fashion_mnist", tmp_path)
    assert a.train_x.shape == (6, 1, 28, 28) and a.train_y.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(a.train_x[1, 0].ravel(), (784 + np.arange(784)) % 256)


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(UserError, match=r"fashion_mnist: folder .*nowhere not found.*apt-get install dataset-fashion-mnist.*data.dataset_path"):
        load_source("fashion_mnist", tmp_path / "nowhere")


def test_fashion_mnist_missing_file(tmp_path):
    _write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz not found"):
        load_source("fashion_mnist", tmp_path)


def test_fashion_mnist_bad_magic(tmp_path):
    _write_fmnist(tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((6, 28, 28)), magic=b"\x00\x00\x09\x03")
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.gz: bad idx magic 00000903"):
        load_source("fashion_mnist", tmp_path)


def test_fashion_mnist_bad_size_and_gzip(tmp_path):
    _write_fmnist(tmp_path)
    file = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(file, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(5))
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz: 5 bytes of data, header says \(10,\)"):
        load_source("fashion_mnist", tmp_path)
    file.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz: unreadable"):
        load_source("fashion_mnist", tmp_path)


# --------------------------------------------------------------------------- image folders


def test_image_folder_train_test(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog", "eel"), n_per_class=4, size=16)
    a = load_source("folder", tmp_path)
    assert a.classes == ["cat", "dog", "eel"]
    assert a.train_x.shape == (12, 3, 16, 16) and a.test_x.shape == (12, 3, 16, 16)
    assert a.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and a.train_y.dtype == np.int64
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "train" / "cat" / "cat_0.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(a.train_x[0], first)
    mean = a.train_x.reshape(12, 3, -1).transpose(1, 0, 2).reshape(3, -1).mean(1) / 255
    np.testing.assert_allclose(a.mean, mean, rtol=1e-6)
    assert len(a.std) == 3 and all(s > 0 for s in a.std)


def test_image_folder_holdout_gray_and_resize(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"), n_per_class=10, size=12, split=False, mode="L")
    a = load_source("folder", tmp_path, image_size=8)
    assert a.train_x.shape == (16, 1, 8, 8) and a.test_x.shape == (4, 1, 8, 8)
    b = load_source("folder", tmp_path, image_size=8)
    np.testing.assert_array_equal(a.test_x, b.test_x)  # seeded holdout


def test_sixteen_bit_grayscale_is_scaled_not_clipped_in_training_and_predict(tmp_path):
    """16-bit PNGs (scientific, medical): PIL's convert('L') would clip every value above 255 to white."""
    from PIL import Image

    from tune_cifar.predict.images import read_image

    values = np.array([[0, 257, 32896], [65535, 1000, 12850]], dtype=np.uint16)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(values).save(tmp_path / split / cls / "x.png")
    assert Image.open(tmp_path / "train" / "a" / "x.png").mode.startswith("I")
    want = np.array([[0, 1, 128], [255, 4, 50]], dtype=np.uint8)
    a = load_source("folder", tmp_path)
    assert a.train_x.shape == (2, 1, 2, 3)
    np.testing.assert_array_equal(a.train_x[0, 0], want)
    np.testing.assert_array_equal(read_image(tmp_path / "test" / "a" / "x.png", 1, (2, 3))[0], want)


def test_exif_orientation_is_applied_in_training_and_predict(tmp_path):
    """A phone photo stored landscape with 'rotate 90' in its EXIF is read as shown (portrait)."""
    from PIL import Image

    from tune_cifar.predict.images import read_image

    rng = np.random.default_rng(0)
    shown = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)  # H=6, W=4 as displayed
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(shown).save(tmp_path / split / cls / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the viewer rotates it 90 degrees clockwise
    turned = tmp_path / "train" / "a" / "turned.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, k=1))).save(turned, exif=exif)
    a = load_source("folder", tmp_path)  # no "size differs" error: sizes are compared as shown
    assert a.train_x.shape == (3, 3, 6, 4)
    for image in a.train_x:
        np.testing.assert_array_equal(image, shown.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_image(turned, 3, (6, 4)), shown.transpose(2, 0, 1))


def test_holdout_keeps_a_class_folder_named_test_as_a_class(tmp_path):
    write_image_folder(tmp_path, classes=("test", "other"), n_per_class=10, size=8, split=False)
    a = load_source("folder", tmp_path)
    assert a.classes == ["other", "test"] and a.train_x.shape[0] == 16 and a.test_x.shape[0] == 4
    assert set(a.train_y.tolist()) == {0, 1}


def test_image_folder_sizes_must_match(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path, n_per_class=2, size=16)
    Image.new("RGB", (20, 16)).save(tmp_path / "train" / "dog" / "big.png")
    with pytest.raises(UserError, match=r"big.png: size 20x16 differs .*set data.image_size"):
        load_source("folder", tmp_path)
    assert load_source("folder", tmp_path, image_size=16).train_x.shape == (5, 3, 16, 16)


def test_image_folder_multilabel_csv(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog"), n_per_class=2, size=8)
    (tmp_path / "labels.csv").write_text(
        "file,labels\n"
        "train/cat/cat_0.png,cat\n"
        "train/cat/cat_1.png,cat;indoor\n"
        "train/dog/dog_0.png,dog indoor\n"
        "test/dog/dog_1.png,\n"
    )
    a = load_source("folder", tmp_path, labels_csv="labels.csv")
    assert a.classes == ["cat", "dog", "indoor"] and a.multilabel
    assert a.train_y.dtype == np.float32
    assert a.train_y.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 1]]
    assert a.test_y.tolist() == [[0, 0, 0]] and a.test_x.shape == (1, 3, 8, 8)


def test_multilabel_csv_errors(tmp_path):
    write_image_folder(tmp_path, n_per_class=1, size=8)
    (tmp_path / "bad.csv").write_text("path,tags\nx.png,a\n")
    with pytest.raises(UserError, match=r"bad.csv: needs the header 'file,labels'"):
        load_source("folder", tmp_path, labels_csv="bad.csv")
    (tmp_path / "missing.csv").write_text("file,labels\ntrain/cat/nope.png,a\n")
    with pytest.raises(UserError, match=r"missing.csv:2: image .*nope.png not found"):
        load_source("folder", tmp_path, labels_csv="missing.csv")
    with pytest.raises(UserError, match=r"data.labels_csv: nothere.csv not found"):
        load_source("folder", tmp_path, labels_csv="nothere.csv")
    with pytest.raises(UserError, match=r"data.labels_csv is only supported with data.name=folder"):
        load_source("cifar10", tmp_path, labels_csv="bad.csv")


def test_unreadable_image(tmp_path):
    write_image_folder(tmp_path, n_per_class=2, size=8)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"broken.png: unreadable image"):
        load_source("folder", tmp_path)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match=r"folder: no .png/.jpg/.jpeg images in"):
        load_source("folder", tmp_path)
    with pytest.raises(UserError, match=r"data.dataset_path=.*nowhere is not a folder"):
        load_source("folder", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"data.dataset_path is required for data.name=folder"):
        load_source("folder", None)


def test_unknown_source():
    with pytest.raises(UserError, match=r"data.name='imagenet' is not allowed; allowed: cifar10, cifar100, fashion_mnist, folder"):
        load_source("imagenet", "x")


# --------------------------------------------------------------------------- group_labels / subset


def _cifar_like() -> ImageArrays:
    y = np.arange(20) % 10
    x = np.zeros((20, 3, 4, 4), np.uint8)
    return ImageArrays(x, y, x[:10], y[:10].copy(), list(CIFAR10_CLASSES), (0.5,) * 3, (0.25,) * 3)


VEHICLES = ["airplane", "automobile", "ship", "truck"]
ANIMALS = ["bird", "cat", "deer", "dog", "frog", "horse"]


def test_group_labels_binary():
    a = _cifar_like()
    g = group_labels(a, {"vehicle": VEHICLES, "animal": ANIMALS})
    assert g.classes == ["vehicle", "animal"] and g.num_classes == 2
    vehicle = np.isin(np.array(CIFAR10_CLASSES)[a.train_y], VEHICLES)
    np.testing.assert_array_equal(g.train_y, np.where(vehicle, 0, 1))
    assert g.train_y.dtype == np.int64 and g.test_y.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert g.train_x is a.train_x and g.mean == a.mean


def test_group_labels_multilabel():
    a = _cifar_like()
    multi = np.eye(10, dtype=np.float32)[a.train_y]
    multi[0, 2] = 1  # airplane + bird
    a = dataclasses.replace(a, train_y=multi, test_y=multi[:3])
    g = group_labels(a, {"vehicle": VEHICLES, "animal": ANIMALS})
    assert g.train_y[0].tolist() == [1, 1] and g.train_y[2].tolist() == [0, 1] and g.train_y.dtype == np.float32


def test_group_labels_errors():
    a = _cifar_like()
    with pytest.raises(UserError, match=r"unknown class 'plane'; allowed: airplane, automobile, bird"):
        group_labels(a, {"vehicle": ["plane"], "animal": ANIMALS})
    with pytest.raises(UserError, match=r"classes not in any group: ship, truck"):
        group_labels(a, {"vehicle": ["airplane", "automobile"], "animal": ANIMALS})
    with pytest.raises(UserError, match=r"class 'cat' is in more than one group"):
        group_labels(a, {"vehicle": VEHICLES + ["cat"], "animal": ANIMALS})
    with pytest.raises(UserError, match=r"data.label_groups.animal must be a non-empty list"):
        group_labels(a, {"vehicle": VEHICLES, "animal": []})


def test_subset():
    x = np.arange(100)[:, None] * np.ones((1, 3))
    y = np.arange(100)
    sx, sy = subset(x, y, 10, seed=1)
    assert len(sx) == 10 and len(set(sy.tolist())) == 10
    np.testing.assert_array_equal(sx[:, 0], sy)  # pairs stay aligned
    np.testing.assert_array_equal(subset(x, y, 10, seed=1)[1], sy)
    assert subset(x, y, 10, seed=2)[1].tolist() != sy.tolist()
    assert subset(x, y, None, seed=0)[0] is x and len(subset(x, y, 500, seed=0)[0]) == 100
    with pytest.raises(UserError):
        subset(x, y, 0, seed=0)


def test_val_and_test_rows_do_not_depend_on_the_training_subset():
    """Runs with and without data.train_subset are scored on the same validation and test images."""
    from tune_cifar.config import DataConfig
    from tune_cifar.data.splits import split_indices

    def split(**kw):
        return split_indices(5000, 1000, DataConfig(val_fraction=0.2, val_subset=300, test_subset=200, **kw), seed=4)

    full, small, smaller = split(), split(train_subset=1000), split(train_subset=400)
    for part in ("val", "test"):
        assert full[part].tolist() == small[part].tolist() == smaller[part].tolist()
    assert len(full["val"]) == 300 and len(full["test"]) == 200 and len(small["train"]) == 1000
    assert set(smaller["train"]) <= set(full["train"]) and not set(full["train"]) & set(full["val"])
    assert split()["val"].tolist() == full["val"].tolist()  # seeded
    assert split_indices(5000, 1000, DataConfig(val_fraction=0.2, val_subset=300), seed=5)["val"].tolist() \
        != full["val"].tolist()


# --------------------------------------------------------------------------- the registry


def _toy_arrays(path: Path, *, image_size=None) -> ImageArrays:
    """Three classes of 8x8 colour squares, generated in memory (each class its own colour)."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 3
        x = (rng.integers(0, 40, (n, 3, 8, 8)) + 200 * (np.arange(3)[None, :, None, None] == y[:, None, None, None]))
        return x.astype(np.uint8), y.astype(np.int64)

    (train_x, train_y), (test_x, test_y) = split(96), split(30)
    return ImageArrays(train_x, train_y, test_x, test_y, ["red", "green", "blue"], (0.3,) * 3, (0.3,) * 3)


@pytest.fixture
def toy_source(monkeypatch):
    """Register ``toy`` for this test only (the registry is restored afterwards)."""
    from tune_cifar.data import sources

    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    calls = []

    def load(path, **needs):
        calls.append((path, needs))
        return _toy_arrays(path, **needs)

    sources.register_source("toy", load, default_path="toy_data", needs=("image_size",))
    return calls


def test_registered_source_is_one_registration_for_config_loader_and_search(toy_source, tmp_path):
    from tune_cifar.config import load_config
    from tune_cifar.data import sources
    from tune_cifar.search.params import parse_param
    from tune_cifar.train import run

    with pytest.raises(UserError, match="registers dataset source 'toy', which .* has registered already"):
        sources.register_source("toy", _toy_arrays)
    with pytest.raises(ValueError, match="unknown needs"):
        sources.register_source("toy2", _toy_arrays, needs=("colour",))
    a = load_source("toy", None, image_size=16)
    assert toy_source[-1] == (Path("toy_data"), {"image_size": 16})
    assert a.train_x.shape == (96, 3, 16, 16)  # the toy ignores it: resized after loading
    with pytest.raises(UserError, match=r"data.labels_csv is only supported with data.name=folder, not toy"):
        load_source("toy", None, labels_csv="x.csv")
    assert "data.image_size" in sources.source_keys() and "data.cifar100_labels" in sources.source_keys()
    with pytest.raises(UserError, match=r"data.cifar100_labels changes the dataset, which is loaded once"):
        parse_param("x.yaml: params.data.cifar100_labels", "data.cifar100_labels", {"choice": ["fine"]}, {})

    # config validation reads the registry: data.name=toy trains (fast_dev_run) through train.run
    cfg = load_config(["data=cifar10", "data.name=toy", "data.num_classes=3", "data.dataset_path=",
                       "data.train_batch_size=16", "data.inference_batch_size=32", "model=small_cnn",
                       "model.model_name=tiny_cnn", "trainer.accelerator=cpu", "trainer.fast_dev_run=true",
                       "trainer.enable_progress_bar=false", f"run.output_dir={tmp_path}"])
    result = run(cfg)
    assert toy_source[-1][0] == Path("toy_data")  # the source's default folder (dataset_path empty)
    assert {"accuracy/test", "loss/test"} <= set(result["test"])
    assert Path(result["output_dir"]).is_relative_to(tmp_path) and Path(result["output_dir"], "results.json").is_file()
    with pytest.raises(UserError, match=r"data.name='toys' is not allowed; allowed: .*folder, toy$"):
        load_config(["data.name=toys"])


def test_source_option_of_another_source_is_refused(tmp_path):
    write_cifar10(tmp_path, n_train=20, n_test=10)
    with pytest.raises(UserError, match=r"data.cifar100_labels is only supported with data.name=cifar100, not "
                                        r"cifar10"):
        load_source("cifar10", tmp_path, download=False, cifar100_labels="coarse")
    assert load_source("cifar10", tmp_path, download=False, cifar100_labels="fine").num_classes == 10  # default
