"""Metrics on tiny hand-computed masks (BraTS empty-mask conventions too); lesion scores against brats-evaluation."""

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


# Lesion-wise metrics. Most cases are lines along z, shape (1, 1, 40): their components and the
# distances between them are plain arithmetic, and every voxel of a line is a surface voxel (the
# array border counts as background), so HD95 pools the distances of all voxels both ways.
def _runs(*runs, length=40):
    """A (1, 1, length) mask holding voxels start..stop-1 along z for each (start, stop) run."""
    mask = np.zeros((1, 1, length), bool)
    for start, stop in runs:
        mask[0, 0, start:stop] = True
    return mask


NAN, INF = math.nan, math.inf
LESION_SCORE_KEYS = ("true_lesions", "predicted_lesions", "tp", "fp", "fn", "rq", "sq", "pq", "sq_dice", "sq_hd95")
LESION_SCORE_CASES = {
    # name: (prediction, truth, spacing,
    #        (true_lesions, predicted_lesions, tp, fp, fn, rq, sq, pq, sq_dice, sq_hd95))
    # Nothing on either side: the official configuration leaves every score undefined.
    "both empty": (_runs(), _runs(), 1.0, (0, 0, 0, 0, 0, NAN, NAN, NAN, NAN, NAN)),
    # No match: overlap scores 0, HD95 infinite.
    "false positive only": (_runs((10, 13)), _runs(), 1.0, (0, 1, 0, 1, 0, 0.0, 0.0, 0.0, 0.0, INF)),
    "missed lesion only": (_runs(), _runs((5, 10)), 1.0, (1, 0, 0, 0, 1, 0.0, 0.0, 0.0, 0.0, INF)),
    # A lesion 2 voxels long missed, one found exactly: rq = 1 / (1 + 1/2).
    "missed small lesion": (_runs((5, 10)), _runs((5, 10), (30, 32)), 1.0,
                            (2, 1, 1, 0, 1, 2 / 3, 1.0, 2 / 3, 1.0, 0.0)),
    # 5..9 against 7..11: 3 shared voxels, IoU 3/7, Dice 6/10; distances 2,1,0,0,0 and 0,0,0,1,2 ->
    # sorted 0 x6, 1, 1, 2, 2: the 95th percentile (position 8.55) is 2 mm, or 4 mm with 2 mm along z.
    "partial overlap": (_runs((7, 12)), _runs((5, 10)), 1.0, (1, 1, 1, 0, 0, 1.0, 3 / 7, 3 / 7, 0.6, 2.0)),
    "partial overlap, 2 mm along x and z": (_runs((7, 12)), _runs((5, 10)), (2.0, 1.0, 2.0),
                                            (1, 1, 1, 0, 0, 1.0, 3 / 7, 3 / 7, 0.6, 4.0)),
    # Two reference components 2 voxels apart stay two instances (lesion_wise merges them).
    "two reference lesions closer than the dilation": (_runs((5, 10)), _runs((5, 10), (12, 17)), 1.0,
                                                        (2, 1, 1, 0, 1, 2 / 3, 1.0, 2 / 3, 1.0, 0.0)),
    # One prediction 5..16 over references 5..9 and 12..16: Dice 10/17 with each (a tie, either
    # gives the same scores), IoU 5/12; distances 0 x10 and 1..7 -> position 15.2: 6.2 mm.
    "one prediction over two references": (_runs((5, 17)), _runs((5, 10), (12, 17)), 1.0,
                                           (2, 1, 1, 0, 1, 2 / 3, 5 / 12, 5 / 18, 10 / 17, 6.2)),
    # Reference 5..14 split into 5..7 (Dice 6/13) and 10..14 (Dice 10/15): the better piece is the
    # match, IoU 5/10; distances 0 x10 and 1..5 -> position 13.3: 4.3 mm.
    "split prediction": (_runs((5, 8), (10, 15)), _runs((5, 15)), 1.0, (1, 2, 1, 1, 0, 2 / 3, 0.5, 1 / 3, 2 / 3, 4.3)),
    # One voxel apart is no overlap, so no match (lesion_wise counts it as found).
    "near miss": (_runs((11, 14)), _runs((5, 10)), 1.0, (1, 1, 0, 1, 1, 0.0, 0.0, 0.0, 0.0, INF)),
    "one-voxel false positive": (_runs((5, 10), (30, 31)), _runs((5, 10)), 1.0,
                                 (1, 2, 1, 1, 0, 2 / 3, 1.0, 2 / 3, 1.0, 0.0)),
    "perfect match of two lesions": (_runs((5, 10), (20, 25)), _runs((5, 10), (20, 25)), 1.0,
                                     (2, 2, 2, 0, 0, 1.0, 1.0, 1.0, 1.0, 0.0)),
}


