"""Batch augmentation: each transform does what its name says (checked against independent references),
is driven by the global seed, keeps shapes and the [0, 1] range, and never touches val/test data."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dltrain.data.augment import BatchAugment, affine, build_augment, color_jitter, random_affine, random_crop, \
    random_flip, random_rotation, rotate

OFF = dict(flip=0.0, crop=0, rotation=0.0, brightness=0.0, contrast=0.0, scale=0.0, shear=0.0, translate=0.0)
ALL_ON = dict(flip=0.5, crop=2, rotation=15.0, brightness=0.2, contrast=0.2, scale=0.1, shear=10.0, translate=0.1)


def batch(n=16, c=3, h=12, w=10, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


def test_build_augment_none_when_off_else_callable():
    assert build_augment(OmegaConf.create(OFF)) is None
    for key, value in ALL_ON.items():
        aug = build_augment(OmegaConf.create({**OFF, key: value}))
        assert callable(aug), key
        assert getattr(aug, key) == value


def test_build_augment_rejects_fractional_crop():
    with pytest.raises(ValueError, match="augment.crop"):
        build_augment(OmegaConf.create({**OFF, "crop": 1.5}))


@pytest.mark.parametrize("key", [*ALL_ON, "all"])
def test_shape_dtype_and_range_kept(key):
    aug = BatchAugment(**(ALL_ON if key == "all" else {key: ALL_ON[key]}))
    x = batch()
    torch.manual_seed(0)
    out = aug(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    assert torch.equal(x, batch())  # the input batch is not modified in place


@pytest.mark.parametrize("key", [*ALL_ON, "all"])
def test_same_seed_same_augmentation_other_seed_other(key):
    aug = BatchAugment(**(ALL_ON if key == "all" else {key: ALL_ON[key]}))
    x = batch(n=32)

    def run(seed):
        torch.manual_seed(seed)
        return aug(x)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_flip_probability_one_and_zero():
    x = batch()
    assert torch.equal(random_flip(x, 1.0), x.flip(-1))
    assert torch.equal(random_flip(x, 0.0), x)


def test_flip_is_per_sample():
    x = batch(n=200, c=1, h=4, w=4)
    torch.manual_seed(0)
    out = random_flip(x, 0.5)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped ^ kept)  # every image is either mirrored or untouched
    assert 70 < flipped.sum() < 130   # about half of them, each on its own coin


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_crop_is_a_shifted_window_of_the_zero_padded_image(padding):
    n, c, h, w = 24, 2, 5, 7
    x = batch(n, c, h, w) + 0.01  # no exact zeros in the image, so zero fill shows where padding came in
    torch.manual_seed(0)
    out = random_crop(x, padding)
    padded = F.pad(x, (padding,) * 4)
    offsets = set()
    for i in range(n):  # brute force: which windows of the padded image equal the output?
        matches = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                   if torch.equal(out[i], padded[i, :, dy:dy + h, dx:dx + w])]
        assert matches, f"sample {i} is no window of its padded input"
        offsets.update(matches)
    assert len(offsets) > 3  # offsets vary from sample to sample


@pytest.mark.parametrize("shape", [(64, 1, 9, 9), (32, 3, 6, 11)])
def test_crop_and_flip_in_one_gather_equals_crop_then_flip(shape):
    """The batch augmentation crops and mirrors in one gather; it must equal the two steps done one after
    the other, with the same random numbers (same seed: same training run as before the fusion)."""
    x = batch(*shape) + 0.01
    torch.manual_seed(5)
    fused = BatchAugment(crop=2, flip=0.5)(x)
    torch.manual_seed(5)
    cropped = random_crop(x, 2)
    two_steps = random_flip(cropped, 0.5)
    assert torch.equal(fused, two_steps)
    mirrored = (two_steps != cropped).flatten(1).any(1)
    assert 0 < mirrored.sum() < len(x)  # both branches of the flip were taken


def test_crop_offsets_cover_the_range():
    # one bright pixel in the middle: its position after the crop reveals the offset drawn for each sample
    n, h, w, p = 2000, 9, 9, 2
    x = torch.zeros(n, 1, h, w)
    x[:, :, 4, 4] = 1
    torch.manual_seed(0)
    pos = random_crop(x, p).flatten(1).argmax(1)
    shift_y, shift_x = pos // w - 4, pos % w - 4
    assert set(shift_y.tolist()) == set(range(-p, p + 1)) == set(shift_x.tolist())


def test_rotation_zero_is_identity():
    x = batch()
    assert torch.allclose(random_rotation(x, 0.0), x, atol=1e-6)
    assert torch.allclose(rotate(x, torch.zeros(len(x))), x, atol=1e-6)


def test_rotate_by_quarter_turns_matches_rot90():
    x = batch(h=8, w=8)
    quarter = torch.full((len(x),), math.pi / 2)
    assert torch.allclose(rotate(x, quarter), x.rot90(1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(x, -quarter), x.rot90(-1, dims=(-2, -1)), atol=1e-5)
    y = batch(h=6, w=10)  # not square: a half turn is a flip of both axes
    assert torch.allclose(rotate(y, torch.full((len(y),), math.pi)), y.flip(-1).flip(-2), atol=1e-5)


def test_rotation_is_rigid_in_pixels_on_non_square_images():
    # 8×16 image, centre at (3.5, 7.5); the pixel at offset (-2.5, +1.5) turns by 90° to offset (-1.5, -2.5)
    x = torch.zeros(1, 1, 8, 16)
    x[0, 0, 1, 9] = 1
    out = rotate(x, torch.tensor([math.pi / 2]))[0, 0]
    assert out[2, 5] == pytest.approx(1.0, abs=1e-5)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)


def test_rotation_angles_stay_within_the_limit():
    # a single off-centre pixel on a square image: its angle about the centre after rotation tells the draw
    n, size = 500, 21
    x = torch.zeros(n, 1, size, size)
    x[:, :, 10, 18] = 1  # 8 px right of the centre pixel (10, 10)
    torch.manual_seed(0)
    out = random_rotation(x, 30.0)
    w = out.flatten(1)
    idx = torch.arange(size * size)
    r, c = (idx // size).float() - 10, (idx % size).float() - 10
    cy, cx = (w * r).sum(1) / w.sum(1), (w * c).sum(1) / w.sum(1)
    angle = torch.rad2deg(torch.atan2(-cy, cx))  # counter-clockwise on screen is positive, rows grow downward
    assert angle.abs().max() < 31
    assert angle.min() < -25 and angle.max() > 25


def test_color_jitter_matches_reference():
    x = batch(n=64)
    torch.manual_seed(5)
    out = color_jitter(x, brightness=0.3, contrast=0.4)
    # the same draws, replayed by hand
    torch.manual_seed(5)
    b = 0.7 + 0.6 * torch.rand(64)
    c = 0.6 + 0.8 * torch.rand(64)
    ref = (x * b.view(-1, 1, 1, 1)).clamp(0, 1)
    mean = ref.mean(dim=(1, 2, 3), keepdim=True)
    ref = ((ref - mean) * c.view(-1, 1, 1, 1) + mean).clamp(0, 1)
    assert torch.allclose(out, ref, atol=1e-6)


def test_color_jitter_contrast_keeps_the_mean_and_scales_the_spread():
    x = 0.4 + 0.1 * batch(n=256)  # far from 0 and 1, so nothing is clamped
    torch.manual_seed(0)
    out = color_jitter(x, contrast=0.5)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    ratio = out.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.5 + 1e-4
    assert ratio.min() < 0.6 and ratio.max() > 1.4


def test_augmentation_runs_on_the_batch_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = batch(n=64).cuda()
    aug = BatchAugment(**ALL_ON)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert a.device == x.device and torch.equal(a, b)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_only_the_training_loader_is_augmented():
    from dltrain.config import compose_config
    from dltrain.data import build_datamodule

    common = ["data=synthetic", "data.train_size=512", "data.test_size=128", "data.val_size=128"]
    plain = build_datamodule(compose_config([*common, "augment=none"]))
    augmented = build_datamodule(compose_config([*common, "augment=[flip,crop]"]))
    assert plain.train.augment is None
    assert augmented.train.augment.flip == 0.5 and augmented.train.augment.crop > 0
    for split in ("val", "test"):
        a, b = _batches(getattr(plain, split)), _batches(getattr(augmented, split))
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    torch.manual_seed(0)
    a = _batches(plain.train)
    torch.manual_seed(0)
    b = _batches(augmented.train)
    assert all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(a, b))  # same order, same labels
    assert all(not torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))  # different pixels


# --- affine: scale, shear, translate ----------------------------------------------------------------------------
def blob(h, w, cy, cx, sigma=2.5):
    """A Gaussian spot centred (cy, cx) pixels below / right of the image centre, as a 1×1×h×w batch."""
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    img = torch.exp(-((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2) / (2 * sigma**2))
    return img.float().view(1, 1, h, w)


def centroid(img):
    """(row, column) of the intensity's centre of mass, relative to the image centre, in pixels."""
    _, _, h, w = img.shape
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    m = img[0, 0].double()
    return float((m.sum(1) * ys).sum() / m.sum()), float((m.sum(0) * xs).sum() / m.sum())


