"""Verdicts on the study's claims: effects with intervals over seeds and cases, and a written rule.

A chapter measures an effect (a difference of Dice scores, ``variant - reference``,
so "the variant is better" is ``effect > 0``, or a single score) with an interval,
writes down what the study claimed as a :class:`Claim`, and :func:`verdict` turns the
two into exactly one of ``REPRODUCED``, ``CONTRADICTED`` or ``INCONCLUSIVE``
("inconclusive at this scale"). :func:`describe` writes the effect for the book's prose.

Where the intervals come from:

- :func:`seed_case_difference_interval`: the course's rule for every comparison. Each
  setting is trained with a few seeds and every run is scored on the same test cases;
  a t-interval treats the seed and the case as random (see its docstring for why not a
  bootstrap), and :func:`a_a_test` checks on one configuration's runs that it keeps
  its 5 % promise. :func:`difference_spread` says where its width comes from, and
  :func:`seeds_to_decide` / :func:`seeds_needed` what it would take to decide a claim;
- :func:`mean_interval`: a t-interval of a quantity measured once per run (a time ratio);
- :func:`bootstrap_interval` and :func:`paired_difference_interval`: descriptions over the
  test cases of *one* set of predictions; they cannot see the seed's spread, so no
  verdict rests on them (chapter 05's A/A test shows how often they would err).

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

NumPy, and SciPy's special functions for the t-quantiles; no deep-learning backend.
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
    "Spread",
    "difference_spread",
    "seeds_to_decide",
    "seeds_needed",
    "PLANNED_EFFECT",
    "mean_interval",
    "AATest",
    "a_a_test",
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
    paired: bool = False,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Difference of mean scores of two models, each trained with several seeds, with a t-interval.

    ``variant_scores[s, c]`` is the score (e.g. test Dice) of the variant's run
    with seed ``s`` on test case ``c``; the reference is scored on the same
    cases, in the same order. The seed is the unit of replication, and each
    run is scored on cases that are themselves a sample; so the model behind
    the interval has a random seed effect per model, a random case effect per
    model (how much the *difference* between the models changes from case to
    case) and noise (see :func:`difference_spread`). Its variance is estimated
    from mean squares, and the interval is Student's t with Satterthwaite's
    degrees of freedom: with 3 seeds per model it is wide, as it should be.

    Why not a bootstrap? Resampling 3 seeds can never leave the range of those
    3 runs, so a percentile bootstrap of seeds is too narrow: in an A/A test
    (one configuration, seeds split into two arms) the course's earlier
    bootstrap called a false verdict in 11-22 % of splits at the nominal 5 %
    (issue 30). The t-distribution pays for estimating the spread from few
    seeds. ``tests/test_verdicts.py`` checks the false-verdict rate on
    simulated (seed, case) tables with stalled seeds, and chapter 05 on real runs.

    Parameters
    ----------
    variant_scores, reference_scores : array_like
        Shape ``(seeds, cases)``, at least 2 seeds each; the seed counts may
        differ unless ``paired``, the case counts may not.
    paired : bool, optional
        ``True`` when row ``s`` of both arrays comes from the *same* network
        (one network scored two ways: after two post-processings, or on the
        same patients at two sites). The per-run differences are then the
        replicates, which removes the seed spread both rows share.
    confidence : float, optional
        Coverage of the interval, strictly between 0 and 1.

    Returns
    -------
    tuple of float
        ``(mean(variant_scores) - mean(reference_scores), low, high)``.

    Raises
    ------
    ValueError
        For arrays that are not 2-D, hold fewer than 2 seeds, differ in their
        number of cases (or of seeds when ``paired``), or hold non-finite values,
        or for a confidence outside (0, 1).

    Examples
    --------
    Three seeds per model, four cases; the variant is ahead by 0.1 on average:

    >>> variant = [[0.8, 0.7, 0.6, 0.9], [0.7, 0.6, 0.6, 0.8], [0.8, 0.8, 0.7, 0.9]]
    >>> reference = [[0.7, 0.6, 0.5, 0.8], [0.6, 0.5, 0.5, 0.7], [0.7, 0.7, 0.6, 0.8]]
    >>> estimate, low, high = seed_case_difference_interval(variant, reference)
    >>> round(estimate, 3), low < 0 < high  # the seeds move each model by as much
    (0.1, True)
    >>> estimate, low, high = seed_case_difference_interval(variant, reference, paired=True)
    >>> round(low, 3), round(high, 3)  # the same networks scored two ways: a sure +0.1
    (0.1, 0.1)
    """
    spread = difference_spread(variant_scores, reference_scores, paired=paired)
    _check_options(confidence, 100)
    half_width = _t_quantile(0.5 + confidence / 2, spread.degrees_of_freedom) * spread.standard_error
    return spread.estimate, spread.estimate - half_width, spread.estimate + half_width