@pytest.mark.parametrize("prediction, truth, spacing, expected", LESION_SCORE_CASES.values(), ids=LESION_SCORE_CASES)
def test_lesion_scores(prediction, truth, spacing, expected):
    scores = metrics.lesion_scores(prediction, truth, spacing=spacing)
    assert list(scores) == list(LESION_SCORE_KEYS)
    assert scores == pytest.approx(dict(zip(LESION_SCORE_KEYS, expected)), nan_ok=True)


def _tied_predictions():
    # shape: (8, 8, 8) a 4^3 reference cube and two 4-voxel predictions inside it, equal Dice 8/68:
    # a 2 x 2 square at z = 0 and a line along x at y = 0, z = 3.
    truth = np.zeros((8, 8, 8), bool)
    truth[:4, :4, :4] = True
    square, line = np.zeros_like(truth), np.zeros_like(truth)
    square[2:4, 2:4, 0] = True
    line[:4, 0, 3] = True
    return square, line, truth


def test_lesion_scores_break_ties_in_nifti_order():
    # With x running fastest (a NIfTI file's order) the square comes first, and the official
    # package matches it; in NumPy's order (z fastest) the line would come first.
    square, line, truth = _tied_predictions()
    scores = metrics.lesion_scores(square | line, truth)
    assert (scores["tp"], scores["fp"], scores["sq_dice"], scores["sq"]) == (1, 1, pytest.approx(2 / 17), 1 / 16)
    assert scores["sq_hd95"] == metrics.hausdorff95(square, truth) != metrics.hausdorff95(line, truth)


def test_lesion_scores_match_threshold():
    # "one prediction over two references" again: Dice 10/17 = 0.59 matches at 0.5, not at 0.6.
    prediction, truth = _runs((5, 17)), _runs((5, 10), (12, 17))
    assert metrics.lesion_scores(prediction, truth, match_threshold=0.5)["tp"] == 1
    scores = metrics.lesion_scores(prediction, truth, match_threshold=0.6)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["rq"], scores["sq_hd95"]) == (0, 1, 2, 0.0, INF)


