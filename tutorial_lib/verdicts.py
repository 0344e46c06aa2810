"""Verdicts on the study's claims: effects with bootstrap intervals, and a written rule.

A chapter measures an effect (a difference of Dice scores, ``variant - reference``,
so "the variant is better" is ``effect > 0``, or a single score) with an interval,
writes down what the study claimed as a :class:`Claim`, and :func:`verdict` turns the
two into exactly one of ``REPRODUCED``, ``CONTRADICTED`` or ``INCONCLUSIVE``
("inconclusive at this scale"). :func:`describe` writes the effect for the book's prose.

Where the intervals come from:

- :func:`bootstrap_interval`: a statistic of per-case values (e.g. per-case test Dice);
- :func:`paired_difference_interval`: two models scored on the same test cases;
- :func:`seed_case_difference_interval`: a few seeds per model, each run scored per case.

Three directions cover the study's claims. A magnitude such as "≈ +0.10" is kept in
``Claim.study_effect`` and reported, not tested: at course scale (synthetic or
downsampled data, a few epochs) the size of an effect is not expected to carry over,
its sign is, and testing "within m of +0.10" would make the verdict hinge on a margin
we invent. Where the magnitude *is* the claim ("≈ +0.005": no gain worth the time),
the claim is ``"similar"`` with a margin. A claim "X is best of a set" is one
``"greater"`` claim against each alternative, joined by :func:`combine`. Margins are the
chapter's choice (0.02 Dice below is an example):

- (a) 3D beats 2D clearly: ``greater`` on 3D - 2D;
- (b) Dice loss beats cross-entropy and sensitivity-specificity: ``greater`` twice, combined;
- (c) skip concatenation helps only slightly (+0.04): ``greater`` with ``study_effect=0.04``;
  to test "only slightly" too, combine it with ``similar`` (margin 0.05), which together
  mean "positive and smaller than 0.05";
- (d) transposed convolution ≈ +0.10 over up-sampling: ``greater`` with ``study_effect=0.10``;
- (e) doubling filters ≈ +0.005: ``similar`` with ``margin=0.02, study_effect=0.005``; its
  "more than 2x the time" is ``greater`` on ``time ratio - 2`` (e.g. over per-epoch times);
- (f) dropout 0.2 best of {0, 0.2, 0.5}: ``greater`` against 0 and against 0.5, combined;
- (g) 3x3x3 kernels beat 5x5x5: ``greater`` on 3x3x3 - 5x5x5;
- (h) smoothing size 16 best: ``greater`` against each other size, combined.

NumPy only; no deep-learning backend, no SciPy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import numpy.typing as npt

__all__ = [
    "REPRODUCED",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "VERDICTS",
    "DIRECTIONS",
    "Claim",
    "bootstrap_interval",
    "paired_difference_interval",
    "seed_case_difference_interval",
    "verdict",
    "combine",
    "describe",
]

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive at this scale"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)
DIRECTIONS = ("greater", "less", "similar")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Claim:
    """What the study claimed about ``effect = variant - reference``.

    Parameters
    ----------
    name : str
        Short label for tables, e.g. ``"3D beats 2D"``.
    direction : {"greater", "less", "similar"}
        The variant is better (effect > 0), worse (effect < 0), or about the same
        (|effect| within ``margin``).
    study_effect : float or None, optional
        The study's own number, reported beside ours but never used by :func:`verdict`.
    margin : float, optional
        Half-width of "about the same"; required (> 0) for ``"similar"``, and must stay
        0 for ``"greater"`` and ``"less"``, which are always judged against 0.

    Raises
    ------
    ValueError
        For an empty name, an unknown direction, or a margin that does not fit the direction.

    Examples
    --------
    >>> Claim("doubling filters", "similar", study_effect=0.005, margin=0.02).direction
    'similar'
    """

    name: str
    direction: str
    study_effect: float | None = field(default=None, kw_only=True)
    margin: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a Claim needs a non-empty name such as '3D beats 2D', got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not _is_real(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")
        if self.direction == "similar" and self.margin == 0:
            raise ValueError(f"claim {self.name!r}: 'similar' needs a margin > 0 (how close counts as the same)")
        if self.direction != "similar" and self.margin != 0:
            raise ValueError(
                f"claim {self.name!r}: margin applies only to 'similar'; '{self.direction}' is judged against 0"
            )
        if self.study_effect is not None and not _is_real(self.study_effect):
            raise ValueError(f"study_effect must be a finite number or None, got {self.study_effect!r}")


def _finite_1d(values: npt.ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{what} has NaN or infinite values at positions {bad.tolist()}; drop or score those first")
    return array


def _check_options(confidence: float, resamples: int) -> None:
    if not _is_real(confidence) or not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100 (2000 is usual), got {resamples!r}")


def _percentile_interval(boot: np.ndarray, estimate: float, confidence: float) -> tuple[float, float, float]:
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    # The percentile interval can miss the estimate by a hair (skewed data, low confidence);
    # widening to include it keeps the contract that verdict() checks.
    return float(estimate), float(min(low, estimate)), float(max(high, estimate))


def bootstrap_interval(
    values: npt.ArrayLike,
    *,
    statistic: Callable[..., Any] = np.mean,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """A statistic of per-case values and its percentile bootstrap interval over cases.

    Cases are resampled with replacement ``resamples`` times; the interval holds the
    central ``confidence`` share of the resampled statistics, widened if needed to
    include the estimate. With one value every resample is that value, so the interval
    collapses to it: a zero-width interval then says nothing about uncertainty.

    Parameters
    ----------
    values : array_like
        One number per case, 1-D, e.g. per-case test Dice.
    statistic : callable, optional
        A NumPy-style reduction accepting ``axis=`` (``np.mean``, ``np.median``).
    confidence : float, optional
        Coverage of the interval, strictly between 0 and 1.
    resamples : int, optional
        Number of bootstrap resamples, at least 100.
    seed : int or None, optional
        Seed of the resampling; the same seed gives the same interval.

    Returns
    -------
    tuple of float
        ``(estimate, low, high)`` with ``low <= estimate <= high``.

    Raises
    ------
    ValueError
        For empty, non-1-D or non-finite values, a confidence outside (0, 1),
        fewer than 100 resamples, or a statistic that does not accept ``axis=``.

    Examples
    --------
    >>> bootstrap_interval([0.75, 0.75, 0.75])
    (0.75, 0.75, 0.75)
    >>> estimate, low, high = bootstrap_interval([0.0, 1.0])
    >>> estimate, low, high
    (0.5, 0.0, 1.0)
    """
    array = _finite_1d(values, "values")
    _check_options(confidence, resamples)
    rng = np.random.default_rng(seed)
    samples = array[rng.integers(0, array.size, size=(resamples, array.size))]
    try:
        estimate, boot = float(statistic(array)), np.asarray(statistic(samples, axis=1), dtype=float)
    except TypeError as error:
        raise ValueError(f"statistic must be a reduction accepting axis= (np.mean, np.median): {error}") from error
    if boot.shape != (resamples,):
        raise ValueError(f"statistic(samples, axis=1) must give one number per resample, got shape {boot.shape}")
    return _percentile_interval(boot, estimate, confidence)


def paired_difference_interval(
    variant: npt.ArrayLike,
    reference: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """Mean per-case difference ``variant - reference`` with a bootstrap interval over cases.

    Both models must be scored on the same cases in the same order; resampling the
    differences keeps each case's pair together, which is what makes the comparison
    sharper than comparing two means.

    Parameters
    ----------
    variant, reference : array_like
        One score per case (e.g. per-case test Dice), 1-D, equal length.
    confidence, resamples, seed
        As in :func:`bootstrap_interval`.

    Returns
    -------
    tuple of float
        ``(mean difference, low, high)``.

    Raises
    ------
    ValueError
        If the lengths differ, or for any reason :func:`bootstrap_interval` gives.

    Examples
    --------
    >>> paired_difference_interval([0.75, 0.5, 0.25], [0.5, 0.25, 0.0])  # every case +0.25
    (0.25, 0.25, 0.25)
    """
    variant_array, reference_array = _finite_1d(variant, "variant"), _finite_1d(reference, "reference")
    if variant_array.shape != reference_array.shape:
        raise ValueError(
            f"variant has {variant_array.size} cases and reference {reference_array.size}; "
            "a paired difference needs the same cases in the same order"
        )
    return bootstrap_interval(variant_array - reference_array, confidence=confidence, resamples=resamples, seed=seed)


def seed_case_difference_interval(
    variant_scores: npt.ArrayLike,
    reference_scores: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """Difference of mean per-case scores of two models trained with several seeds each.

    ``variant_scores[s, c]`` is the score (e.g. test Dice) of the variant's run
    with seed ``s`` on case ``c``; the reference is scored on the same cases, in
    the same order. Each bootstrap sample draws the cases with replacement (the
    same cases for both models, since they share the test set) and, independently
    per model, the seeds with replacement; so the interval holds both the
    case-to-case and the seed-to-seed spread. With one seed per model it is
    :func:`paired_difference_interval` of the two rows.

    Parameters
    ----------
    variant_scores, reference_scores : array_like
        Shape ``(seeds, cases)``; the seed counts may differ, the case counts may not.
    confidence, resamples, seed
        As in :func:`bootstrap_interval`.

    Returns
    -------
    tuple of float
        ``(mean(variant_scores) - mean(reference_scores), low, high)``.

    Raises
    ------
    ValueError
        For arrays that are not 2-D, differ in their number of cases, are empty or
        hold non-finite values, or for bad options.

    Examples
    --------
    >>> estimate, low, high = seed_case_difference_interval([[0.8, 0.6], [0.7, 0.5]], [[0.5, 0.5]])
    >>> round(estimate, 3), low <= estimate <= high
    (0.15, True)
    """
    variant, reference = (np.asarray(scores, dtype=float) for scores in (variant_scores, reference_scores))
    for what, scores in (("variant_scores", variant), ("reference_scores", reference)):
        if scores.ndim != 2 or scores.size == 0 or not np.isfinite(scores).all():
            raise ValueError(f"{what} must be a non-empty, finite (seeds, cases) array, got shape {scores.shape}")
    if variant.shape[1] != reference.shape[1]:
        raise ValueError(f"the models are scored on {variant.shape[1]} and {reference.shape[1]} cases; "
                         "score both on the same cases")
    _check_options(confidence, resamples)
    rng = np.random.default_rng(seed)
    cases = rng.integers(0, variant.shape[1], size=(resamples, variant.shape[1]))

    def resampled_means(scores: np.ndarray) -> np.ndarray:
        per_seed = scores[:, cases].mean(axis=2)  # (seeds, resamples): each seed on each case sample
        runs = rng.integers(0, scores.shape[0], size=(scores.shape[0], resamples))
        return np.take_along_axis(per_seed, runs, axis=0).mean(axis=0)

    boot = resampled_means(variant) - resampled_means(reference)
    return _percentile_interval(boot, variant.mean() - reference.mean(), confidence)


def _checked_interval(effect: float, interval: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = interval
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"interval must be a pair (low, high), got {interval!r}; from estimate, low, high = "
            "paired_difference_interval(...) pass (low, high)"
        ) from error
    if not all(_is_real(value) for value in (effect, low, high)):
        raise ValueError(f"effect and interval must be finite numbers, got {effect!r} and {interval!r}")
    if not low <= effect <= high:
        raise ValueError(f"the effect {effect!r} must lie within its interval ({low!r}, {high!r}), low <= high")
    return float(low), float(high)


def verdict(effect: float, interval: tuple[float, float], claim: Claim) -> str:
    """Judge a study's claim against our effect and its interval, by a fixed rule.

    Rule, with ``(low, high)`` the interval and ``m`` the claim's margin. A bound that
    only touches the boundary (0, or +-m) decides nothing, so such an interval is
    inconclusive; an interval crossing 0 is not evidence against the claim, only too
    little evidence at this scale. ``claim.study_effect`` is never used.

    - ``"greater"``: reproduced if ``low > 0``; contradicted if ``high < 0``; else inconclusive.
    - ``"less"``: reproduced if ``high < 0``; contradicted if ``low > 0``; else inconclusive.
    - ``"similar"``: reproduced if ``-m < low`` and ``high < m`` (the whole interval inside
      the margin, an equivalence check like two one-sided tests); contradicted if
      ``high < -m`` or ``low > m`` (a clear difference bigger than the margin); else inconclusive.

    Parameters
    ----------
    effect : float
        Our estimate of ``variant - reference`` (or a single score).
    interval : tuple of float
        ``(low, high)`` around it, e.g. from :func:`paired_difference_interval`.
    claim : Claim
        What the study claimed.

    Returns
    -------
    str
        ``REPRODUCED``, ``CONTRADICTED`` or ``INCONCLUSIVE``.

    Raises
    ------
    ValueError
        If the numbers are not finite, ``low > high``, the effect lies outside the
        interval, or ``claim`` is not a :class:`Claim`.

    Examples
    --------
    >>> verdict(0.04, (0.01, 0.07), Claim("skip concatenation helps", "greater", study_effect=0.04))
    'reproduced'
    >>> verdict(0.01, (-0.02, 0.04), Claim("3x3x3 beats 5x5x5", "greater"))
    'inconclusive at this scale'
    >>> verdict(0.03, (0.025, 0.035), Claim("doubling filters", "similar", margin=0.02))
    'contradicted'
    """
    low, high = _checked_interval(effect, interval)
    if not isinstance(claim, Claim):
        raise ValueError(f"claim must be a Claim, got {type(claim).__name__}")
    if claim.direction == "similar":
        margin = claim.margin
        inside, outside = -margin < low and high < margin, high < -margin or low > margin
    else:
        # "less" is "greater" seen from the other side: flip the interval.
        low, high = (low, high) if claim.direction == "greater" else (-high, -low)
        inside, outside = low > 0, high < 0
    return REPRODUCED if inside else CONTRADICTED if outside else INCONCLUSIVE


def combine(verdicts: Iterable[str]) -> str:
    """Join the verdicts of pairwise claims (e.g. "best of a set") into one.

    Rule: any contradicted -> contradicted (one alternative clearly does better);
    all reproduced -> reproduced; otherwise inconclusive.

    Parameters
    ----------
    verdicts : iterable of str
        Results of :func:`verdict`, at least one.

    Returns
    -------
    str
        ``REPRODUCED``, ``CONTRADICTED`` or ``INCONCLUSIVE``.

    Raises
    ------
    ValueError
        If there are no verdicts or one is not a verdict constant.

    Examples
    --------
    >>> combine([REPRODUCED, INCONCLUSIVE])
    'inconclusive at this scale'
    """
    verdicts = list(verdicts)
    unknown = [item for item in verdicts if item not in VERDICTS]
    if not verdicts or unknown:
        raise ValueError(f"combine() needs one or more of {VERDICTS}, got {verdicts!r}")
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return REPRODUCED if all(item == REPRODUCED for item in verdicts) else INCONCLUSIVE


def _signed(value: float, digits: int) -> str:
    text = f"{value:+.{digits}f}"
    # -0.0004 rounds to "-0.000"; a sign on a printed zero misleads.
    return text.replace("-", "+") if float(text) == 0 else text


def describe(effect: float, interval: tuple[float, float], *, digits: int = 3, confidence: float = 0.95) -> str:
    """The effect and its interval as a phrase for prose, with explicit signs.

    Parameters
    ----------
    effect : float
        The estimate.
    interval : tuple of float
        ``(low, high)`` around it.
    digits : int, optional
        Decimal places.
    confidence : float, optional
        Coverage of the interval, printed as a percentage.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For the reasons :func:`verdict` gives about the numbers, negative ``digits``,
        or a confidence outside (0, 1).

    Examples
    --------
    >>> describe(0.0421, (0.0104, 0.0712))
    '+0.042 (95 % interval +0.010 to +0.071)'
    >>> describe(-0.2, (-0.31, -0.0004), digits=2, confidence=0.9)
    '-0.20 (90 % interval -0.31 to +0.00)'
    """
    low, high = _checked_interval(effect, interval)
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"digits must be an integer >= 0, got {digits!r}")
    _check_options(confidence, 100)
    percent = f"{confidence * 100:g} %"
    return f"{_signed(effect, digits)} ({percent} interval {_signed(low, digits)} to {_signed(high, digits)})"
