"""Tests for tutorial_lib.baseline on hand-made cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tutorial_lib import baseline, data

CANDIDATES = np.array([0.5, 1.5, 2.5, 3.5, 4.5])


def _ramp_case(tumour_from: int):
    """FLAIR 0..5 along one axis; tumour where the value >= tumour_from."""
    flair = np.arange(6, dtype=np.float32)  # shape: (6,)
    return flair, flair >= tumour_from, np.ones(6, dtype=bool)


# Rows: flair values, tumour mask, candidate -> Dice (by hand: 2|P&T| / (|P| + |T|)).
TABLE = [
    # shape: (6,); tumour = {3,4,5}; t=2.5 -> P = {3,4,5}: exact.
    (3, 2.5, 1.0),
    # t=1.5 -> P = {2,3,4,5}, T = {3,4,5}: 2*3 / (4+3)
    (3, 1.5, 6 / 7),
    # t=3.5 -> P = {4,5}: 2*2 / (2+3)
    (3, 3.5, 4 / 5),
    # tumour = {5}; t=0.5 -> P = {1..5}: 2*1 / (5+1)
    (5, 0.5, 2 / 6),
]


@pytest.mark.parametrize("tumour_from, threshold, expected", TABLE)
def test_flair_threshold_dice_by_hand(tumour_from, threshold, expected):
    flair, mask, brain = _ramp_case(tumour_from)
    assert baseline.flair_threshold_dice(flair, mask, brain, threshold) == pytest.approx(expected)
    column = list(CANDIDATES).index(threshold)
    table = baseline.threshold_dice_table([flair], [mask], [brain], thresholds=CANDIDATES)
    assert table[0, column] == pytest.approx(expected)


def test_fit_picks_the_separating_threshold():
    cases = [_ramp_case(3), _ramp_case(3)]
    assert baseline.fit_flair_threshold(*zip(*cases), thresholds=CANDIDATES) == 2.5


def test_fit_maximises_mean_dice_over_cases():
    # Case "3" wants 2.5, cases "4" want 3.5. Mean Dice at 2.5: (1 + 0.8 + 0.8) / 3;
    # at 3.5: (0.8 + 1 + 1) / 3 (P = {4, 5} on case "3": 2*2 / (2+3) = 0.8).
    cases = [_ramp_case(3), _ramp_case(4), _ramp_case(4)]
    assert baseline.fit_flair_threshold(*zip(*cases), thresholds=CANDIDATES) == 3.5


def test_voxels_outside_brain_are_never_predicted():
    flair, mask, _ = _ramp_case(3)
    brain = np.array([True, True, True, True, True, False])  # voxel 5 cut off
    # P = {3,4}, T = {3,4,5}: 2*2 / (2+3)
    assert baseline.flair_threshold_dice(flair, mask, brain, 2.5) == pytest.approx(0.8)


def test_leave_one_out_uses_the_other_cases():
    cases = [_ramp_case(1), _ramp_case(1), _ramp_case(2), _ramp_case(4)]
    dice, chosen = baseline.leave_one_out_dice(*zip(*cases), thresholds=CANDIDATES)
    # Without a "1" case, t=1.5 wins (sum 2.56 vs 2.46 at 0.5); without "2" or "4", t=0.5.
    np.testing.assert_allclose(chosen, [1.5, 1.5, 0.5, 0.5])
    # "1" at 1.5: 2*4 / (4+5); "2" at 0.5: 2*4 / (5+4); "4" at 0.5: 2*2 / (5+2).
    np.testing.assert_allclose(dice, [8 / 9, 8 / 9, 8 / 9, 4 / 7])


@pytest.mark.parametrize(
    "flairs, masks, brains, message",
    [
        ([], [], [], "non-zero number"),
        ([np.zeros(3)], [np.zeros(3, bool)], [], "same, non-zero"),
        ([np.zeros(3)], [np.zeros(4, bool)], [np.ones(3, bool)], "same shape"),
        ([np.zeros(3)], [np.zeros(3)], [np.ones(3, bool)], "boolean"),
    ],
)
def test_bad_input_raises(flairs, masks, brains, message):
    with pytest.raises(ValueError, match=message):
        baseline.fit_flair_threshold(flairs, masks, brains)


def test_bad_thresholds_and_too_few_cases():
    case = _ramp_case(3)
    with pytest.raises(ValueError, match="increasing"):
        baseline.fit_flair_threshold(*zip(case), thresholds=np.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        baseline.leave_one_out_dice(*zip(case))


def _write_cache(root, cases: dict, split: dict):
    """Hand-made cache in the CONTRIBUTING.md layout: flair is channel 0."""
    entries = {case_id: {"labelled": True} for case_id in cases}
    manifest = {"version": 1, "downsample": 4, "modalities": ["flair", "t1", "t1ce", "t2"], "cases": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "split.json").write_text(json.dumps({"seed": 0, **split}))
    for case_id, (flair, label) in cases.items():
        folder = root / "cases" / case_id
        folder.mkdir(parents=True)
        (folder / "case.json").write_text("{}")
        image = np.zeros((*flair.shape, 4), np.float16)  # shape: (2, 3, 1, 4)
        image[..., 0] = flair
        np.save(folder / "image.npy", image)
        np.save(folder / "label.npy", label.astype(np.uint8))
        np.save(folder / "brain.npy", np.ones(flair.shape, bool))


def test_threshold_baseline_from_cache(tmp_path):
    flair = np.array([0, 1, 2, 3, 4, 5], np.float16).reshape(2, 3, 1)  # shape: (2, 3, 1)
    exact = np.array([0, 0, 0, 2, 1, 4]).reshape(2, 3, 1)  # labels 1, 2, 4 all count as WT
    loose = np.array([0, 0, 0, 0, 0, 2]).reshape(2, 3, 1)
    cases = {"a": (flair, exact), "b": (flair, exact), "c": (flair, loose)}
    _write_cache(tmp_path, cases, {"train": ["a"], "val": ["b"], "test": ["c"], "unlabelled": []})
    result = baseline.threshold_baseline_from_cache(tmp_path)
    assert result["train_ids"] == ["a", "b"] and result["test_ids"] == ["c"]
    # Training cases are separated between 2 and 3; on "c" (tumour {5}) P = {3,4,5}: 2/4.
    assert 2.0 <= result["threshold"] < 3.0
    assert result["per_case"] == {"c": pytest.approx(0.5)} and result["mean_dice"] == pytest.approx(0.5)
    swapped = baseline.threshold_baseline_from_cache(tmp_path, train_ids=["c"], test_ids=["a"])
    assert swapped["threshold"] >= 4.0 and swapped["mean_dice"] == pytest.approx(2 / 4)


def test_cache_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.json"):
        baseline.threshold_baseline_from_cache(tmp_path)
    flair = np.zeros((2, 3, 1), np.float16)
    _write_cache(tmp_path, {"a": (flair, flair)}, {"train": ["a"], "val": [], "test": ["zz"], "unlabelled": []})
    with pytest.raises(ValueError, match="cases not in the cache: \\['zz'\\]"):
        baseline.threshold_baseline_from_cache(tmp_path)
    with pytest.raises(ValueError, match="need training and test"):
        baseline.threshold_baseline_from_cache(tmp_path, train_ids=[], test_ids=["a"])


def test_threshold_baseline_holds_one_training_case_at_a_time(tiny_cache):
    # Peak memory must not grow with the number of training cases (285 full-size cases would not fit).
    import tracemalloc

    split = data.load_split(tiny_cache)

    def peak(train_ids):
        tracemalloc.start()
        baseline.threshold_baseline_from_cache(tiny_cache, train_ids=train_ids, test_ids=split["test"])
        _, highest = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return highest

    few, many = peak(split["train"]), peak(split["train"] * 4)
    cases = len(split["train"])
    assert many < 1.3 * few, f"peak {few / 2**20:.1f} MiB for {cases} cases, {many / 2**20:.1f} MiB for {4 * cases}"