# Voxels of 5 x 5 x 1 mm = 25 mm^3: a lesion of 2 voxels (50 mm^3) is not scored, one of 3 is.
VOXEL_25 = (5.0, 5.0, 1.0)
LESION_WISE_KEYS = ("lesion_dice", "lesion_hd95", "true_lesions", "false_positives", "missed")
LESION_WISE_CASES = {
    # name: (prediction, truth, spacing, (lesion_dice, lesion_hd95, true_lesions, false_positives, missed))
    "both empty": (_runs(), _runs(), VOXEL_25, (1.0, 0.0, 0, 0, 0)),
    # Sums over 0 lesions + 1 false positive: 0 / 1 and 374 / 1.
    "false positive only": (_runs((10, 13)), _runs(), VOXEL_25, (0.0, 374.0, 0, 1, 0)),
    "missed lesion only": (_runs(), _runs((5, 10)), VOXEL_25, (0.0, 374.0, 1, 0, 1)),
    # 30..31 is 50 mm^3, not above the threshold: not scored, so its miss costs nothing.
    "missed small lesion": (_runs((5, 10)), _runs((5, 10), (30, 32)), VOXEL_25, (1.0, 0.0, 1, 0, 0)),
    # 5..9 and 12..16 (2 voxels apart) are one lesion of 10 voxels, half found: Dice 10/15;
    # distances 0 x10 and 3..7 -> position 13.3: 6.3 mm.
    "two reference lesions closer than the dilation": (_runs((5, 10)), _runs((5, 10), (12, 17)), VOXEL_25,
                                                        (2 / 3, 6.3, 1, 0, 0)),
    # The same with 2 mm along z: the merge counts voxels, HD95 millimetres.
    "two close reference lesions, 2 mm along z": (_runs((5, 10)), _runs((5, 10), (12, 17)), (5.0, 5.0, 2.0),
                                                  (2 / 3, 12.6, 1, 0, 0)),
    # Dilated by 3, components 6 voxels apart touch (5..9 -> 2..12, 16..20 -> 13..23); 7 apart do not.
    "references 6 voxels apart merge": (_runs((5, 10), (16, 21)), _runs((5, 10), (16, 21)), VOXEL_25,
                                        (1.0, 0.0, 1, 0, 0)),
    "references 7 voxels apart do not": (_runs((5, 10), (17, 22)), _runs((5, 10), (17, 22)), VOXEL_25,
                                         (1.0, 0.0, 2, 0, 0)),
    # (1 + 0) / 2 and (0 + 374) / 2.
    "one-voxel false positive": (_runs((5, 10), (30, 31)), _runs((5, 10)), VOXEL_25, (0.5, 187.0, 1, 1, 0)),
    "perfect match of two lesions": (_runs((5, 10), (20, 25)), _runs((5, 10), (20, 25)), VOXEL_25,
                                     (1.0, 0.0, 2, 0, 0)),
    # 33..34 touches the small lesion 30..31 once dilated (27..34): neither a hit nor a false positive.
    "prediction near a lesion below the volume threshold": (_runs((5, 10), (33, 35)), _runs((5, 10), (30, 32)),
                                                            VOXEL_25, (1.0, 0.0, 1, 0, 0)),
    # 11..13 touches 5..9 dilated (2..12): found, with Dice 0; distances 6,5,4,3,2 and 2,3,4 ->
    # sorted 2,2,3,3,4,4,5,6, position 6.65: 5.65 mm.
    "near miss": (_runs((11, 14)), _runs((5, 10)), VOXEL_25, (0.0, 5.65, 1, 0, 0)),
    # 8..21 touches both 5..9 and 20..24 (not merged: 10 apart) and is scored against each:
    # Dice 4/19 twice; distances 0 x4, 1, 1, 2, 2, 3, 3, 4..12 -> position 17.1: 11.1 mm twice.
    "one prediction bridging two lesions": (_runs((8, 22)), _runs((5, 10), (20, 25)), VOXEL_25,
                                            (4 / 19, 11.1, 2, 0, 0)),
    # With 1 mm voxels the 5-voxel lesion is 5 mm^3: not scored, as if the case were empty.
    "missed lesion at 1 mm": (_runs(), _runs((5, 10)), 1.0, (1.0, 0.0, 0, 0, 0)),
}


@pytest.mark.parametrize("prediction, truth, spacing, expected", LESION_WISE_CASES.values(), ids=LESION_WISE_CASES)
def test_lesion_wise(prediction, truth, spacing, expected):
    scores = metrics.lesion_wise(prediction, truth, spacing=spacing)
    assert scores == pytest.approx(dict(zip(LESION_WISE_KEYS, expected)))
    assert list(scores) == list(LESION_WISE_KEYS)