@dataclass(frozen=True)
class Spread:
    """Where the uncertainty of a seed x case difference comes from (:func:`difference_spread`).

    Attributes
    ----------
    estimate : float
        ``mean(variant) - mean(reference)``.
    seed_variances : tuple of float
        Per model (one entry when paired: the differences), the variance of one
        run's mean score over the test cases: the seed-to-seed spread.
    seeds : tuple of int
        Seeds per model, in the same order.
    case_variance : float
        Variance over cases of how much the difference changes from case to
        case beyond the run-to-run noise (0 when the noise explains it all).
    cases : int
        Test cases.
    standard_error, degrees_of_freedom : float
        Of the estimate: ``sqrt(sum(seed_variances / seeds) + case_variance / cases)``,
        and Satterthwaite's approximation to its degrees of freedom.
    """

    estimate: float
    seed_variances: tuple[float, ...]
    seeds: tuple[int, ...]
    case_variance: float
    cases: int
    standard_error: float
    degrees_of_freedom: float


def _two_way(scores: np.ndarray) -> tuple[float, float, int]:
    """Mean squares of a (seeds, cases) table without replication: seeds, residual, residual df."""
    seeds, cases = scores.shape
    run_means, case_means = scores.mean(axis=1), scores.mean(axis=0)
    seed_square = cases * float(np.var(run_means, ddof=1))
    residual_df = (seeds - 1) * (cases - 1)
    if residual_df == 0:
        return seed_square, 0.0, 0
    residual = scores - run_means[:, None] - case_means[None, :] + scores.mean()
    return seed_square, float((residual**2).sum() / residual_df), residual_df


def difference_spread(
    variant_scores: npt.ArrayLike, reference_scores: npt.ArrayLike, *, paired: bool = False
) -> Spread:
    """The variance components behind :func:`seed_case_difference_interval`.

    Model: ``score[s, c] = mean + case[c] + seed[s] + noise[s, c]`` for each
    model (for the differences when ``paired``), seeds and cases both random.
    From the two-way mean squares, one run's mean over the ``C`` cases varies
    by ``MS_seed / C`` from seed to seed, and the per-case difference of the
    models' seed-averaged scores varies by ``case_variance + sum(MS_noise / S)``,
    so ``case_variance`` is that variance minus the noise (at least 0). Then
    ``Var(estimate) = sum(MS_seed / (S C)) + case_variance / C``.

    Parameters
    ----------
    variant_scores, reference_scores, paired
        As in :func:`seed_case_difference_interval`.

    Returns
    -------
    Spread

    Examples
    --------
    Run means 0.7 and 0.5 against 0.6 and 0.6; the second case is 0.2 easier for both models:

    >>> spread = difference_spread([[0.6, 0.8], [0.4, 0.6]], [[0.5, 0.7], [0.5, 0.7]])
    >>> [round(value, 3) for value in spread.seed_variances], spread.case_variance
    ([0.02, 0.0], 0.0)
    """
    variant, reference = (np.asarray(scores, dtype=float) for scores in (variant_scores, reference_scores))
    for what, scores in (("variant_scores", variant), ("reference_scores", reference)):
        if scores.ndim != 2 or scores.size == 0 or not np.isfinite(scores).all():
            raise ValueError(f"{what} must be a non-empty, finite (seeds, cases) array, got shape {scores.shape}")
        if scores.shape[0] < 2:
            raise ValueError(f"{what} holds {scores.shape[0]} seed; the seed-to-seed spread needs at least 2 "
                             "runs per model (with one network each, paired_difference_interval covers "
                             "the cases only)")
    if variant.shape[1] != reference.shape[1]:
        raise ValueError(f"the models are scored on {variant.shape[1]} and {reference.shape[1]} cases; "
                         "score both on the same cases")
    if paired and variant.shape != reference.shape:
        raise ValueError(f"paired scores need the same runs on both sides, got {variant.shape[0]} and "
                         f"{reference.shape[0]} seeds")
    tables = [variant - reference] if paired else [variant, reference]
    cases = variant.shape[1]
    squares = [_two_way(table) for table in tables]
    seeds = tuple(table.shape[0] for table in tables)
    case_differences = variant.mean(axis=0) - reference.mean(axis=0)
    # terms of Var(estimate) as (value, degrees of freedom), for Satterthwaite
    terms = [(seed_square / (n * cases), n - 1) for (seed_square, _, _), n in zip(squares, seeds)]
    case_variance = 0.0
    if cases > 1:
        noise = [(residual / n, df) for (_, residual, df), n in zip(squares, seeds)]
        case_variance = max(0.0, float(np.var(case_differences, ddof=1)) - sum(value for value, _ in noise))
        if case_variance > 0:
            terms.append((float(np.var(case_differences, ddof=1)) / cases, cases - 1))
            terms += [(-value / cases, df) for value, df in noise]
    variance = sum(value for (value, _) in terms)
    denominator = sum(value**2 / df for value, df in terms if df > 0)
    degrees = variance**2 / denominator if denominator > 0 else float(sum(n - 1 for n in seeds))
    return Spread(estimate=float(variant.mean() - reference.mean()),
                  seed_variances=tuple(seed_square / cases for seed_square, _, _ in squares), seeds=seeds,
                  case_variance=case_variance, cases=cases, standard_error=math.sqrt(max(variance, 0.0)),
                  degrees_of_freedom=max(1.0, degrees))


