"""Batched augmentation: exact geometry, per-image randomness, reproducibility."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tune_cifar.data.augment import Augment, cutout, flip_mask, normalize, pad, random_crop, random_flip


def _images(b=32, c=3, h=16, w=16, dtype=torch.uint8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalize():
    x = _images(4, 3, 8, 8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == x.shape and out.device == x.device
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(normalize(x.float() / 255, mean, std), expected)  # floats in [0, 1]
    gray = _images(4, 1, 8, 8)
    torch.testing.assert_close(normalize(gray, (0.5,), (0.25,)), (gray.float() / 255 - 0.5) / 0.25)
    assert x.dtype == torch.uint8  # input untouched


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("c", [1, 3])
def test_shapes_and_dtypes_preserved(dtype, c):
    x = _images(8, c, 28, 28, dtype)
    out = Augment(crop_padding=4, flip=True, cutout=8)(x, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)


def test_crop_padding_zero_is_identity():
    x = _images()
    assert torch.equal(random_crop(x, 0, _gen()), x)
    assert torch.equal(Augment(crop_padding=0, flip=False, cutout=0)(x), x)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("c", [1, 3])
def test_crop_is_a_shifted_window_of_the_padded_input(mode, c):
    p, x = 3, _images(64, c, 10, 12)
    padded = pad(x, p, mode)
    out = random_crop(x, p, _gen(1), mode=mode)
    offsets = set()
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 12])
        ]
        assert len(found) == 1, f"image {i}: output is not one window of the padded input"
        offsets.add(found[0])
    assert len(offsets) > 20  # offsets are drawn per image


def test_pad_matches_torch():
    x = _images(2, 3, 8, 8, torch.float32)
    torch.testing.assert_close(pad(x, 4, "reflect"), F.pad(x, (4, 4, 4, 4), mode="reflect"))
    torch.testing.assert_close(pad(x, 2, "zeros"), F.pad(x, (2, 2, 2, 2)))
    with pytest.raises(ValueError, match="reflect padding 8"):
        pad(x, 8, "reflect")


def test_flip_flips_exactly_the_selected_images():
    x = _images(64, 3, 8, 8)
    assert not torch.equal(x, x.flip(-1))
    mask = flip_mask(x, _gen(5))
    out = random_flip(x, _gen(5))
    assert 10 < mask.sum() < 54  # about half
    torch.testing.assert_close(out[mask], x[mask].flip(-1))
    torch.testing.assert_close(out[~mask], x[~mask])
    for i in range(len(x)):  # and no image is both (random images are not symmetric)
        assert torch.equal(out[i], x[i].flip(-1)) != torch.equal(out[i], x[i])


def test_cutout_zeroes_one_square_per_image():
    x = torch.full((32, 2, 12, 12), 7, dtype=torch.uint8)
    out = cutout(x, 5, _gen())
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # same square in every channel
    corners = set()
    for i in range(len(x)):
        ys, xs = torch.nonzero(zero[i, 0], as_tuple=True)
        assert len(ys) == 25 and ys.max() - ys.min() == 4 and xs.max() - xs.min() == 4
        corners.add((int(ys.min()), int(xs.min())))
    assert len(corners) > 10
    assert torch.equal(out[~zero], x[~zero])
    assert torch.equal(cutout(x, 0), x)


def test_seeded_reproducibility():
    x = _images(16, 3, 16, 16)
    aug = Augment(crop_padding=4, flip=True, cutout=4)
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    b = aug(x)
    assert torch.equal(a, b)
    assert torch.equal(aug(x, _gen(7)), aug(x, _gen(7)))
    assert not torch.equal(aug(x, _gen(7)), aug(x, _gen(8)))


def test_zero_padding_mode_fills_borders_with_zeros():
    x = torch.full((200, 1, 6, 6), 9, dtype=torch.uint8)
    out = Augment(crop_padding=2, flip=False, pad_mode="zeros")(x, _gen())
    assert (out == 0).any() and set(out.unique().tolist()) == {0, 9}
    reflect = Augment(crop_padding=2, flip=False)(x, _gen())
    assert torch.equal(reflect, x)  # reflect padding of a constant image is constant


def test_bad_batch_shape():
    with pytest.raises(ValueError, match=r"expected a batch \[B, C, H, W\]"):
        Augment()(torch.zeros(3, 32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_the_batch_device():
    x = _images(64, 3, 32, 32).cuda()
    out = Augment(crop_padding=4, flip=True, cutout=8)(x, _gen(3))  # CPU generator, GPU batch
    assert out.device == x.device and out.dtype == torch.uint8
    cpu = Augment(crop_padding=4, flip=True, cutout=8)(x.cpu(), _gen(3))
    assert torch.equal(out.cpu(), cpu)  # same random numbers -> same result
    assert normalize(x, (0.5,) * 3, (0.2,) * 3).device == x.device
    torch.manual_seed(0)
    assert Augment()(x).device == x.device