def test_lesion_wise_options():
    # shape: (1, 1, 40) the "two reference lesions closer than the dilation" case without dilation:
    # two lesions, 5..9 found exactly, 12..16 missed -> (1 + 0) / 2 and (0 + 374) / 2.
    prediction, truth = _runs((5, 10)), _runs((5, 10), (12, 17))
    assert metrics.lesion_wise(prediction, truth, spacing=VOXEL_25, dilation=0) == pytest.approx(
        dict(zip(LESION_WISE_KEYS, (0.5, 187.0, 2, 0, 1))))
    # A threshold of 0 scores the 1 mm^3 voxels of "missed lesion at 1 mm".
    assert metrics.lesion_wise(_runs(), truth, spacing=1.0, min_volume_mm3=0.0)["true_lesions"] == 1
    for bad in ({"dilation": -1}, {"dilation": 1.5}, {"min_volume_mm3": -1.0}):
        with pytest.raises(ValueError, match="dilation"):
            metrics.lesion_wise(prediction, truth, **bad)


def _cored_tumour():
    # shape: (16, 16, 16) edema 1..11, core 3..8 (216 voxels), enhancing 4..5 (8 voxels, 8 mm^3)
    truth = np.zeros((16, 16, 16), np.uint8)
    truth[1:12, 1:12, 1:12] = BRATS.region_labels["WT"]
    truth[3:9, 3:9, 3:9] = BRATS.region_labels["TC"]
    truth[4:6, 4:6, 4:6] = BRATS.region_labels["ET"]
    prediction = truth.copy()
    prediction[truth == BRATS.region_labels["ET"]] = BRATS.region_labels["TC"]  # enhancing called core
    return prediction, truth


def test_lesion_table():
    prediction, truth = _cored_tumour()
    table = metrics.lesion_table([truth, prediction], [truth, truth], case_ids=["a", "b"])
    keys = ["rq", "sq", "pq", "sq_dice", "sq_hd95", "tp", "fp", "fn", "lesion_dice", "lesion_hd95"]
    assert list(table.columns) == [f"{key}_{region}" for key in keys for region in BRATS.regions]
    assert list(table.index) == ["a", "b"] and table.index.name == "case_id"
    perfect = {"rq": 1.0, "sq": 1.0, "pq": 1.0, "sq_dice": 1.0, "sq_hd95": 0.0, "tp": 1, "fp": 0, "fn": 0,
               "lesion_dice": 1.0, "lesion_hd95": 0.0}
    for region in BRATS.regions:
        assert table.loc["a", [f"{key}_{region}" for key in keys]].tolist() == list(perfect.values())
    # Case b missed its only enhancing lesion: an instance score of 0 (HD95 infinite), but at 8 mm^3
    # the lesion-wise scores do not count it, as if the case had none.
    et = table.loc["b", [f"{key}_ET" for key in keys]].tolist()
    assert et == [0.0, 0.0, 0.0, 0.0, INF, 0, 0, 1, 1.0, 0.0]
    assert table.loc["b", "lesion_dice_TC"] == 1.0


def test_lesion_table_whole_tumour_masks_and_errors():
    mask = np.zeros((3, 3, 3), np.uint8)  # shape: (3, 3, 3) a 0/1 whole-tumour mask
    mask[1, 1, 1] = 1
    table = metrics.lesion_table([mask], [mask], case_ids=["x"], regions=["WT"])
    assert list(table.columns) == ["rq_WT", "sq_WT", "pq_WT", "sq_dice_WT", "sq_hd95_WT", "tp_WT", "fp_WT", "fn_WT",
                                   "lesion_dice_WT", "lesion_hd95_WT"]
    with pytest.raises(ValueError, match="regions"):
        metrics.lesion_table([mask], [mask], case_ids=["x"], regions=["NCR"])
    with pytest.raises(ValueError, match="case_ids"):
        metrics.lesion_table([mask], [mask, mask], case_ids=["x"])


