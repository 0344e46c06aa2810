"""Segmentation metrics: Dice, Hausdorff-95, sensitivity, specificity, lesion-wise scores, per-case tables.

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

Lesion-wise metrics score each connected tumour component on its own, so that
a missed small lesion counts as much as a badly drawn large one:
:func:`lesion_scores` gives the instance scores (recognition, segmentation and
panoptic quality) that the ``brats-evaluation`` package computes with
panoptica, :func:`lesion_wise` the BraTS 2023 lesion-wise Dice and HD95, and
:func:`lesion_table` both per case and region. Their empty cases follow their
official code, not the conventions above.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, optimize

from tutorial_lib.config import BRATS

__all__ = [
    "binarise",
    "dice_coefficient",
    "region_masks",
    "hausdorff95",
    "sensitivity",
    "specificity",
    "case_table",
    "LESION_HD95_PENALTY_MM",
    "lesion_scores",
    "lesion_wise",
    "lesion_table",
]

# HD95 (mm) that the BraTS 2023 lesion-wise scores give a missed lesion and a false-positive
# component: the official code's 374, one millimetre above the grid's diagonal (BRATS.hd95_worst_mm).
LESION_HD95_PENALTY_MM = 374.0


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
    regions = _table_regions(predictions, truths, case_ids, regions)
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


def _table_regions(
    predictions: Sequence[Any], truths: Sequence[Any], case_ids: Sequence[str], regions: Sequence[str] | None
) -> list[str]:
    """The regions of a per-case table (all of ``BRATS.regions`` by default), after checking its inputs."""
    if not len(predictions) == len(truths) == len(case_ids):
        raise ValueError(
            f"got {len(predictions)} predictions, {len(truths)} truths and {len(case_ids)} case_ids"
        )
    regions = list(BRATS.regions) if regions is None else list(regions)
    unknown = sorted(set(regions) - set(BRATS.regions))
    if unknown:
        raise ValueError(f"unknown regions {unknown}; valid regions are {list(BRATS.regions)}")
    return regions


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask, full connectivity (26 neighbours in 3D), labelled 1..n."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    # Numbered by first voxel with the first axis running fastest, the order in which the official
    # evaluation numbers them (cc3d on the (z, y, x) array SimpleITK reads from a NIfTI file), so that
    # ties in the matching resolve alike.
    labels, count = ndimage.label(mask.T, structure=structure)
    return labels.T, int(count)


def _bounding_box(boxes: Iterable[tuple[slice, ...]], shape: tuple[int, ...], pad: int) -> tuple[slice, ...]:
    """The smallest box holding all ``boxes``, grown by ``pad`` voxels and clipped to ``shape``."""
    boxes = list(boxes)
    return tuple(slice(max(min(box[axis].start for box in boxes) - pad, 0),
                       min(max(box[axis].stop for box in boxes) + pad, size)) for axis, size in enumerate(shape))


def _overlaps(pred_labels: np.ndarray, n_pred: int, true_labels: np.ndarray, n_true: int) -> np.ndarray:
    """Voxels shared by each (reference, predicted) component pair; row and column 0 are background."""
    pairs = true_labels.astype(np.int64) * (n_pred + 1) + pred_labels
    return np.bincount(pairs.ravel(), minlength=(n_true + 1) * (n_pred + 1)).reshape(n_true + 1, n_pred + 1)


def _match_components(overlap: np.ndarray, match_threshold: float) -> list[tuple[int, int]]:
    """One-to-one (reference, predicted) pairs with the largest total Dice, as panoptica's MaxBipartiteMatching."""
    shared = overlap[1:, 1:]
    if shared.size == 0:
        return []
    dice = 2.0 * shared / (overlap.sum(axis=1)[1:, None] + overlap.sum(axis=0)[None, 1:])
    # panoptica's costs: 1 - Dice for overlapping pairs at or above the threshold, 1 + 1e-6 for
    # the rest; an assigned pair only counts when it costs less than 1, i.e. when it overlaps.
    cost = np.where((shared > 0) & (dice >= match_threshold), 1.0 - dice, 1.0 + 1e-6)
    rows, columns = optimize.linear_sum_assignment(cost)
    return [(int(r) + 1, int(c) + 1) for r, c in zip(rows, columns) if cost[r, c] < 1.0]