def one(value):
    return torch.tensor([float(value)])


def test_affine_translation_by_whole_pixels_is_an_exact_shift_with_zero_fill():
    x = batch(n=1, c=2, h=12, w=10)
    out = affine(x, one(1), one(0), one(3 / 10), one(-2 / 12))   # 3 px right, 2 px up
    expected = torch.zeros_like(x)
    expected[..., :-2, 3:] = x[..., 2:, :-3]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (48, 80)])
@pytest.mark.parametrize("s", [0.8, 1.25])
def test_affine_scale_zooms_about_the_centre(shape, s):
    h, w = shape
    out = affine(blob(h, w, -6.0, 9.0), one(s), one(0), one(0), one(0))
    cy, cx = centroid(out)
    assert cy == pytest.approx(-6.0 * s, abs=0.05) and cx == pytest.approx(9.0 * s, abs=0.05)


@pytest.mark.parametrize("shape", [(64, 64), (48, 80)])
@pytest.mark.parametrize("degrees", [-20.0, 15.0])
def test_affine_shear_moves_each_row_by_tan_angle_times_its_height_in_pixels(shape, degrees):
    h, w = shape
    out = affine(blob(h, w, 10.0, -4.0), one(1), one(math.radians(degrees)), one(0), one(0))
    cy, cx = centroid(out)
    assert cy == pytest.approx(10.0, abs=0.05)
    assert cx == pytest.approx(-4.0 + math.tan(math.radians(degrees)) * 10.0, abs=0.05)