# The official comparison: lesion_scores against the brats-evaluation package (requirements-test.lock),
# which reads a case's two NIfTI files and evaluates them with panoptica in its glioma configuration.
# BraTS 2023 numbers the labels each region adds 1 (TC), 2 (WT) and 3 (ET). panoptica 2.1.7 reads the
# files with SimpleITK, whose arrays run (z, y, x) while it takes the spacing as (x, y, z): the
# anisotropic cases use spacings that read the same both ways, such as (2, 1, 2).
BRATS_2023_LABELS = {"WT": 2, "TC": 1, "ET": 3}
OFFICIAL_KEYS = {"rq": "rq", "sq": "sq", "pq": "pq", "sq_dice": "sq_dsc", "sq_hd95": "sq_hd95", "tp": "tp",
                 "fp": "fp", "fn": "fn"}


def _with_iou(config: str) -> str:
    """The package's glioma configuration with IoU among the instance metrics.

    It matches on Dice and reports Dice, HD95 and NSD; panoptica's sq and pq are built on IoU, which
    this adds, with panoptica's default IoU edge cases (NaN without instances, 0 without a match).
    """
    assert "instance_matcher: !MaxBipartiteMatching {matching_metric: !Metric DSC" in config
    assert "matching_threshold: 0.000001}" in config
    metrics_line = "instance_metrics: [!Metric DSC, !Metric NSD, !Metric HD95]"
    dice_edge = "    !Metric DSC: !MetricZeroTPEdgeCaseHandling"
    assert metrics_line in config and dice_edge in config, "the bundled glioma configuration changed"
    iou_edge = ("    !Metric IOU: !MetricZeroTPEdgeCaseHandling {empty_prediction_result: !EdgeCaseResult ZERO,\n"
                "      empty_reference_result: !EdgeCaseResult ZERO, no_instances_result: !EdgeCaseResult NAN,\n"
                "      normal: !EdgeCaseResult ZERO}\n")
    return config.replace(metrics_line, metrics_line[:-1] + ", !Metric IOU]").replace(dice_edge, iou_edge + dice_edge)


@pytest.fixture(scope="module")
def official_scores(tmp_path_factory):
    """scores(prediction, truth, spacing) -> {region: the package's scores} for two label volumes of ours."""
    brats_evaluation = pytest.importorskip(
        "brats_evaluation", reason="brats-evaluation is not installed (make unit installs requirements-test.lock)")
    import nibabel as nib
    import panoptica

    panoptica.disable_citation_reminder()
    folder = tmp_path_factory.mktemp("official")
    config = folder / "config_gli_iou.yaml"
    config.write_text(_with_iou(brats_evaluation.config_path("gli").read_text()))
    evaluator = panoptica.Panoptica_Evaluator.load_from_config(str(config))

    def scores(prediction, truth, spacing):
        paths = [folder / "prediction.nii.gz", folder / "truth.nii.gz"]
        for path, labels in zip(paths, (prediction, truth)):
            theirs = np.zeros(labels.shape, np.uint8)
            for region, label in BRATS.region_labels.items():
                theirs[labels == label] = BRATS_2023_LABELS[region]
            nib.save(nib.Nifti1Image(theirs, np.diag([*spacing, 1.0])), path)
        result = brats_evaluation.evaluate_single_exam(str(paths[0]), str(paths[1]), "case", evaluator)
        assert "error" not in result, result
        return {region: result[region.lower()] for region in BRATS.regions}

    return scores


def _as_enhancing(mask):
    # A binary case painted as enhancing tumour, so that it is the same in all three regions.
    return np.where(mask, BRATS.region_labels["ET"], 0).astype(np.uint8)