def seeds_to_decide(
    spread: Spread, claim: Claim, *, effect: float | None = None, power: float = 0.8,
    confidence: float = 0.95, most: int = 1000,
) -> int | None:
    """Seeds per model that would decide ``claim`` if the true effect were ``effect``, at this spread.

    "Decide" means: with probability ``power`` the interval of
    :func:`seed_case_difference_interval` lies wholly on the claim's side (for
    ``"similar"``, wholly inside the margin), with the same test cases and the
    seed and case spreads measured in ``spread``. The usual approximation
    ``(t(1 - alpha/2) + t(power)) * SE(n) <= distance`` is solved for the
    smallest ``n``, with ``distance`` the effect's distance from 0 (from the
    margin for ``"similar"``).

    Parameters
    ----------
    spread : Spread
        From :func:`difference_spread`.
    claim : Claim
        What is to be decided.
    effect : float, optional
        The true effect to plan for; default the claim's ``study_effect``.
    power : float, optional
        Chance of a decisive interval, strictly between 0 and 1.
    confidence : float, optional
        Coverage of the interval.
    most : int, optional
        Give up above this many seeds.

    Returns
    -------
    int or None
        Seeds per model (per network when paired), at least 2; ``None`` when no
        number up to ``most`` is enough: then the case-to-case spread alone is too
        wide (more test cases, not seeds), or the effect is too close to 0 (or to
        the margin).

    Raises
    ------
    ValueError
        Without an effect to plan for, or for bad options.

    Examples
    --------
    Run means 0.62 and 0.58 against 0.57 and 0.53 (seed standard deviation 0.028 in both):
    for +0.05, seven seeds give SE 0.015 and t-quantiles 2.18 + 0.87 at 12 degrees of freedom.

    >>> spread = difference_spread([[0.62, 0.62], [0.58, 0.58]], [[0.57, 0.57], [0.53, 0.53]])
    >>> seeds_to_decide(spread, Claim("x beats y", "greater", study_effect=0.05))
    7
    >>> seeds_to_decide(spread, Claim("x beats y", "greater"), effect=0.02)
    33
    """
    effect = claim.study_effect if effect is None else effect
    if not _is_real(effect):
        raise ValueError(f"claim {claim.name!r} has no study_effect; pass effect= (e.g. the measured one)")
    _check_options(confidence, 100)
    if not _is_real(power) or not 0 < power < 1:
        raise ValueError(f"power must lie strictly between 0 and 1 (e.g. 0.8), got {power!r}")
    distance = claim.margin - abs(effect) if claim.direction == "similar" else abs(effect)
    case_part = spread.case_variance / spread.cases
    for seeds in range(2, most + 1):
        terms = [(variance / seeds, seeds - 1) for variance in spread.seed_variances]
        terms += [(case_part, spread.cases - 1)] if case_part > 0 else []
        variance = sum(value for value, _ in terms)
        if variance == 0:
            return seeds if distance > 0 else None
        degrees = variance**2 / sum(value**2 / df for value, df in terms)
        needed = _t_quantile(0.5 + confidence / 2, degrees) + _t_quantile(power, degrees)
        if needed * math.sqrt(variance) < distance:
            return seeds
    return None