def _matched_quality(
    overlap: np.ndarray, pairs: list[tuple[int, int]], pred_labels: np.ndarray, true_labels: np.ndarray,
    spacing: tuple[float, ...],
) -> tuple[float, float, float]:
    """Mean IoU, Dice and HD95 over matched component pairs."""
    shared = np.array([overlap[t, p] for t, p in pairs], dtype=float)
    sizes = np.array([overlap[t].sum() + overlap[:, p].sum() for t, p in pairs], dtype=float)
    pred_boxes, true_boxes = ndimage.find_objects(pred_labels), ndimage.find_objects(true_labels)
    hd95 = []
    for t, p in pairs:
        # One voxel of margin keeps each surface exactly as it is in the whole volume.
        box = _bounding_box([pred_boxes[p - 1], true_boxes[t - 1]], pred_labels.shape, 1)
        hd95.append(hausdorff95(pred_labels[box] == p, true_labels[box] == t, spacing=spacing))
    return float(np.mean(shared / (sizes - shared))), float(np.mean(2.0 * shared / sizes)), float(np.mean(hd95))


def lesion_scores(
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: float | Sequence[float] = BRATS.spacing_mm,
    threshold: float = 0.5,
    match_threshold: float = 1e-6,
) -> dict[str, float]:
    """Instance scores of one region, as the ``brats-evaluation`` package computes them with panoptica.

    Both masks are split into connected components (26-connectivity in
    3D), the lesions. Reference and predicted lesions are paired one to one
    as panoptica's ``MaxBipartiteMatching`` in the package's glioma
    configuration does (``brats-evaluation`` 0.0.10, panoptica 2.1.7): on
    Dice, every overlapping pair with Dice ``>= match_threshold`` (1e-6 there,
    so any overlap) is a candidate, and the Hungarian algorithm picks the
    pairs with the largest total Dice. Paired lesions are true positives,
    unpaired predicted ones false positives, unpaired reference ones false
    negatives. ``tests/test_metrics.py`` checks every score against the
    package on hand-made cases and a synthetic one.

    Parameters
    ----------
    prediction, truth : ndarray
        Masks of equal shape, e.g. ``(x, y, z)`` (see the module docstring for binarisation).
    spacing : float or sequence of float, optional
        Voxel size in mm per axis, for HD95.
    threshold : float, optional
        Binarisation threshold for a numeric ``prediction``.
    match_threshold : float, optional
        Smallest Dice of a pair that may be matched.

    Returns
    -------
    dict of str to float
        ``"true_lesions"`` and ``"predicted_lesions"`` (components), ``"tp"``,
        ``"fp"``, ``"fn"``; ``"rq"``, recognition quality, the lesion F1
        ``tp / (tp + (fp + fn) / 2)``; ``"sq"``, segmentation quality, the
        mean IoU of the matched pairs (panoptica's ``sq``; BraTS reports
        ``"sq_dice"``); ``"pq"`` = sq * rq, panoptic quality; ``"sq_dice"``
        and ``"sq_hd95"``, mean Dice and mean HD95 (mm, :func:`hausdorff95`)
        of the matched pairs. With no match, as in the official configuration:
        NaN for all five scores when neither mask has a lesion; otherwise 0
        for rq, sq, pq and sq_dice and infinity for sq_hd95 (only false
        positives, only false negatives, or lesions that never overlap).

    Raises
    ------
    ValueError
        If the shapes differ or ``spacing`` does not give one positive value per axis.

    Examples
    --------
    >>> truth = np.zeros((1, 1, 9), bool); truth[0, 0, [0, 1, 2, 3, 7]] = True
    >>> prediction = np.zeros((1, 1, 9), bool); prediction[0, 0, [1, 2, 3, 5]] = True
    >>> scores = lesion_scores(prediction, truth)
    >>> scores["tp"], scores["fp"], scores["fn"], scores["rq"], scores["sq"], scores["sq_dice"]
    (1, 1, 1, 0.5, 0.75, 0.8571428571428571)
    """
    pred, true = _binary_pair(prediction, truth, threshold)
    spacing = _check_spacing(spacing, pred.ndim)
    (pred_labels, n_pred), (true_labels, n_true) = _components(pred), _components(true)
    overlap = _overlaps(pred_labels, n_pred, true_labels, n_true)
    pairs = _match_components(overlap, match_threshold)
    tp = len(pairs)
    counts = {"true_lesions": n_true, "predicted_lesions": n_pred, "tp": tp, "fp": n_pred - tp, "fn": n_true - tp}
    if tp == 0:
        worst, worst_mm = (math.nan, math.nan) if n_true + n_pred == 0 else (0.0, math.inf)
        return {**counts, "rq": worst, "sq": worst, "pq": worst, "sq_dice": worst, "sq_hd95": worst_mm}
    rq = tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_true - tp))
    iou, dice, hd95 = _matched_quality(overlap, pairs, pred_labels, true_labels, spacing)
    return {**counts, "rq": rq, "sq": iou, "pq": iou * rq, "sq_dice": dice, "sq_hd95": hd95}


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    if iterations == 0:
        return mask  # scipy reads 0 iterations as "until nothing changes"
    # The BraTS 2023 code dilates with the 18-neighbourhood (generate_binary_structure(3, 2)).
    structure = ndimage.generate_binary_structure(mask.ndim, min(2, mask.ndim))
    return ndimage.binary_dilation(mask, structure=structure, iterations=iterations)