def _synthetic_case_with_faults():
    """A synthetic case's labels around its two tumours, and a prediction with common faults.

    shape: (108, 111, 107) for seed 2. Enhancing tumour is the outer layer of each necrotic core (the
    generator makes none for this seed); the prediction shifts the smaller tumour by (2, 1, -1) voxels,
    cuts a 5-voxel slab out of the larger one's enhancing rim (two pieces for one lesion), drops the
    specks of fewer than 10 voxels (this seed has one of edema) and adds a false tumour (an enhancing
    ball in edema) where it is farthest from the true ones.
    """
    from scipy import ndimage

    from tutorial_lib.synthetic import generate_case

    labels = generate_case("Synth_0002", seed=2).seg
    low, high = np.argwhere(labels).min(axis=0) - 8, np.argwhere(labels).max(axis=0) + 9
    truth = labels[tuple(slice(a, b) for a, b in zip(low, high))].copy()
    core = truth == BRATS.region_labels["TC"]
    truth[core & ~ndimage.binary_erosion(core)] = BRATS.region_labels["ET"]
    tumours, count = ndimage.label(truth > 0, ndimage.generate_binary_structure(3, 3))
    sizes = np.bincount(tumours.ravel())
    sizes[0] = 0
    large, small = np.argsort(sizes)[::-1][:2]
    assert count >= 2 and sizes[small] > 1000, "seed 2 should give two tumours"
    prediction = np.where((tumours == small) | (sizes[tumours] < 10), 0, truth)
    shifted = np.roll(np.where(tumours == small, truth, 0), (2, 1, -1), axis=(0, 1, 2))
    prediction[shifted > 0] = shifted[shifted > 0]
    rim = (tumours == large) & (truth == BRATS.region_labels["ET"])
    middle = np.median(np.nonzero(rim)[0])
    prediction[rim & (np.abs(np.arange(truth.shape[0]) - middle) < 3)[:, None, None]] = BRATS.region_labels["TC"]
    clearance = ndimage.distance_transform_edt(truth == 0)
    centre = np.array(np.unravel_index(np.argmax(clearance), truth.shape))
    assert clearance[tuple(centre)] > 8, "no room for a false tumour"
    distance = np.linalg.norm(np.indices(truth.shape) - centre[:, None, None, None], axis=0)
    prediction[distance <= 5] = BRATS.region_labels["WT"]
    prediction[distance <= 3] = BRATS.region_labels["ET"]
    return prediction, truth


OFFICIAL_CASES = {
    **{name: (lambda p=p, t=t, s=s: (_as_enhancing(p), _as_enhancing(t), s))
       for name, (p, t, s, _) in LESION_SCORE_CASES.items()},
    "tied predictions": lambda: (_as_enhancing(_tied_predictions()[0] | _tied_predictions()[1]),
                                 _as_enhancing(_tied_predictions()[2]), 1.0),
    "cored tumour, enhancing missed": lambda: (*_cored_tumour(), (2.5, 1.0, 2.5)),
    "synthetic case with faults": lambda: (*_synthetic_case_with_faults(), 1.0),
}


@pytest.mark.filterwarnings("ignore:The threshold is set to 0.5:UserWarning")  # panoptica's NSD, not compared
@pytest.mark.parametrize("case", OFFICIAL_CASES.values(), ids=OFFICIAL_CASES)
def test_lesion_scores_agree_with_brats_evaluation(case, official_scores):
    prediction, truth, spacing = case()
    spacing = tuple(np.broadcast_to(spacing, 3).tolist())
    official = official_scores(prediction, truth, spacing)
    predicted, true = metrics.region_masks(prediction), metrics.region_masks(truth)
    for region in BRATS.regions:
        ours = metrics.lesion_scores(predicted[region], true[region], spacing=spacing)
        np.testing.assert_allclose([ours[key] for key in OFFICIAL_KEYS],
                                   [official[region][key] for key in OFFICIAL_KEYS.values()],
                                   rtol=0, atol=1e-6, equal_nan=True, err_msg=f"{region}: {list(OFFICIAL_KEYS)}")