# The gap planned for where the study gives no size: the middle of its own effects (0.005 to 0.10 Dice).
PLANNED_EFFECT = 0.05


def seeds_needed(
    parts: Iterable[tuple[Spread, Claim]], *, verdict: str | None = None, seeds: int | None = None,
    power: float = 0.8,
) -> str:
    """What it would take to decide a claim, as a phrase for a table: the most seeds any of its parts needs.

    Each part is planned for the study's size of the effect (``claim.study_effect``),
    or for :data:`PLANNED_EFFECT` where the study gives none. Given the claim's
    ``verdict`` and the ``seeds`` per arm it was judged with, a decided claim
    says so, and a claim left inconclusive with at least the seeds an effect of
    the study's size needs says that its effect is smaller than the study's.

    Parameters
    ----------
    parts : iterable of (Spread, Claim)
        Each part of a claim with the spread measured for it (:func:`difference_spread`).
    verdict : str, optional
        The claim's verdict (one of :data:`VERDICTS`); needs ``seeds``.
    seeds : int, optional
        Seeds per arm behind the verdict.
    power : float, optional
        As in :func:`seeds_to_decide`.

    Returns
    -------
    str
        ``"about N seeds per arm"``; or, where no number of seeds is enough, why:
        the case-to-case spread alone is too wide (more test cases), or the effect
        sits on the claim's margin.

    Raises
    ------
    ValueError
        Without parts, or for a ``verdict`` without ``seeds`` or not one of :data:`VERDICTS`.

    Examples
    --------
    >>> spread = difference_spread([[0.62, 0.62], [0.58, 0.58]], [[0.57, 0.57], [0.53, 0.53]])
    >>> seeds_needed([(spread, Claim("x beats y", "greater"))])  # planned for +0.05
    'about 7 seeds per arm'
    >>> seeds_needed([(spread, Claim("x beats y", "greater", study_effect=0.3))], verdict=INCONCLUSIVE, seeds=3)
    "about 2 seeds per arm would show the study's effect; this one is smaller"
    >>> seeds_needed([(spread, Claim("x beats y", "greater"))], verdict=REPRODUCED, seeds=3)
    'decided with 3 seeds per arm'
    """
    parts = list(parts)
    if not parts:
        raise ValueError("seeds_needed() needs at least one (spread, claim) part")
    if verdict is not None and (verdict not in VERDICTS or seeds is None):
        raise ValueError(f"verdict must be one of {VERDICTS} and come with seeds; got {verdict!r}, seeds={seeds!r}")
    if verdict in (REPRODUCED, CONTRADICTED):
        return f"decided with {seeds} seeds per arm"
    counts = []
    for spread, claim in parts:
        effect = PLANNED_EFFECT if claim.study_effect is None else claim.study_effect
        count = seeds_to_decide(spread, claim, effect=effect, power=power)
        if count is None:
            distance = claim.margin - abs(effect) if claim.direction == "similar" else abs(effect)
            if distance <= 0:
                return f"no number of seeds: the study's {effect:+g} lies on the claim's margin"
            return "more test cases: the case-to-case spread alone is too wide for any number of seeds"
        counts.append(count)
    if verdict is not None and max(counts) <= seeds:
        planned = ("the study's effect" if all(claim.study_effect is not None for _, claim in parts)
                   else f"an effect of {PLANNED_EFFECT:+g}")   # a claim of the course has no study to size it
        return f"about {max(counts)} seeds per arm would show {planned}; this one is smaller"
    return f"about {max(counts)} seeds per arm"


