"""The FLAIR-threshold baseline: how far does one global intensity cut get?

Whole tumour (edema plus core) is bright on FLAIR, so the simplest possible
segmenter is "every brain voxel whose z-scored FLAIR exceeds t". This module
chooses the single ``t`` that maximises the mean whole-tumour Dice over
training cases and scores it on held-out cases. On real BraTS such a threshold
reaches roughly Dice 0.6-0.7; a network has to beat it to be worth its cost.

Volumes are ``(x, y, z)`` arrays; FLAIR is expected z-scored inside the brain
(as in the prepared cache, see :func:`tutorial_lib.ingest.zscore_in_brain`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tutorial_lib.data import load_brain, load_case, load_split, resolve_case_ids
from tutorial_lib.metrics import dice_coefficient

__all__ = [
    "DEFAULT_THRESHOLDS",
    "threshold_dice_table",
    "fit_flair_threshold",
    "flair_threshold_dice",
    "leave_one_out_dice",
    "threshold_baseline_from_cache",
]

# Candidate cuts in z-score units; tumour FLAIR lies well inside this range.
DEFAULT_THRESHOLDS = np.round(np.arange(-1.0, 6.0001, 0.02), 4)


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"{name} must be a boolean mask, got dtype {mask.dtype}")
    return mask


def _check_case(flair: np.ndarray, mask: np.ndarray, brain: np.ndarray, index: int) -> None:
    if not (np.shape(flair) == np.shape(mask) == np.shape(brain)):
        raise ValueError(
            f"case {index}: flair {np.shape(flair)}, mask {np.shape(mask)} and brain "
            f"{np.shape(brain)} must have the same shape"
        )
    _as_mask(mask, f"case {index} mask")
    _as_mask(brain, f"case {index} brain")


def threshold_dice_table(
    flairs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    brains: Sequence[np.ndarray],
    *,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """Whole-tumour Dice of every candidate threshold on every case.

    One cumulative histogram per case gives all thresholds at once, so a
    leave-one-out evaluation costs no more than a single fit.

    Parameters
    ----------
    flairs, masks, brains : sequences of numpy.ndarray
        Per case: z-scored FLAIR, boolean whole-tumour mask and boolean brain
        mask, all of one shape ``(x, y, z)`` (shapes may differ between cases).
    thresholds : numpy.ndarray, optional
        Increasing candidate cuts.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_cases, n_thresholds)``; prediction = ``flair > t`` inside the brain.

    Raises
    ------
    ValueError
        If no case is given, the sequences differ in length, a case's arrays
        differ in shape or a mask is not boolean.
    """
    if not (len(flairs) == len(masks) == len(brains)) or len(flairs) == 0:
        raise ValueError(
            f"need the same, non-zero number of flairs, masks and brains; got "
            f"{len(flairs)}, {len(masks)}, {len(brains)}"
        )
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be a non-empty, strictly increasing 1-D array")
    table = np.empty((len(flairs), thresholds.size))
    for index, (flair, mask, brain) in enumerate(zip(flairs, masks, brains)):
        _check_case(flair, mask, brain, index)
        values = np.asarray(flair)[brain].astype(np.float64)
        inside_tumour = np.asarray(mask)[brain]
        # Count of voxels strictly above each threshold, in and out of the tumour.
        predicted = values.size - np.searchsorted(np.sort(values), thresholds, side="right")
        hits = inside_tumour.sum() - np.searchsorted(
            np.sort(values[inside_tumour]), thresholds, side="right"
        )
        total = predicted + int(np.asarray(mask).sum())
        table[index] = np.where(total > 0, 2.0 * hits / np.maximum(total, 1), 1.0)
    return table


def fit_flair_threshold(
    flairs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    brains: Sequence[np.ndarray],
    *,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> float:
    """Best single global threshold on z-scored FLAIR for whole tumour.

    Parameters
    ----------
    flairs, masks, brains : sequences of numpy.ndarray
        Training cases, see :func:`threshold_dice_table`.
    thresholds : numpy.ndarray, optional
        Candidate cuts.

    Returns
    -------
    float
        The candidate with the highest mean Dice over the cases (the lowest
        such candidate on ties).

    Raises
    ------
    ValueError
        See :func:`threshold_dice_table`.

    Examples
    --------
    >>> flair = np.array([0.0, 1.0, 2.0, 3.0])  # shape: (4,)
    >>> fit_flair_threshold([flair], [flair > 1.5], [flair > -1], thresholds=np.array([0.5, 1.5, 2.5]))
    1.5
    """
    return _best_threshold(threshold_dice_table(flairs, masks, brains, thresholds=thresholds), thresholds)


def _best_threshold(table: np.ndarray, thresholds: np.ndarray) -> float:
    """The candidate with the highest mean Dice over the table's cases (the lowest on ties)."""
    return float(np.asarray(thresholds)[int(np.argmax(np.asarray(table).mean(axis=0)))])


