"""Metrics on tiny hand-computed masks, including the BraTS empty-mask conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tutorial_lib import metrics
from tutorial_lib.config import BRATS

DICE_CASES = [
    # shape: (2, 2) both empty -> 1.0 by the BraTS convention
    (np.zeros((2, 2)), np.zeros((2, 2)), 1.0),
    (np.zeros((2, 2)), np.eye(2), 0.0),  # nothing predicted
    (np.eye(2), np.zeros((2, 2)), 0.0),  # false alarm on an empty truth
    (np.array([0.9, 0.2, 0.7]), np.array([1, 1, 0]), 0.5),  # shape: (3,); 2*1/(2+2)
    (np.array([0.5, 1.0]), np.array([1, 1]), 2 / 3),  # 0.5 is not above the threshold
    (np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), 1.0),  # shape: (2, 2, 2)
]


@pytest.mark.parametrize("prediction, truth, expected", DICE_CASES)
def test_dice_coefficient(prediction, truth, expected):
    assert metrics.dice_coefficient(prediction, truth) == pytest.approx(expected)


def test_dice_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        metrics.dice_coefficient(np.zeros((2, 2)), np.zeros((2, 3)))


RATE_CASES = [
    # shape: (4,) prediction, truth, sensitivity, specificity
    ([1, 0, 0, 0], [1, 1, 0, 0], 0.5, 1.0),
    ([1, 1, 1, 0], [1, 0, 0, 0], 1.0, 1 / 3),
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, 1.0),  # empty truth: nothing to miss
    ([1, 1, 1, 1], [1, 1, 1, 1], 1.0, 1.0),  # no background: nothing to mislabel
    ([0.2, 0.8, 0.6, 0.4], [1, 1, 0, 0], 0.5, 0.5),
]


@pytest.mark.parametrize("prediction, truth, sens, spec", RATE_CASES)
def test_sensitivity_specificity(prediction, truth, sens, spec):
    prediction, truth = np.array(prediction), np.array(truth)
    assert metrics.sensitivity(prediction, truth) == pytest.approx(sens)
    assert metrics.specificity(prediction, truth) == pytest.approx(spec)


def test_case_table_dice_per_region():
    # shape: (6,) BraTS labels
    pred = np.array([0, 2, 4, 4, 1, 0])
    true = np.array([0, 2, 1, 4, 1, 2])
    # WT: pred {1,2,3,4}, true {1,2,3,4,5} -> 8/9; TC: pred {2,3,4}, true {2,3,4} -> 1;
    # ET: pred {2,3}, true {3} -> 2/3
    row = metrics.case_table([pred], [true], case_ids=["a"], spacing=1.0, summary=False).loc["a"]
    assert row[[f"dice_{region}" for region in BRATS.regions]].tolist() == pytest.approx([8 / 9, 1.0, 2 / 3])


def test_case_table_counts_an_absent_region_as_perfect():
    labels = np.array([0, 2, 2])  # shape: (3,) edema only, no core
    row = metrics.case_table([labels], [labels], case_ids=["a"], spacing=1.0, summary=False).loc["a"]
    assert row[["dice_WT", "dice_TC", "dice_ET"]].tolist() == [1.0, 1.0, 1.0]


def _voxels(shape, *points):
    mask = np.zeros(shape, bool)
    for point in points:
        mask[point] = True
    return mask


def _line(length, shape=(12, 1, 1)):
    mask = np.zeros(shape, bool)
    mask[:length] = True
    return mask


HD95_CASES = [
    # shape: (1, 1, 8) single voxels 3 slices apart, 2.5 mm slices
    (_voxels((1, 1, 8), (0, 0, 1)), _voxels((1, 1, 8), (0, 0, 4)), (1.0, 1.0, 2.5), 7.5),
    # shape: (4, 4, 1) offsets of 2 and 1 voxels with spacing 0.5 and 2 mm: sqrt(1 + 4)
    (_voxels((4, 4, 1), (0, 0, 0)), _voxels((4, 4, 1), (2, 1, 0)), (0.5, 2.0, 1.0), math.sqrt(5)),
    # shape: (12, 1, 1) a 5-voxel line and the same plus a stray voxel 6 away: distances are
    # ten zeros and one 6; the 95th percentile interpolates halfway between 0 and 6
    (_line(5) | _voxels((12, 1, 1), (10, 0, 0)), _line(5), (1.0, 1.0, 1.0), 3.0),
    (_line(5) | _voxels((12, 1, 1), (10, 0, 0)), _line(5), (2.0, 1.0, 1.0), 6.0),
    # shape: (12, 1, 1) a stray voxel among 21 surface distances is ignored entirely
    (_line(10) | _voxels((12, 1, 1), (11, 0, 0)), _line(10), (1.0, 1.0, 1.0), 0.0),
    # shape: (5, 5, 5) identical cubes
    (np.pad(np.ones((3, 3, 3), bool), 1), np.pad(np.ones((3, 3, 3), bool), 1), 1.0, 0.0),
    # empty-mask conventions
    (np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool), 1.0, 0.0),
    (np.zeros((3, 3, 3), bool), _voxels((3, 3, 3), (1, 1, 1)), 1.0, BRATS.hd95_worst_mm),
    (_voxels((3, 3, 3), (1, 1, 1)), np.zeros((3, 3, 3), bool), 1.0, BRATS.hd95_worst_mm),
]


@pytest.mark.parametrize("prediction, truth, spacing, expected", HD95_CASES)
def test_hausdorff95(prediction, truth, spacing, expected):
    assert metrics.hausdorff95(prediction, truth, spacing=spacing) == pytest.approx(expected)


def test_hausdorff95_is_symmetric_and_counts_surfaces_only():
    # shape: (7, 7, 7) a 5^3 cube and a 3^3 cube inside it: surfaces are 1 voxel apart
    big = np.pad(np.ones((5, 5, 5), bool), 1)
    small = np.pad(np.ones((3, 3, 3), bool), 2)
    forward = metrics.hausdorff95(big, small)
    assert forward == metrics.hausdorff95(small, big)
    assert 1.0 <= forward <= math.sqrt(3) * 1.0 + 1e-9


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), -1.0])
def test_hausdorff95_rejects_bad_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        metrics.hausdorff95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=spacing)


def test_case_table():
    # shape: (4, 4, 4) two cases in BraTS labels
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[1:3, 1:3, 1:3] = 2
    truth[1, 1, 1] = 4
    prediction = truth.copy()
    prediction[1, 1, 1] = 2  # enhancing voxel called edema
    table = metrics.case_table([truth, prediction], [truth, truth], case_ids=["a", "b"])
    assert list(table.index) == ["a", "b", "mean", "std", "median"]
    assert {"dice_WT", "hd95_TC", "sensitivity_ET", "specificity_WT"} <= set(table.columns)
    assert table.loc["a", "dice_ET"] == 1.0 and table.loc["b", "dice_ET"] == 0.0
    assert table.loc["b", "dice_WT"] == 1.0
    assert table.loc["b", "hd95_ET"] == BRATS.hd95_worst_mm
    assert table.loc["mean", "dice_ET"] == pytest.approx(0.5)


def test_case_table_whole_tumour_masks_and_errors():
    mask = np.zeros((3, 3, 3), np.uint8)  # shape: (3, 3, 3) a 0/1 whole-tumour mask
    mask[1, 1, 1] = 1
    table = metrics.case_table([mask], [mask], case_ids=["x"], regions=["WT"], summary=False)
    assert list(table.columns) == ["dice_WT", "sensitivity_WT", "specificity_WT", "hd95_WT"]
    with pytest.raises(ValueError, match="regions"):
        metrics.case_table([mask], [mask], case_ids=["x"], regions=["NCR"])
    with pytest.raises(ValueError, match="case_ids"):
        metrics.case_table([mask], [mask], case_ids=["x", "y"])