def mean_interval(values: npt.ArrayLike, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of a few independent replicates (one number per seed) with Student's t-interval.

    For a quantity measured once per run, e.g. a per-seed ratio of training
    times; a bootstrap of three runs could not leave their range.

    Parameters
    ----------
    values : array_like
        One number per run, 1-D, at least 2.
    confidence : float, optional
        Coverage of the interval.

    Returns
    -------
    tuple of float
        ``(mean, low, high)``.

    Raises
    ------
    ValueError
        For fewer than 2 or non-finite values, or a confidence outside (0, 1).

    Examples
    --------
    >>> [round(value, 3) for value in mean_interval([1.0, 2.0, 3.0])]  # 2 +- t(0.975, 2) * 1 / sqrt(3)
    [2.0, -0.484, 4.484]
    """
    array = _finite_1d(values, "values")
    if array.size < 2:
        raise ValueError(f"a t-interval needs at least 2 replicates, got {array.size}")
    _check_options(confidence, 100)
    estimate = float(array.mean())
    half_width = _t_quantile(0.5 + confidence / 2, array.size - 1) * float(array.std(ddof=1)) / math.sqrt(array.size)
    return estimate, estimate - half_width, estimate + half_width


@dataclass(frozen=True)
class AATest:
    """Result of :func:`a_a_test`: how often one configuration was judged different from itself.

    Attributes
    ----------
    seeds_per_arm, splits : int
        Runs in each arm, and random splits tried.
    false_verdicts : float
        Share of splits whose interval excluded 0 (a false "reproduced" or
        "contradicted" of a ``"greater"`` claim); the nominal rate is ``1 - confidence``.
    median_width : float
        Median width of the intervals.
    """

    seeds_per_arm: int
    splits: int
    false_verdicts: float
    median_width: float


def a_a_test(
    runs: npt.ArrayLike, *, seeds_per_arm: int, splits: int = 400, seed: int = 0, confidence: float = 0.95,
    interval: Callable[..., tuple[float, float, float]] = seed_case_difference_interval,
) -> AATest:
    """Split runs of *one* configuration into two arms, again and again, and count false verdicts.

    Both arms are the same configuration, so every interval that excludes 0
    would be a wrong verdict; a method that keeps its promise does so in at most
    ``1 - confidence`` of the splits (within the splits' own sampling error).
    The splits reuse the same runs, so their share is that of *these* runs,
    not of all the runs the configuration could produce.

    Parameters
    ----------
    runs : array_like
        ``(seeds, cases)`` scores of one configuration, at least ``2 * seeds_per_arm`` seeds.
    seeds_per_arm : int
        Runs drawn (without replacement) into each arm; the default ``interval``
        needs at least 2.
    splits : int, optional
        Random splits to try.
    seed : int, optional
        Seed of the splits.
    confidence : float, optional
        Passed to ``interval``.
    interval : callable, optional
        ``interval(variant, reference, confidence=...) -> (estimate, low, high)``.

    Returns
    -------
    AATest

    Raises
    ------
    ValueError
        When there are too few runs for two arms, or for bad options.

    Examples
    --------
    >>> runs = np.random.default_rng(0).normal(0.6, 0.05, size=(12, 8)).clip(0, 1)
    >>> result = a_a_test(runs, seeds_per_arm=3, splits=200)
    >>> result.false_verdicts <= 0.1, round(result.median_width, 1)
    (True, 0.1)
    """
    scores = np.asarray(runs, dtype=float)
    if isinstance(seeds_per_arm, bool) or not isinstance(seeds_per_arm, numbers.Integral) or seeds_per_arm < 1:
        raise ValueError(f"seeds_per_arm must be a positive integer, got {seeds_per_arm!r}")
    if scores.ndim != 2 or scores.shape[0] < 2 * seeds_per_arm:
        raise ValueError(f"two arms of {seeds_per_arm} seeds need a (seeds, cases) array of at least "
                         f"{2 * seeds_per_arm} seeds, got shape {scores.shape}")
    if isinstance(splits, bool) or not isinstance(splits, numbers.Integral) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    rng = np.random.default_rng(seed)
    excluded, widths = 0, []
    for _ in range(splits):
        drawn = rng.permutation(scores.shape[0])[: 2 * seeds_per_arm]
        _, low, high = interval(scores[drawn[:seeds_per_arm]], scores[drawn[seeds_per_arm:]], confidence=confidence)
        excluded += low > 0 or high < 0
        widths.append(high - low)
    return AATest(seeds_per_arm=int(seeds_per_arm), splits=int(splits), false_verdicts=excluded / splits,
                  median_width=float(np.median(widths)))


def _t_quantile(probability: float, degrees_of_freedom: float) -> float:
    from scipy.special import stdtrit  # SciPy's special functions only: a light import

    return float(stdtrit(degrees_of_freedom, probability))


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