def test_affine_applies_scale_and_shear_and_shift_as_one_map():
    h, w = 64, 64
    s, phi, tx, ty = 1.2, math.radians(10), 4 / 64, -3 / 64
    cy, cx = centroid(affine(blob(h, w, 5.0, -3.0), one(s), one(phi), one(tx), one(ty)))
    # p ↦ A·p + t, A = s·[[1, tan φ], [0, 1]] in (x, y) pixels
    assert cx == pytest.approx(s * (-3.0 + math.tan(phi) * 5.0) + 4.0, abs=0.05)
    assert cy == pytest.approx(s * 5.0 - 3.0, abs=0.05)


def test_random_affine_draws_per_image_from_the_documented_ranges():
    x = batch(n=64, c=1, h=16, w=16)
    torch.manual_seed(3)
    out = random_affine(x, scale=0.2, shear=12.0, translate=0.1)
    torch.manual_seed(3)
    u = [torch.rand(64) for _ in range(4)]  # scale, shear, tx, ty: in that order
    s, phi = 0.8 + 0.4 * u[0], (2 * u[1] - 1) * math.radians(12.0)
    tx, ty = -0.1 + 0.2 * u[2], -0.1 + 0.2 * u[3]
    torch.testing.assert_close(out, affine(x, s, phi, tx, ty), rtol=0, atol=1e-6)
    assert len({round(v, 6) for v in s.tolist()}) == 64  # one draw per image


def test_affine_off_leaves_the_batch_alone_and_any_key_turns_it_on():
    x = batch()
    assert torch.equal(BatchAugment()(x), x)
    for key in ("scale", "shear", "translate"):
        torch.manual_seed(0)
        assert not torch.equal(BatchAugment(**{key: ALL_ON[key]})(x), x), key