def _merged_lesions(truth: np.ndarray, dilation: int) -> np.ndarray:
    """Reference lesions labelled 1..n: components whose dilations by ``dilation`` voxels touch are one lesion."""
    # Each reference voxel takes the label of the component of the dilated reference that holds it.
    labels, _ = _components(_dilate(truth, dilation))
    return np.where(truth, labels, 0)


def _nearby_components(
    lesions: np.ndarray, lesion: int, box: tuple[slice, ...], pred_labels: np.ndarray, dilation: int
) -> np.ndarray:
    """Labels of the predicted components that touch a reference lesion dilated by ``dilation`` voxels."""
    window = _bounding_box([box], lesions.shape, dilation)
    near = np.unique(pred_labels[window][_dilate(lesions[window] == lesion, dilation)])
    return near[near > 0]


def _lesion_match(
    lesions: np.ndarray, lesion: int, pred_labels: np.ndarray, near: np.ndarray,
    boxes: list[tuple[slice, ...]], spacing: tuple[float, ...],
) -> tuple[float, float]:
    """Dice and HD95 of one reference lesion against the union of the predicted components near it."""
    if near.size == 0:
        return 0.0, LESION_HD95_PENALTY_MM
    box = _bounding_box(boxes, lesions.shape, 1)
    found, lesion_mask = np.isin(pred_labels[box], near), lesions[box] == lesion
    return dice_coefficient(found, lesion_mask), hausdorff95(found, lesion_mask, spacing=spacing)


