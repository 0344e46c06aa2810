"""Tests for tutorial_lib.calibration: small hand-computed cases, then a temperature that repairs what it can."""

from __future__ import annotations

import numpy as np
import pytest

from tutorial_lib.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
)


@pytest.mark.parametrize("probabilities, truth, bins, expected", [
    # two bins: {0.1, 0.2} with 1 tumour in 2 (gap |0.5 - 0.15|), {0.9, 0.95} all tumour (gap 0.075)
    ([0.1, 0.2, 0.9, 0.95], [0, 1, 1, 1], 2, 0.5 * 0.35 + 0.5 * 0.075),
    # certain and right, 1.0 in the last bin, 0.0 in the first
    ([1.0, 0.0, 1.0], [1, 0, 1], 10, 0.0),
    # certain and always wrong
    ([1.0, 0.0], [0, 1], 4, 1.0),
    # one bin holds everything: |share of tumour - mean probability| = |0.25 - 0.5|
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0], 1, 0.25),
    # 0.3 and 0.7 in separate bins of 10, each right as often as it says (3 of 10, 7 of 10)
    ([0.3] * 10 + [0.7] * 10, [1] * 3 + [0] * 7 + [1] * 7 + [0] * 3, 10, 0.0),
])
def test_expected_calibration_error_of_hand_made_forecasts(probabilities, truth, bins, expected):
    assert expected_calibration_error(probabilities, truth, bins=bins) == pytest.approx(expected)


def test_reliability_table_leaves_out_empty_bins_and_counts_every_voxel():
    table = reliability_table([0.05, 0.05, 0.55, 1.0], [0, 0, 1, 1], bins=4)
    assert table.index.tolist() == [0.0, 0.5, 0.75]   # the bin [0.25, 0.5) is empty; 1.0 is in the last
    assert table["voxels"].tolist() == [2, 1, 1]
    assert table["frequency"].tolist() == [0.0, 1.0, 1.0]
    assert table["confidence"].tolist() == pytest.approx([0.05, 0.55, 1.0])


@pytest.mark.parametrize("probabilities, truth, bins, message", [
    ([0.2, 0.3], [1], 10, "shape"),
    ([], [], 10, "no voxels"),
    ([0.2, 1.5], [0, 1], 10, r"\[0, 1\]"),
    ([0.2, np.nan], [0, 1], 10, r"\[0, 1\]"),
    ([0.2], [1], 0, "bins"),
])
def test_bad_forecasts_are_refused_with_the_reason(probabilities, truth, bins, message):
    with pytest.raises(ValueError, match=message):
        reliability_table(probabilities, truth, bins=bins)


def test_temperature_keeps_the_segmentation_and_its_direction_follows_confidence():
    probabilities = np.array([0.02, 0.3, 0.5, 0.51, 0.99], np.float32)
    for temperature in (0.5, 1.0, 3.0):
        scaled = apply_temperature(probabilities, temperature)
        np.testing.assert_array_equal(scaled > 0.5, probabilities > 0.5)
    assert apply_temperature(0.9, 2.0) < 0.9 < apply_temperature(0.9, 0.5)
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(probabilities, 0.0)


def test_fitted_temperature_recovers_the_one_that_made_the_forecasts_over_confident():
    """Draw calibrated logits, sharpen them by T = 2.5, and fit: T comes back and the ECE falls."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, size=200_000)
    truth = rng.random(logits.size) < 1 / (1 + np.exp(-logits))   # calibrated by construction
    over_confident = 1 / (1 + np.exp(-2.5 * logits))
    temperature = fit_temperature(over_confident, truth)
    assert temperature == pytest.approx(2.5, rel=0.05)
    repaired = apply_temperature(over_confident, temperature)
    assert expected_calibration_error(repaired, truth) < 0.01 < expected_calibration_error(over_confident, truth)


def test_a_temperature_cannot_shift_probabilities_that_are_all_too_high():
    """Every forecast 0.2 too high: the best temperature leaves most of the error (a bias needs another fix)."""
    rng = np.random.default_rng(1)
    truth_probability = rng.uniform(0.05, 0.6, size=100_000)
    truth = rng.random(truth_probability.size) < truth_probability
    biased = truth_probability + 0.2
    repaired = apply_temperature(biased, fit_temperature(biased, truth))
    assert expected_calibration_error(repaired, truth) > 0.5 * expected_calibration_error(biased, truth)
