"""Smoothing and connected-component clean-up on small hand-drawn masks."""

from __future__ import annotations

import numpy as np
import pytest

from tutorial_lib import postprocess


def _ring_volume():
    # shape: (5, 5, 2) a 3 x 3 ring in axial slice 0, slice 1 empty
    volume = np.zeros((5, 5, 2))
    volume[1:4, 1:4, 0] = 1
    volume[2, 2, 0] = 0
    return volume


PLUS = np.array(
    [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], bool
)


def test_smooth_2d_works_per_slice():
    smoothed = postprocess.smooth_mask(_ring_volume(), 3, mode="2d")
    # centre 8/9 -> 1, edge middles 5/9 -> 1, corners 3/9 -> 0; slices do not mix
    np.testing.assert_array_equal(smoothed[:, :, 0], PLUS)
    assert not smoothed[:, :, 1].any()
    assert smoothed.dtype == bool and smoothed.shape == (5, 5, 2)


def test_smooth_3d_mixes_slices():
    # the best 3 x 3 x 3 window holds 8 of 27 voxels (one slice of it is outside the volume)
    assert not postprocess.smooth_mask(_ring_volume(), 3, mode="3d").any()


def test_smooth_tie_goes_to_foreground():
    # shape: (2, 2, 1); a 2 x 2 window covers offsets -1 and 0, so the bottom row sees 2 of 4
    mask = np.array([[1, 0], [1, 0]])[..., None]
    expected = np.array([[0, 0], [1, 1]], bool)[..., None]
    np.testing.assert_array_equal(postprocess.smooth_mask(mask, 2), expected)


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_smooth_size_one_is_identity_on_binarised_mask(mode):
    probabilities = np.random.default_rng(0).random((6, 5, 4))  # shape: (x, y, z)
    np.testing.assert_array_equal(
        postprocess.smooth_mask(probabilities, 1, mode=mode), probabilities > 0.5
    )


def test_smooth_large_window_removes_small_speck():
    mask = np.zeros((32, 32, 1), bool)  # shape: (32, 32, 1)
    mask[4:20, 4:20] = True  # a 16 x 16 square survives a 16 x 16 window ...
    mask[28, 28] = True  # ... a lone voxel does not
    smoothed = postprocess.smooth_mask(mask, 16)
    assert not smoothed[28, 28, 0]
    assert smoothed[11, 11, 0] and smoothed.sum() > 0


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((np.zeros((4, 4, 4)), 0), {}, "size"),
        ((np.zeros((4, 4, 4)), 2.5), {}, "size"),
        ((np.zeros((4, 4, 4)), 2), {"mode": "4d"}, "mode"),
        ((np.zeros((4, 4)), 2), {"mode": "3d"}, "shape"),
    ],
)
def test_smooth_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        postprocess.smooth_mask(*args, **kwargs)


# shape: (1, 1, 10) components of 1, 2 and 4 voxels along z
LINE = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 0], bool).reshape(1, 1, 10)


@pytest.mark.parametrize(
    "min_voxels, expected",
    [
        (0, [1, 0, 1, 1, 0, 1, 1, 1, 1, 0]),
        (2, [0, 0, 1, 1, 0, 1, 1, 1, 1, 0]),
        (3, [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]),
        (5, [0] * 10),
    ],
)
def test_remove_small_components(min_voxels, expected):
    result = postprocess.remove_small_components(LINE, min_voxels)
    np.testing.assert_array_equal(result.ravel(), np.array(expected, bool))


def test_connectivity_decides_what_touches():
    diagonal = np.eye(2, dtype=bool)[..., None]  # shape: (2, 2, 1) two corner-touching voxels
    assert not postprocess.remove_small_components(diagonal, 2, connectivity=1).any()
    assert postprocess.remove_small_components(diagonal, 2, connectivity=2).sum() == 2
    with pytest.raises(ValueError, match="connectivity"):
        postprocess.remove_small_components(diagonal, 2, connectivity=4)


def test_keep_largest_component():
    np.testing.assert_array_equal(
        postprocess.keep_largest_component(LINE).ravel(),
        np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 0], bool),
    )
    assert not postprocess.keep_largest_component(np.zeros((3, 3, 3))).any()


def _tube():
    # shape: (5, 5, 3) a ring in every axial slice: a tube open at both ends
    tube = np.zeros((5, 5, 3), bool)
    tube[1:4, 1:4, :] = True
    tube[2, 2, :] = False
    return tube


def test_fill_holes_2d_closes_a_tube_3d_does_not():
    assert postprocess.fill_holes(_tube(), mode="2d")[2, 2, :].all()
    assert not postprocess.fill_holes(_tube(), mode="3d")[2, 2, :].any()


def test_fill_holes_3d_fills_a_closed_cavity():
    shell = np.pad(np.ones((3, 3, 3), bool), 1)  # shape: (5, 5, 5)
    shell[2, 2, 2] = False
    filled = postprocess.fill_holes(shell)
    assert filled[2, 2, 2] and filled.sum() == 27
