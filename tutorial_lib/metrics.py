"""Segmentation metrics (seed: the helper that owns this module extends it)."""

from __future__ import annotations

import numpy as np

__all__ = ["dice_coefficient"]


def dice_coefficient(
    prediction: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5, empty_value: float = 1.0
) -> float:
    """Dice = 2|P∩T| / (|P| + |T|) of two masks of equal shape.

    ``prediction`` may hold probabilities: voxels ``> threshold`` count as
    foreground (boolean arrays are used as they are). When both masks are
    empty the result is ``empty_value`` (1.0, as the official BraTS evaluation).
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} != truth shape {truth.shape}")
    pred = prediction if prediction.dtype == bool else prediction > threshold
    true = truth if truth.dtype == bool else truth > 0.5
    denominator = int(pred.sum()) + int(true.sum())
    if denominator == 0:
        return float(empty_value)
    return 2.0 * int(np.logical_and(pred, true).sum()) / denominator
