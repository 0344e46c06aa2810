"""Segmentation metrics: Dice, Hausdorff-95, sensitivity, specificity, per-case tables.

These NumPy functions evaluate finished segmentations (one case at a time, no
batch axis, e.g. ``(x, y, z)``) and import no deep-learning backend; the Dice
that Keras follows during training is :class:`tutorial_lib.training.DiceMetric`.

Empty-mask conventions follow the official BraTS evaluation:

- Dice of two empty masks is 1.0 (nothing to find, nothing found);
- Hausdorff-95 of two empty masks is 0 mm, and when exactly one is empty it is
  ``BRATS.hd95_worst_mm`` (373.13 mm, the diagonal of the 240 x 240 x 155 grid);
- sensitivity with an empty truth and specificity with no background are 1.0.

Masks may be boolean or numeric: numeric predictions count as foreground
where ``> threshold`` (0.5), numeric truths where ``> 0.5``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from tutorial_lib.config import BRATS

__all__ = [
    "binarise",
    "dice_coefficient",
    "region_masks",
    "hausdorff95",
    "sensitivity",
    "specificity",
    "case_table",
]


def binarise(mask: Any, threshold: float = 0.5) -> np.ndarray:
    """A boolean mask: boolean input as it is, numeric input where ``> threshold``.

    Examples
    --------
    >>> binarise(np.array([0.2, 0.5, 0.9])).tolist(), binarise(np.array([True, False])).tolist()
    ([False, False, True], [True, False])
    """
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > threshold


def _binary_pair(prediction: Any, truth: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} != truth shape {truth.shape}")
    return binarise(prediction, threshold), binarise(truth)


def dice_coefficient(
    prediction: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5, empty_value: float = 1.0
) -> float:
    """Dice = 2|P∩T| / (|P| + |T|) of two masks of equal shape.

    Parameters
    ----------
    prediction : ndarray
        Boolean mask or probabilities; voxels ``> threshold`` count as foreground.
    truth : ndarray
        Boolean or 0/1 mask of the same shape.
    threshold : float, optional
        Binarisation threshold for a numeric ``prediction``.
    empty_value : float, optional
        Result when both masks are empty (1.0, as the official BraTS evaluation).

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> dice_coefficient(np.array([0.9, 0.2, 0.7]), np.array([1, 1, 0]))
    0.5
    """
    pred, true = _binary_pair(prediction, truth, threshold)
    denominator = int(pred.sum()) + int(true.sum())
    if denominator == 0:
        return float(empty_value)
    return 2.0 * int(np.logical_and(pred, true).sum()) / denominator


def sensitivity(prediction: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5) -> float:
    """True-positive rate TP / (TP + FN); 1.0 when the truth is empty.

    Parameters
    ----------
    prediction, truth : ndarray
        Masks of equal shape (see the module docstring for binarisation).
    threshold : float, optional
        Binarisation threshold for a numeric ``prediction``.

    Returns
    -------
    float

    Examples
    --------
    >>> sensitivity(np.array([1, 0, 0]), np.array([1, 1, 0]))
    0.5
    """
    pred, true = _binary_pair(prediction, truth, threshold)
    positives = int(true.sum())
    return 1.0 if positives == 0 else int(np.logical_and(pred, true).sum()) / positives


def specificity(prediction: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5) -> float:
    """True-negative rate TN / (TN + FP); 1.0 when the truth has no background.

    Parameters
    ----------
    prediction, truth : ndarray
        Masks of equal shape (see the module docstring for binarisation).
    threshold : float, optional
        Binarisation threshold for a numeric ``prediction``.

    Returns
    -------
    float

    Examples
    --------
    >>> specificity(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    0.6666666666666666
    """
    pred, true = _binary_pair(prediction, truth, threshold)
    negatives = int((~true).sum())
    return 1.0 if negatives == 0 else int(np.logical_and(~pred, ~true).sum()) / negatives


def _surface(mask: np.ndarray) -> np.ndarray:
    # Voxels that erosion removes; the array border counts as background.
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1)


def _surface_distances(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from every voxel of surface ``source`` to surface ``target``."""
    return ndimage.distance_transform_edt(~target, sampling=spacing)[source]


def _check_spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(spacing, dtype=float))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,) or not np.all(values > 0):
        raise ValueError(f"spacing {spacing!r} must give one positive value per axis of a {ndim}D mask")
    return tuple(values.tolist())