def lesion_wise(
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: float | Sequence[float] = BRATS.spacing_mm,
    threshold: float = 0.5,
    dilation: int = 3,
    min_volume_mm3: float = 50.0,
) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice and HD95 of one region.

    Reference components whose dilations touch are one lesion (along an axis,
    components up to ``2 * dilation`` voxels apart): the reference is dilated
    ``dilation`` times (with the 18-neighbourhood, as the official code), and
    each reference voxel belongs to the lesion of the dilated component that
    holds it. A lesion is scored against the union of the predicted
    components (26-connectivity) that touch it once dilated the same way:
    Dice and HD95 (mm, :func:`hausdorff95`), or Dice 0 and
    ``LESION_HD95_PENALTY_MM`` (374) when none does. Lesions of at most
    ``min_volume_mm3`` are not scored, and the predicted components near them
    count neither as hits nor as false positives. Every predicted component
    near no lesion is a false positive, scored Dice 0 and HD95 374.
    Lesion-wise Dice and HD95 are the sums of the scores divided by the
    number of scored lesions plus false positives; with neither, Dice is 1
    and HD95 0.

    This follows the BraTS 2023 code (github.com/rachitsaluja/BraTS-2023-Metrics,
    ``BraTS-GLI``: dilation 3, 50 mm³), which is not on PyPI: it is tested
    against that definition on hand-computed cases, not against the code.
    The code measures HD95 with DeepMind's ``surface_distance`` (weighted by
    surface area), which can differ slightly from :func:`hausdorff95`.

    Parameters
    ----------
    prediction, truth : ndarray
        Masks of equal shape, e.g. ``(x, y, z)`` (see the module docstring for binarisation).
    spacing : float or sequence of float, optional
        Voxel size in mm per axis, for HD95 and the lesion volumes.
    threshold : float, optional
        Binarisation threshold for a numeric ``prediction``.
    dilation : int, optional
        Dilation in voxels that merges reference components and finds the predicted components near a lesion.
    min_volume_mm3 : float, optional
        Reference lesions of this volume or less are not scored.

    Returns
    -------
    dict of str to float
        ``"lesion_dice"``, ``"lesion_hd95"`` (mm), ``"true_lesions"`` (scored
        reference lesions), ``"false_positives"`` and ``"missed"`` (scored
        lesions that no predicted component touches).

    Raises
    ------
    ValueError
        If the shapes differ, ``spacing`` is invalid, ``dilation`` is not a
        non-negative integer or ``min_volume_mm3`` is negative.

    Examples
    --------
    Two reference components two voxels apart are one lesion of 8 voxels,
    found with Dice 12/14; the predicted voxel at 30 is a false positive, so
    lesion-wise Dice is (12/14 + 0) / 2:

    >>> truth = np.zeros((1, 1, 40), bool); truth[0, 0, 2:8] = True; truth[0, 0, 10:12] = True
    >>> prediction = np.zeros((1, 1, 40), bool); prediction[0, 0, 2:8] = True; prediction[0, 0, 30] = True
    >>> {key: round(value, 3) for key, value in lesion_wise(prediction, truth, min_volume_mm3=0.0).items()}
    {'lesion_dice': 0.429, 'lesion_hd95': 188.675, 'true_lesions': 1, 'false_positives': 1, 'missed': 0}
    """
    pred, true = _binary_pair(prediction, truth, threshold)
    spacing = _check_spacing(spacing, pred.ndim)
    if isinstance(dilation, bool) or int(dilation) != dilation or dilation < 0 or min_volume_mm3 < 0:
        raise ValueError(f"dilation ({dilation!r}) must be a non-negative integer and min_volume_mm3 "
                         f"({min_volume_mm3!r}) non-negative")
    lesions, (pred_labels, n_pred) = _merged_lesions(true, int(dilation)), _components(pred)
    pred_boxes, voxel_mm3 = ndimage.find_objects(pred_labels), float(np.prod(spacing))
    touched: set[int] = set()
    scores: list[tuple[float, float]] = []
    missed = 0
    for lesion, box in enumerate(ndimage.find_objects(lesions), start=1):
        near = _nearby_components(lesions, lesion, box, pred_labels, int(dilation))
        touched.update(near.tolist())
        if np.count_nonzero(lesions[box] == lesion) * voxel_mm3 > min_volume_mm3:
            missed += near.size == 0
            scores.append(_lesion_match(lesions, lesion, pred_labels, near,
                                        [box, *(pred_boxes[p - 1] for p in near)], spacing))
    false_positives = n_pred - len(touched)
    counts = {"true_lesions": len(scores), "false_positives": false_positives, "missed": missed}
    if not scores and not false_positives:
        return {"lesion_dice": 1.0, "lesion_hd95": 0.0, **counts}
    total = len(scores) + false_positives
    return {"lesion_dice": sum(d for d, _ in scores) / total,
            "lesion_hd95": (sum(h for _, h in scores) + false_positives * LESION_HD95_PENALTY_MM) / total, **counts}


_LESION_COLUMNS = ("rq", "sq", "pq", "sq_dice", "sq_hd95", "tp", "fp", "fn", "lesion_dice", "lesion_hd95")


def lesion_table(
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    *,
    case_ids: Sequence[str],
    spacing: float | Sequence[float] = BRATS.spacing_mm,
    regions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-case lesion scores (:func:`lesion_scores`, :func:`lesion_wise`) for each BraTS region.

    Parameters
    ----------
    predictions, truths, case_ids, spacing, regions
        As in :func:`case_table` (``spacing`` also measures the lesion volumes).

    Returns
    -------
    pandas.DataFrame
        Index ``case_id``; columns ``"<score>_<region>"`` for the scores
        rq, sq, pq, sq_dice, sq_hd95, tp, fp, fn, lesion_dice and
        lesion_hd95, such as ``"rq_WT"`` or ``"lesion_dice_ET"``. No summary
        rows: the empty cases give NaN and infinity, which a mean would hide
        or spread.

    Raises
    ------
    ValueError
        If the three sequences differ in length or a region is unknown.

    Examples
    --------
    >>> truth = np.zeros((12, 12, 12), np.uint8); truth[1:6, 1:6, 1:6] = 2
    >>> table = lesion_table([truth], [truth], case_ids=["a"], regions=["WT"])
    >>> table.loc["a", ["rq_WT", "sq_WT", "lesion_dice_WT", "lesion_hd95_WT"]].tolist()
    [1.0, 1.0, 1.0, 0.0]
    """
    regions = _table_regions(predictions, truths, case_ids, regions)
    rows = [_lesion_row(p, t, regions, spacing) for p, t in zip(predictions, truths)]
    return pd.DataFrame(rows, index=pd.Index(list(case_ids), name="case_id"),
                        columns=[f"{key}_{r}" for key in _LESION_COLUMNS for r in regions])


def _lesion_row(
    prediction: np.ndarray, truth: np.ndarray, regions: list[str], spacing: Any
) -> dict[str, float]:
    predicted, true = region_masks(prediction), region_masks(truth)
    scores = {r: {**lesion_scores(predicted[r], true[r], spacing=spacing),
                  **lesion_wise(predicted[r], true[r], spacing=spacing)} for r in regions}
    return {f"{key}_{r}": scores[r][key] for key in _LESION_COLUMNS for r in regions}
