"""Tests of tutorial_lib.augment, and of PatchDataset's augmentation over the tiny prepared cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tutorial_lib.augment import Augmentation, intensity, spatial_patch
from tutorial_lib.config import BRATS
from tutorial_lib.data import open_array
from tutorial_lib.datasets import PatchDataset

PROBABILITIES = [field.name for field in dataclasses.fields(Augmentation) if field.name.endswith("_probability")]
EVERYTHING = Augmentation(**{name: 1.0 for name in PROBABILITIES})  # every transform, every time
NOTHING = Augmentation.only()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _case(cache, case_id: str = "Tiny_0") -> tuple[np.ndarray, np.ndarray]:
    return open_array(cache, case_id, "image"), open_array(cache, case_id, "label")


def _plain_window(image, label, centre, patch_shape):
    start = np.clip(np.array(centre) - np.array(patch_shape) // 2, 0, np.array(label.shape) - patch_shape)
    window = tuple(slice(s, s + p) for s, p in zip(start, patch_shape))
    return image[window], label[window]


# ---------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("settings, message", [
    ({"flip_probability": 1.5}, r"flip_probability must be a probability in \[0, 1\], got 1.5"),
    ({"noise_probability": -0.1}, "noise_probability must be a probability"),
    ({"gamma_probability": "often"}, "gamma_probability must be a probability"),
    ({"rotation_probability": True}, "rotation_probability must be a probability"),
    ({"scale_range": (1.2, 0.8)}, r"scale_range must be an ordered pair \(low, high\) with low <= high"),
    ({"brightness_range": (1.0,)}, "brightness_range must be an ordered pair"),
    ({"contrast_range": 1.0}, "contrast_range must be an ordered pair"),
    ({"scale_range": (0.0, 1.0)}, "scale_range must have both values > 0"),
    ({"gamma_range": (-1.0, 1.0)}, "gamma_range must have both values > 0"),
    ({"blur_sigma_range": (-0.5, 1.0)}, "blur_sigma_range must have both values >= 0"),
    ({"low_resolution_range": (0.5, 1.0)}, "low_resolution_range must have both values >= 1"),
    ({"rotation_degrees": -5}, "rotation_degrees must be a non-negative number"),
    ({"noise_sigma": float("nan")}, "noise_sigma must be a non-negative number"),
    ({"bias_strength": -0.1}, "bias_strength must be a non-negative number"),
    ({"low_resolution_z_only": "yes"}, "low_resolution_z_only must be True or False"),
])
def test_invalid_settings_raise_naming_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**settings)


def test_settings_from_a_plain_dict():
    assert Augmentation.from_settings({}) == Augmentation()
    built = Augmentation.from_settings({"gamma_range": [0.8, 1.2], "blur_sigma_range": (0, 1)})
    assert built.gamma_range == (0.8, 1.2) and built.blur_sigma_range == (0.0, 1.0)  # lists become tuples
    assert hash(built) == hash(Augmentation(gamma_range=(0.8, 1.2), blur_sigma_range=(0.0, 1.0)))
    with pytest.raises(ValueError, match=r"unknown augmentation settings \['flips', 'rotation'\]; "
                                         r"valid keys are \['bias_probability', .*'rotation_degrees'"):
        Augmentation.from_settings({"rotation": 10, "flips": 0.5, "noise_sigma": 0.1})
    assert [getattr(NOTHING, name) for name in PROBABILITIES] == [0.0] * len(PROBABILITIES)
    assert NOTHING.gamma_range == Augmentation().gamma_range
    with pytest.raises(dataclasses.FrozenInstanceError):
        NOTHING.flip_probability = 1.0


# ----------------------------------------------------------------------------------------- spatial


# (grid, centre, patch, labelled voxel in the case) -> the voxel in the patch after flipping all three axes
@pytest.mark.parametrize("grid, centre, voxel, flipped", [
    ((4, 4, 4), (2, 2, 2), (0, 0, 0), (3, 3, 3)),
    ((4, 4, 4), (2, 2, 2), (0, 1, 2), (3, 2, 1)),
    ((4, 4, 4), (2, 2, 2), (3, 0, 1), (0, 3, 2)),
    ((6, 6, 6), (4, 4, 4), (2, 3, 5), (3, 2, 0)),  # window 2..5: patch voxel (0, 1, 3)
    ((6, 6, 6), (5, 0, 5), (2, 0, 3), (3, 3, 2)),  # window clipped to x 2..5, y 0..3, z 2..5: (0, 0, 1)
])
def test_flips_move_a_labelled_voxel_where_expected(grid, centre, voxel, flipped):
    label = np.zeros(grid, np.uint8)
    label[voxel] = 4
    image = np.stack([label, 2 * label], axis=-1).astype(np.float32)
    x, y = spatial_patch(_rng(), image, label, centre, (4, 4, 4), Augmentation.only(flip_probability=1.0))
    assert np.argwhere(y).tolist() == [list(flipped)] and y[flipped] == 4
    assert np.argwhere(x[..., 1]).tolist() == [list(flipped)] and x[flipped].tolist() == [4.0, 8.0]


def test_each_axis_flips_on_its_own_and_image_and_label_stay_together():
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0] = 1
    flipped_axes = []
    for seed in range(40):
        x, y = spatial_patch(_rng(seed), label[..., None], label, (2, 2, 2), (4, 4, 4),
                             Augmentation.only(flip_probability=0.5))
        np.testing.assert_array_equal(x[..., 0], y)
        flipped_axes.append(np.argwhere(y)[0] == 3)
    share = np.mean(flipped_axes, axis=0)  # each axis drawn with probability 0.5
    assert ((share > 0.2) & (share < 0.8)).all(), share
    assert len({tuple(axes) for axes in flipped_axes}) > 4  # combinations, not one switch for all axes


# The tiny cases' brain fills x, y 1..10 and z 1..7 of the 48 x 48 x 40 grid.
@pytest.mark.parametrize("centre", [(6, 6, 4), (0, 0, 0), (47, 47, 39), (3, 40, 20)])
def test_nothing_drawn_gives_the_plain_window(tiny_cache, centre):
    image, label = _case(tiny_cache)
    expected_image, expected_label = _plain_window(image, label, centre, (16, 16, 8))
    x, y = spatial_patch(_rng(), image, label, centre, (16, 16, 8), NOTHING)
    assert x.dtype == image.dtype and y.dtype == label.dtype
    np.testing.assert_array_equal(x, expected_image)
    np.testing.assert_array_equal(y, expected_label)
    # A rotation by 0 degrees at scale 1 resamples at the same voxels: the same window, as float32.
    identity = Augmentation.only(rotation_probability=1.0, rotation_degrees=0.0, scale_probability=1.0,
                                 scale_range=(1.0, 1.0))
    x, y = spatial_patch(_rng(), image, label, centre, (16, 16, 8), identity, channels=[2, 0])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.asarray(expected_image[..., [2, 0]], np.float32))
    np.testing.assert_array_equal(y, expected_label)


# scale s: the patch's x voxel i samples the case at 7.5 + (i - 1.5) / s (window 6..9 of a 16^3 grid)
@pytest.mark.parametrize("scale, expected", [
    (1.0, [6.0, 7.0, 8.0, 9.0]),
    (2.0, [6.75, 7.25, 7.75, 8.25]),  # zoom in: anatomy twice as large
    (0.5, [4.5, 6.5, 8.5, 10.5]),  # zoom out
])
def test_scaling_samples_the_case_around_the_window_centre(scale, expected):
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None, None], (16, 16, 16, 1))
    augmentation = Augmentation.only(scale_probability=1.0, scale_range=(scale, scale))
    x, _ = spatial_patch(_rng(), ramp, np.zeros((16, 16, 16), np.uint8), (8, 8, 8), (4, 4, 4), augmentation)
    np.testing.assert_allclose(x[:, 1, 2, 0], expected, atol=1e-5)  # linear interpolation of a ramp is exact
    assert np.ptp(x[2, :, :, 0]) < 1e-5  # nothing changes along y and z


def test_rotation_keeps_label_values_and_the_image_aligned(tiny_cache):
    image, label = _case(tiny_cache, "Tiny_3")  # 13 necrotic, 25 edema and 7 enhancing voxels
    centre = np.argwhere(np.asarray(label) == 4).mean(axis=0).astype(int)  # in the tumour, near a corner
    tumour = (np.asarray(label) > 0).astype(np.float32)[..., None]
    rotate = Augmentation.only(rotation_probability=1.0, rotation_degrees=15.0, scale_probability=1.0)
    changed = 0
    for seed in range(8):
        _, plain = _plain_window(image, label, centre, (16, 16, 8))
        x, y = spatial_patch(_rng(seed), tumour, label, centre, (16, 16, 8), rotate)
        assert y.shape == (16, 16, 8) and y.dtype == np.uint8
        assert set(np.unique(y).tolist()) <= set(BRATS.labels), np.unique(y)
        assert {1, 2} <= set(np.unique(y).tolist())  # still around the tumour
        # Nearest neighbour picks a tumour voxel that weighs at least 1/8 in the linear interpolation.
        assert (x[..., 0][y > 0] >= 0.125 - 1e-6).all()
        changed += not np.array_equal(y, plain)
    assert changed == 8


def test_spatial_patch_is_deterministic_per_generator(tiny_cache):
    image, label = _case(tiny_cache)
    first = spatial_patch(_rng(3), image, label, (6, 6, 4), (16, 16, 8), EVERYTHING)
    again = spatial_patch(_rng(3), image, label, (6, 6, 4), (16, 16, 8), EVERYTHING)
    other = spatial_patch(_rng(4), image, label, (6, 6, 4), (16, 16, 8), EVERYTHING)
    np.testing.assert_array_equal(first[0], again[0]), np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (16, 16, 8, 4)


# --------------------------------------------------------------------------------------- intensity


def _row(values) -> np.ndarray:
    """A one-channel patch (n, 1, 1, 1) holding ``values``."""
    return np.asarray(values, np.float32).reshape(-1, 1, 1, 1)


# One background voxel (0) and brain values -1, 1, 3 (mean 1, range -1..3).
@pytest.mark.parametrize("settings, expected", [
    ({"brightness_probability": 1.0, "brightness_range": (1.5, 1.5)}, [0, -1.5, 1.5, 4.5]),
    ({"brightness_probability": 1.0, "brightness_range": (0.5, 0.5)}, [0, -0.5, 0.5, 1.5]),
    ({"contrast_probability": 1.0, "contrast_range": (0.5, 0.5)}, [0, 0, 1, 2]),  # towards the mean
    ({"contrast_probability": 1.0, "contrast_range": (3.0, 3.0)}, [0, -1, 1, 3]),  # clipped to the range
    ({"gamma_probability": 1.0, "gamma_range": (2.0, 2.0)}, [0, -1, 0, 3]),  # (1/2)^2 of the range: darker
    ({"gamma_probability": 1.0, "gamma_range": (0.5, 0.5)}, [0, -1, -1 + 4 * 0.5**0.5, 3]),  # brighter
    ({}, [0, -1, 1, 3]),
])
def test_intensity_transforms_move_values_as_stated(settings, expected):
    patch = _row([0, -1, 1, 3])
    out = intensity(_rng(), patch, Augmentation.only(**settings))
    np.testing.assert_allclose(out.ravel(), expected, atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(patch.ravel(), [0, -1, 1, 3])  # a copy: the input is untouched


def test_intensity_keeps_the_background_and_repeats_per_seed(tiny_cache):
    image, label = _case(tiny_cache)
    patch, _ = _plain_window(image, label, (6, 6, 4), (16, 16, 8))  # the whole brain and background
    background = np.all(np.asarray(patch) == 0, axis=-1)
    assert 0 < background.mean() < 1
    outputs = [intensity(_rng(seed), patch, EVERYTHING) for seed in (0, 0, 1)]
    for out in outputs:
        assert out.shape == patch.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert (out[background] == 0).all()
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.allclose(outputs[0], outputs[2])
    assert (intensity(_rng(), np.zeros((4, 4, 4, 2)), EVERYTHING) == 0).all()


def test_each_channel_draws_its_own_transforms():
    twins = np.repeat(_row([0, -1, 1, 3]), 2, axis=-1)  # two identical channels
    out = intensity(_rng(), twins, Augmentation.only(brightness_probability=1.0, brightness_range=(0.5, 2.0)))
    factors = (out[1:] / twins[1:]).reshape(3, 2)  # brain voxel x channel: one factor per channel
    assert np.ptp(factors[:, 0]) < 1e-6 and np.ptp(factors[:, 1]) < 1e-6
    assert abs(factors[0, 0] - factors[0, 1]) > 1e-3


def test_noise_blur_bias_and_low_resolution():
    rng = _rng(7)
    patch = rng.normal(1.0, 1.0, (12, 12, 12, 1)).astype(np.float32)
    noisy = intensity(_rng(), patch, Augmentation.only(noise_probability=1.0, noise_sigma=0.3))
    assert 0 < np.std(noisy - patch) <= 0.3 * 1.1
    blurred = intensity(_rng(), patch, Augmentation.only(blur_probability=1.0))
    assert np.std(blurred) < 0.8 * np.std(patch)
    ones = np.ones((24, 24, 24, 1), np.float32)
    field = intensity(_rng(), ones, Augmentation.only(bias_probability=1.0, bias_strength=0.3))
    assert (field > 0).all() and np.ptp(field) > 0.01  # a positive, varying gain ...
    log_field = np.log(field)  # ... that is smooth: neighbours differ far less than the field varies
    assert np.std(np.diff(log_field, axis=0)) < 0.3 * np.std(log_field)  # white noise: 1.4
    np.testing.assert_array_equal(
        intensity(_rng(), patch, Augmentation.only(bias_probability=1.0, bias_strength=0.0)), patch)
    # Thick slices: z-only low resolution leaves what does not vary along z, and changes what does.
    thick = Augmentation.only(low_resolution_probability=1.0, low_resolution_range=(2.0, 2.0),
                              low_resolution_z_only=True)
    along_x = np.broadcast_to(np.arange(1, 13, dtype=np.float32)[:, None, None, None], (12, 12, 12, 1))
    np.testing.assert_allclose(intensity(_rng(), along_x, thick), along_x, atol=1e-5)
    along_z = np.moveaxis(along_x, 0, 2)
    assert not np.allclose(intensity(_rng(), along_z, thick), along_z, atol=1e-2)
    coarse = intensity(_rng(), patch, Augmentation.only(low_resolution_probability=1.0,
                                                        low_resolution_range=(2.0, 2.0)))
    assert coarse.shape == patch.shape and not np.allclose(coarse, patch)


# ----------------------------------------------------------------------------------- PatchDataset


READER = dict(patch_shape=(16, 16, 8), patches_per_case=2, batch_size=3, seed=5, shuffle=True)


def test_patch_dataset_with_augmentation_is_a_function_of_seed_epoch_and_index(tiny_cache):
    reader = PatchDataset(tiny_cache, "train", modalities="all", target="regions", augmentation=EVERYTHING,
                          **READER)
    x, y = reader[0]
    assert (x.shape, y.shape, x.dtype, y.dtype) == ((3, 16, 16, 8, 4), (3, 16, 16, 8, 3), np.float32, np.float32)
    assert set(np.unique(y).tolist()) <= {0.0, 1.0} and np.isfinite(x).all()
    twin = PatchDataset(tiny_cache, "train", modalities="all", target="regions", augmentation=EVERYTHING, **READER)
    np.testing.assert_array_equal(twin[0][0], x), np.testing.assert_array_equal(twin[0][1], y)
    np.testing.assert_array_equal(reader[0][0], x)  # reading a batch again changes nothing
    batches = []
    for _ in range(3):
        batches.append([reader[index] for index in range(len(reader))])
        reader.on_epoch_end()
    assert not np.array_equal(batches[0][0][0], batches[1][0][0])  # another epoch, other draws
    resumed = PatchDataset(tiny_cache, "train", modalities="all", target="regions", augmentation=EVERYTHING,
                           **READER)
    resumed.set_epoch(2)
    for index in (1, 0):  # any order
        np.testing.assert_array_equal(resumed[index][0], batches[2][index][0])
        np.testing.assert_array_equal(resumed[index][1], batches[2][index][1])


def test_augmentation_draws_leave_the_patch_centres_alone(tiny_cache):
    plain = PatchDataset(tiny_cache, "train", **READER)
    colour = PatchDataset(tiny_cache, "train", augmentation=Augmentation.only(
        brightness_probability=1.0, gamma_probability=1.0, noise_probability=1.0), **READER)
    off = PatchDataset(tiny_cache, "train", augmentation=NOTHING, **READER)
    for epoch in (0, 1):
        for reader in (plain, colour, off):
            reader.set_epoch(epoch)
        for index in range(len(plain)):
            (x, y), (x_colour, y_colour), (x_off, y_off) = plain[index], colour[index], off[index]
            np.testing.assert_array_equal(y_colour, y)  # same windows: only the values changed
            assert not np.allclose(x_colour, x)
            assert ((x_colour == 0) == (x == 0)).all()  # background where it was
            np.testing.assert_array_equal(x_off, x), np.testing.assert_array_equal(y_off, y)


def test_patch_dataset_wants_an_augmentation_object(tiny_cache):
    with pytest.raises(TypeError, match="Augmentation.from_settings"):
        PatchDataset(tiny_cache, "train", augmentation={"flip_probability": 0.5})
    assert PatchDataset(tiny_cache, "train").augmentation is None