def hausdorff95(
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: float | Sequence[float] = BRATS.spacing_mm,
    threshold: float = 0.5,
) -> float:
    """95th-percentile Hausdorff distance between two mask surfaces, in mm.

    Surfaces are the voxels removed by one binary erosion (face
    connectivity). Distances run both ways, from each surface voxel of one
    mask to the nearest surface voxel of the other, via Euclidean distance
    transforms that honour ``spacing``; the result is the 95th percentile of
    both sets pooled (linear interpolation), as in MedPy's ``hd95`` that many
    BraTS pipelines use. Unlike the maximum (the plain Hausdorff distance) it
    ignores the worst 5 % of surface voxels, so one stray voxel does not
    dominate.

    Parameters
    ----------
    prediction, truth : ndarray
        Masks of equal shape, e.g. ``(x, y, z)``.
    spacing : float or sequence of float, optional
        Voxel size in mm per axis (one value for isotropic voxels).
    threshold : float, optional
        Binarisation threshold for a numeric ``prediction``.

    Returns
    -------
    float
        0.0 if both masks are empty, ``BRATS.hd95_worst_mm`` if exactly one is.

    Raises
    ------
    ValueError
        If the shapes differ or ``spacing`` does not give one positive value per axis.

    Examples
    --------
    >>> a = np.zeros((1, 1, 8), bool); a[0, 0, 1] = True
    >>> b = np.zeros((1, 1, 8), bool); b[0, 0, 4] = True
    >>> hausdorff95(a, b, spacing=(1.0, 1.0, 2.5))
    7.5
    """
    pred, true = _binary_pair(prediction, truth, threshold)
    spacing = _check_spacing(spacing, pred.ndim)
    if not pred.any() and not true.any():
        return 0.0
    if not pred.any() or not true.any():
        return float(BRATS.hd95_worst_mm)
    pred_surface, true_surface = _surface(pred), _surface(true)
    distances = np.concatenate([_surface_distances(pred_surface, true_surface, spacing),
                                _surface_distances(true_surface, pred_surface, spacing)])
    return float(np.percentile(distances, 95))


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the BraTS evaluation regions of a label volume.

    Parameters
    ----------
    labels : ndarray of int
        BraTS label volume, e.g. ``(x, y, z)``. A 0/1 whole-tumour mask also
        works for ``"WT"`` since label 1 belongs to it.

    Returns
    -------
    dict of str to ndarray of bool
        One mask per key of ``BRATS.regions`` (WT, TC, ET).

    Examples
    --------
    >>> {k: v.tolist() for k, v in region_masks(np.array([0, 1, 2, 4])).items()}
    {'WT': [False, True, True, True], 'TC': [False, True, False, True], 'ET': [False, False, False, True]}
    """
    labels = np.asarray(labels)
    return {region: np.isin(labels, values) for region, values in BRATS.regions.items()}


def case_table(
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    *,
    case_ids: Sequence[str],
    spacing: float | Sequence[float] = BRATS.spacing_mm,
    regions: Sequence[str] | None = None,
    summary: bool = True,
) -> pd.DataFrame:
    """Per-case Dice, HD95, sensitivity and specificity for each BraTS region.

    Parameters
    ----------
    predictions, truths : sequence of ndarray
        BraTS label volumes ``(x, y, z)``, one per case; 0/1 whole-tumour
        masks work with ``regions=("WT",)``.
    case_ids : sequence of str
        One identifier per case, used as the row index.
    spacing : float or sequence of float, optional
        Voxel size in mm for HD95.
    regions : sequence of str, optional
        Subset of ``BRATS.regions``; all of them by default.
    summary : bool, optional
        Append rows ``"mean"``, ``"std"`` and ``"median"`` computed over the
        cases (BraTS leaderboards report these). Drop them with
        ``table.drop(index=["mean", "std", "median"])`` before further statistics.

    Returns
    -------
    pandas.DataFrame
        Index ``case_id``; columns ``"<metric>_<region>"`` such as
        ``"dice_WT"``, ``"hd95_WT"``, ``"sensitivity_WT"``, ``"specificity_WT"``.

    Raises
    ------
    ValueError
        If the three sequences differ in length or a region is unknown.

    Examples
    --------
    >>> truth = np.zeros((4, 4, 4), np.uint8); truth[1:3, 1:3, 1:3] = 2
    >>> case_table([truth], [truth], case_ids=["a"], regions=["WT"], summary=False)["dice_WT"].tolist()
    [1.0]
    """
    if not len(predictions) == len(truths) == len(case_ids):
        raise ValueError(
            f"got {len(predictions)} predictions, {len(truths)} truths and {len(case_ids)} case_ids"
        )
    regions = list(BRATS.regions) if regions is None else list(regions)
    unknown = sorted(set(regions) - set(BRATS.regions))
    if unknown:
        raise ValueError(f"unknown regions {unknown}; valid regions are {list(BRATS.regions)}")
    rows = [_case_row(p, t, regions, spacing) for p, t in zip(predictions, truths)]
    table = pd.DataFrame(rows, index=pd.Index(list(case_ids), name="case_id"))
    if summary and len(table):
        table = pd.concat([table, table.agg(["mean", "std", "median"])])
        table.index.name = "case_id"
    return table


def _case_row(
    prediction: np.ndarray, truth: np.ndarray, regions: list[str], spacing: Any
) -> dict[str, float]:
    predicted, true = region_masks(prediction), region_masks(truth)
    row: dict[str, float] = {}
    for metric, function in (("dice", dice_coefficient), ("sensitivity", sensitivity),
                             ("specificity", specificity)):
        row.update({f"{metric}_{r}": function(predicted[r], true[r]) for r in regions})
    row.update({f"hd95_{r}": hausdorff95(predicted[r], true[r], spacing=spacing) for r in regions})
    return row
