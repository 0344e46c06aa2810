"""Calibration of voxel probabilities: reliability tables, expected calibration error, temperature scaling.

A network's probability is *calibrated* when, among the voxels it gives
about 0.8, about 80 % are tumour. Segmentation networks trained with a Dice
loss are typically over-confident: their probabilities crowd at 0 and 1 and
the voxels near the border are wrong more often than the numbers say.

These functions treat the foreground probability of one output channel as a
binary forecast, voxel by voxel (NumPy arrays of any equal shape, usually
``(x, y, z)`` or the voxels of a brain mask gathered into one axis). Bins
split [0, 1] into equal widths; the last bin holds 1.0. Temperature scaling
(Guo et al., 2017) divides the logit by one number ``T`` fitted on validation
voxels by minimising the binary cross-entropy: ``T > 1`` softens an
over-confident network, and the thresholded mask at 0.5 never changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

__all__ = ["reliability_table", "expected_calibration_error", "fit_temperature", "apply_temperature"]

# float32 sigmoids saturate at exactly 0 and 1; a logit needs them a hair inside.
_EPSILON = 1e-6


def _logits(probabilities: Any) -> np.ndarray:
    return special.logit(np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1 - _EPSILON))


def _forecasts(probabilities: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    probabilities, truth = np.asarray(probabilities, dtype=np.float64), np.asarray(truth)
    if probabilities.shape != truth.shape:
        raise ValueError(f"probabilities shape {probabilities.shape} != truth shape {truth.shape}")
    if probabilities.size == 0:
        raise ValueError("no voxels to assess: the probabilities are empty")
    if np.nanmin(probabilities) < 0 or np.nanmax(probabilities) > 1 or np.isnan(probabilities).any():
        raise ValueError("probabilities must lie in [0, 1] (a network's sigmoid output), "
                         f"got values from {np.nanmin(probabilities):g} to {np.nanmax(probabilities):g}")
    return probabilities.ravel(), (truth > 0.5).ravel()


def reliability_table(probabilities: Any, truth: Any, *, bins: int = 10) -> pd.DataFrame:
    """Per probability bin: mean predicted probability, observed tumour fraction and voxel count.

    Parameters
    ----------
    probabilities : array_like
        Foreground probabilities in [0, 1].
    truth : array_like
        Same shape; boolean or 0/1.
    bins : int, optional
        Equal-width bins over [0, 1].

    Returns
    -------
    pandas.DataFrame
        Index: the bins' lower edges; columns ``confidence`` (mean probability),
        ``frequency`` (share of tumour voxels) and ``voxels``. Empty bins are left out.
        A calibrated network has ``frequency`` close to ``confidence`` in every row.

    Raises
    ------
    ValueError
        For shapes that differ, no voxels, probabilities outside [0, 1] or ``bins < 1``.

    Examples
    --------
    >>> reliability_table([0.1, 0.2, 0.9, 0.95], [0, 1, 1, 1], bins=2).to_dict("list")
    {'confidence': [0.15000000000000002, 0.925], 'frequency': [0.5, 1.0], 'voxels': [2, 2]}
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    probabilities, truth = _forecasts(probabilities, truth)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    voxels = np.bincount(which, minlength=bins)
    filled = voxels > 0
    return pd.DataFrame({
        "confidence": np.bincount(which, weights=probabilities, minlength=bins)[filled] / voxels[filled],
        "frequency": np.bincount(which, weights=truth, minlength=bins)[filled] / voxels[filled],
        "voxels": voxels[filled],
    }, index=pd.Index(np.arange(bins)[filled] / bins, name="lower_edge"))


def expected_calibration_error(probabilities: Any, truth: Any, *, bins: int = 10) -> float:
    """ECE: the voxel-weighted mean gap between probability and tumour fraction over the bins.

    ``ECE = sum_b (n_b / N) * |frequency_b - confidence_b|`` over the rows of
    :func:`reliability_table`: 0 for a calibrated network, up to 1.

    Examples
    --------
    >>> round(expected_calibration_error([0.1, 0.2, 0.9, 0.95], [0, 1, 1, 1], bins=2), 4)
    0.2125
    """
    table = reliability_table(probabilities, truth, bins=bins)
    weights = table["voxels"] / table["voxels"].sum()
    return float((weights * (table["frequency"] - table["confidence"]).abs()).sum())


def apply_temperature(probabilities: Any, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / temperature)``: float32, same shape; 0.5 stays 0.5.

    Examples
    --------
    >>> [round(float(p), 3) for p in apply_temperature(np.array([0.5, 0.8808]), 2.0)]
    [0.5, 0.731]
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return special.expit(_logits(probabilities) / temperature).astype(np.float32)


def fit_temperature(probabilities: Any, truth: Any, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the binary cross-entropy of ``probabilities`` against ``truth``.

    Fit it on validation voxels, never on the cases it will be judged on.
    A search over ``log T`` inside ``bounds`` (scipy's bounded Brent method).

    Examples
    --------
    Forecasts of 0.99 that are right only 3 times in 4 are over-confident, so ``T > 1``:

    >>> temperature = fit_temperature([0.99, 0.99, 0.99, 0.99], [1, 1, 1, 0])
    >>> round(temperature, 2), round(float(apply_temperature(0.99, temperature)), 3)
    (4.18, 0.75)
    """
    probabilities, truth = _forecasts(probabilities, truth)
    logits = _logits(probabilities)
    signs = np.where(truth, 1.0, -1.0)

    def cross_entropy(log_temperature: float) -> float:
        # -log sigmoid(s * z / T), stable for large |z|
        return float(np.mean(np.logaddexp(0.0, -signs * logits / np.exp(log_temperature))))

    low, high = np.log(bounds[0]), np.log(bounds[1])
    found = optimize.minimize_scalar(cross_entropy, bounds=(low, high), method="bounded",
                                     options={"xatol": 1e-4})
    return float(np.exp(found.x))