def flair_threshold_dice(
    flair: np.ndarray, mask: np.ndarray, brain: np.ndarray, threshold: float
) -> float:
    """Whole-tumour Dice of ``flair > threshold`` (inside ``brain``) on one case.

    Parameters
    ----------
    flair : numpy.ndarray
        Z-scored FLAIR, shape ``(x, y, z)``.
    mask, brain : numpy.ndarray
        Boolean whole-tumour and brain masks of the same shape.
    threshold : float
        The cut.

    Returns
    -------
    float
        Dice in [0, 1] (1.0 when both prediction and truth are empty).

    Raises
    ------
    ValueError
        If shapes differ or a mask is not boolean.
    """
    _check_case(flair, mask, brain, 0)
    prediction = (np.asarray(flair) > threshold) & brain
    return dice_coefficient(prediction, np.asarray(mask))


def leave_one_out_dice(
    flairs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    brains: Sequence[np.ndarray],
    *,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of each case under the threshold fitted on all the other cases.

    Returns
    -------
    tuple of numpy.ndarray
        ``(dice, chosen_thresholds)``, one entry per case.

    Raises
    ------
    ValueError
        If fewer than two cases are given (nothing to fit on), or see
        :func:`threshold_dice_table`.
    """
    if len(flairs) < 2:
        raise ValueError(f"leave-one-out needs at least 2 cases, got {len(flairs)}")
    table = threshold_dice_table(flairs, masks, brains, thresholds=thresholds)
    rest_mean = (table.sum(axis=0, keepdims=True) - table) / (len(table) - 1)
    best = np.argmax(rest_mean, axis=1)
    return table[np.arange(len(table)), best], np.asarray(thresholds)[best]


def _load_cached(cache_dir: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FLAIR ``(x, y, z)`` float32, whole-tumour mask and brain mask of one cached case."""
    flair, whole = load_case(cache_dir, case_id, modalities="flair", target="wt")
    if whole is None:
        raise ValueError(f"{cache_dir / 'cases' / case_id}: case has no label; the baseline needs labelled cases")
    return flair[..., 0], whole[..., 0] > 0.5, np.asarray(load_brain(cache_dir, case_id), dtype=bool)


def threshold_baseline_from_cache(
    cache_dir: str | os.PathLike,
    *,
    train_ids: Iterable[str] | None = None,
    test_ids: Iterable[str] | None = None,
) -> dict:
    """Fit the FLAIR threshold on training cases of a prepared cache, score the test cases.

    Parameters
    ----------
    cache_dir : path
        A cache written by ``tutorial_lib.ingest`` (``manifest.json``,
        ``split.json``, ``cases/<id>/{image,label,brain}.npy``).
    train_ids, test_ids : iterables of str, optional
        Cases to fit on / evaluate; default the split's ``train`` + ``val``
        and ``test`` lists.

    Returns
    -------
    dict
        ``threshold`` (float), ``per_case`` ({case id: Dice}), ``mean_dice``
        (float, over the test cases), ``train_ids`` and ``test_ids`` (lists).

    Raises
    ------
    FileNotFoundError
        If the cache has no ``split.json`` or ``manifest.json`` (the message names the file).
    ValueError
        If a case list is empty, names a case the cache does not hold, or a case has no label.

    Examples
    --------
    >>> threshold_baseline_from_cache("data/cache_ci")["mean_dice"]  # doctest: +SKIP
    0.58
    """
    cache_dir = Path(cache_dir)
    split = load_split(cache_dir) if train_ids is None or test_ids is None else {}
    train_ids = list(train_ids) if train_ids is not None else split["train"] + split["val"]
    test_ids = list(test_ids) if test_ids is not None else split["test"]
    if not train_ids or not test_ids:
        raise ValueError(f"{cache_dir}: need training and test cases, got {len(train_ids)} and {len(test_ids)}")
    train_ids, test_ids = resolve_case_ids(cache_dir, train_ids), resolve_case_ids(cache_dir, test_ids)
    # One case in memory at a time: 240 full-size training cases would hold about 8 GB at once.
    table = [threshold_dice_table(*([array] for array in _load_cached(cache_dir, case_id)))[0]
             for case_id in train_ids]
    threshold = _best_threshold(table, DEFAULT_THRESHOLDS)
    per_case = {
        case_id: flair_threshold_dice(*_load_cached(cache_dir, case_id), threshold)
        for case_id in test_ids
    }
    return {
        "threshold": threshold,
        "per_case": per_case,
        "mean_dice": float(np.mean(list(per_case.values()))),
        "train_ids": train_ids,
        "test_ids": test_ids,
    }
