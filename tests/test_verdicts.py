"""Verdict rules on hand-made intervals; bootstrap intervals on tiny and synthetic per-case scores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tutorial_lib import verdicts
from tutorial_lib.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED, Claim

GREATER = Claim("variant beats reference", "greater")
LESS = Claim("variant is worse", "less")
SIMILAR = Claim("about the same", "similar", margin=0.02)
# (d) "≈ +0.10": the study's size is reported, only the sign is judged
MAGNITUDE = Claim("transposed conv over up-sampling", "greater", study_effect=0.10)

VERDICT_CASES = [
    # shape: effect, (low, high), claim -> verdict; decided by which side of 0 / +-m the whole interval lies
    (0.05, (0.01, 0.09), GREATER, REPRODUCED),  # all above 0
    (-0.05, (-0.09, -0.01), GREATER, CONTRADICTED),  # all below 0: a clear opposite effect
    (0.02, (-0.01, 0.05), GREATER, INCONCLUSIVE),  # crosses 0
    (0.03, (0.0, 0.06), GREATER, INCONCLUSIVE),  # low touches 0: not decisive
    (-0.03, (-0.06, 0.0), GREATER, INCONCLUSIVE),  # high touches 0: not decisive either way
    (0.0, (0.0, 0.0), GREATER, INCONCLUSIVE),  # zero-width at 0
    (0.1, (0.1, 0.1), GREATER, REPRODUCED),  # zero-width above 0 (one case): still decisive
    (-0.05, (-0.09, -0.01), LESS, REPRODUCED),  # mirror of greater
    (0.05, (0.01, 0.09), LESS, CONTRADICTED),
    (-0.02, (-0.05, 0.01), LESS, INCONCLUSIVE),
    (-0.03, (-0.06, 0.0), LESS, INCONCLUSIVE),  # touches 0
    (0.03, (0.0, 0.06), LESS, INCONCLUSIVE),  # touches 0 from the other side
    (0.005, (-0.01, 0.015), SIMILAR, REPRODUCED),  # inside (-0.02, 0.02)
    (0.05, (0.03, 0.07), SIMILAR, CONTRADICTED),  # all above +0.02
    (-0.05, (-0.07, -0.03), SIMILAR, CONTRADICTED),  # all below -0.02
    (0.01, (-0.01, 0.03), SIMILAR, INCONCLUSIVE),  # straddles +0.02
    (0.0, (-0.05, 0.05), SIMILAR, INCONCLUSIVE),  # wider than the margin on both sides
    (0.01, (0.0, 0.02), SIMILAR, INCONCLUSIVE),  # high touches +m: not inside
    (0.03, (0.02, 0.04), SIMILAR, INCONCLUSIVE),  # low touches +m: not outside
    (-0.03, (-0.04, -0.02), SIMILAR, INCONCLUSIVE),  # high touches -m: not outside
    (0.02, (0.01, 0.03), MAGNITUDE, REPRODUCED),  # +0.02 << +0.10, but the sign agrees
    (-0.02, (-0.03, -0.01), MAGNITUDE, CONTRADICTED),
    (0.08, (-0.01, 0.17), MAGNITUDE, INCONCLUSIVE),  # covers +0.10 and 0
]


@pytest.mark.parametrize("effect, interval, claim, expected", VERDICT_CASES)
def test_verdict(effect, interval, claim, expected):
    assert verdicts.verdict(effect, interval, claim) == expected


SLIGHTLY = Claim("skip concatenation helps only slightly", "similar", margin=0.05)
SKIP_CASES = [
    # shape: interval -> combine(greater, similar 0.05) = "positive and below 0.05"
    ((0.01, 0.04), REPRODUCED),  # above 0 and inside +-0.05
    ((0.08, 0.12), CONTRADICTED),  # helps, but far more than slightly
    ((-0.01, 0.04), INCONCLUSIVE),  # might not help at all
]


@pytest.mark.parametrize("interval, expected", SKIP_CASES)
def test_two_claims_express_helps_only_slightly(interval, expected):
    effect = sum(interval) / 2
    pair = [verdicts.verdict(effect, interval, claim) for claim in (GREATER, SLIGHTLY)]
    assert verdicts.combine(pair) == expected


COMBINE_CASES = [
    # shape: pairwise verdicts -> combined, by the rule in combine's docstring
    ([REPRODUCED, REPRODUCED], REPRODUCED),
    ([REPRODUCED, INCONCLUSIVE], INCONCLUSIVE),
    ([REPRODUCED, CONTRADICTED], CONTRADICTED),
    ([INCONCLUSIVE, CONTRADICTED], CONTRADICTED),  # contradicted outranks inconclusive
    ([INCONCLUSIVE], INCONCLUSIVE),
    ((v for v in [REPRODUCED]), REPRODUCED),  # any iterable
]


@pytest.mark.parametrize("items, expected", COMBINE_CASES)
def test_combine(items, expected):
    assert verdicts.combine(items) == expected


@pytest.mark.parametrize("items", [[], ["reproduced", "maybe"], ["Reproduced"]])
def test_combine_rejects_unknown(items):
    with pytest.raises(ValueError, match="combine"):
        verdicts.combine(items)


BAD_VERDICT_ARGS = [
    # shape: effect, interval, claim -> error message fragment
    (0.2, (0.0, 0.1), GREATER, "within its interval"),  # effect above high
    (0.05, (0.1, 0.0), GREATER, "within its interval"),  # low > high
    (float("nan"), (0.0, 0.1), GREATER, "finite"),
    (0.05, (0.0, float("inf")), GREATER, "finite"),
    (0.05, (0.05, 0.0, 0.1), GREATER, "pair"),  # the 3-tuple from bootstrap_interval passed whole
    (0.05, 0.1, GREATER, "pair"),
    (0.05, (0.0, 0.1), "greater", "Claim"),
]


@pytest.mark.parametrize("effect, interval, claim, message", BAD_VERDICT_ARGS)
def test_verdict_rejects(effect, interval, claim, message):
    with pytest.raises(ValueError, match=message):
        verdicts.verdict(effect, interval, claim)


BAD_CLAIMS = [
    # shape: Claim arguments -> error message fragment
    (("", "greater"), {}, "name"),
    (("x", "better"), {}, "direction"),
    (("x", "similar"), {}, "needs a margin"),  # equivalence without a margin is untestable
    (("x", "greater"), {"margin": 0.02}, "only to 'similar'"),
    (("x", "similar"), {"margin": -0.02}, "margin"),
    (("x", "similar"), {"margin": float("nan")}, "margin"),
    (("x", "greater"), {"study_effect": float("nan")}, "study_effect"),
]


@pytest.mark.parametrize("args, kwargs, message", BAD_CLAIMS)
def test_claim_rejects(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Claim(*args, **kwargs)


def test_claim_is_frozen_and_options_keyword_only():
    with pytest.raises(AttributeError):
        GREATER.direction = "less"
    with pytest.raises(TypeError):
        Claim("x", "similar", 0.005, 0.02)


BOOTSTRAP_CASES = [
    # shape: values, options -> (estimate, low, high), worked out from the resampling distribution
    ([0.75], {}, (0.75, 0.75, 0.75)),  # one case: every resample is that case
    ([0.5] * 20, {}, (0.5, 0.5, 0.5)),  # constant values: zero width
    ([0.0, 1.0], {}, (0.5, 0.0, 1.0)),  # resampled means 0, 0.5, 1 with chance 1/4, 1/2, 1/4
    ([0.0, 1.0], {"confidence": 0.4}, (0.5, 0.5, 0.5)),  # central 40 % all 0.5 (it holds 25 %..75 %)
    ([1.0, 2.0, 3.0, 100.0], {"statistic": np.median}, (2.5, 1.0, 100.0)),  # median of 4 cases
]


@pytest.mark.parametrize("values, options, expected", BOOTSTRAP_CASES)
def test_bootstrap_interval(values, options, expected):
    assert verdicts.bootstrap_interval(values, **options) == pytest.approx(expected)


def test_bootstrap_is_deterministic_with_a_seed():
    values = np.random.default_rng(1).uniform(0.5, 0.9, size=30)
    first = verdicts.bootstrap_interval(values, seed=7)
    assert verdicts.bootstrap_interval(values, seed=7) == first
    assert verdicts.bootstrap_interval(values, seed=8) != first


@pytest.mark.parametrize("statistic", [np.mean, np.median])
@pytest.mark.parametrize("confidence", [0.1, 0.5, 0.95])
def test_interval_contains_estimate(statistic, confidence):
    # skewed scores, like Dice with a few failed cases
    values = np.r_[np.full(7, 0.9), 0.1, 0.0]
    estimate, low, high = verdicts.bootstrap_interval(values, statistic=statistic, confidence=confidence)
    assert low <= estimate <= high
    assert estimate == pytest.approx(statistic(values))


def test_interval_width_shrinks_with_more_cases():
    # N(0.7, 0.1) per-case Dice: a 95 % interval of the mean is about 2 * 1.96 * 0.1 / sqrt(n)
    rng = np.random.default_rng(0)
    widths = {}
    for n in (10, 40, 1000):
        _, low, high = verdicts.bootstrap_interval(rng.normal(0.7, 0.1, size=n))
        widths[n] = high - low
    assert widths[1000] < widths[40] < widths[10]
    assert widths[1000] == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(1000), rel=0.15)


PAIRED_CASES = [
    # shape: variant, reference -> mean of per-case differences
    ([0.75, 0.5, 0.25], [0.5, 0.25, 0.0], 0.25),  # every case +0.25
    ([0.9, 0.5], [0.7, 0.6], 0.05),  # (+0.2 - 0.1) / 2
    ([0.6, 0.6, 0.6, 0.6], [0.7, 0.5, 0.8, 0.4], 0.0),  # differences -0.1, +0.1, -0.2, +0.2
]


@pytest.mark.parametrize("variant, reference, expected", PAIRED_CASES)
def test_paired_difference_is_mean_of_differences(variant, reference, expected):
    estimate, low, high = verdicts.paired_difference_interval(variant, reference)
    assert estimate == pytest.approx(expected)
    assert low <= estimate <= high


def test_paired_difference_keeps_cases_paired():
    # the variant is +0.01 on every case while cases vary a lot: pairing sees a sure, tiny gain
    reference = np.linspace(0.2, 0.9, 15)
    _, low, high = verdicts.paired_difference_interval(reference + 0.01, reference)
    assert low == pytest.approx(0.01) and high == pytest.approx(0.01)


BAD_INTERVAL_CALLS = [
    # shape: function, arguments, options -> error message fragment
    (verdicts.bootstrap_interval, ([],), {}, "non-empty"),
    (verdicts.bootstrap_interval, ([[0.5, 0.6]],), {}, "1-D"),
    (verdicts.bootstrap_interval, ([0.5, float("nan")],), {}, r"NaN or infinite values at positions \[1\]"),
    (verdicts.bootstrap_interval, ([0.5],), {"confidence": 1.0}, "confidence"),
    (verdicts.bootstrap_interval, ([0.5],), {"confidence": 0.0}, "confidence"),
    (verdicts.bootstrap_interval, ([0.5],), {"confidence": 95}, "confidence"),  # percent, not a share
    (verdicts.bootstrap_interval, ([0.5],), {"resamples": 99}, "resamples"),
    (verdicts.bootstrap_interval, ([0.5],), {"resamples": 1000.0}, "resamples"),
    (verdicts.bootstrap_interval, ([0.5],), {"statistic": lambda x: x.sum()}, "axis="),
    (verdicts.paired_difference_interval, ([0.5, 0.6], [0.5]), {}, "same cases"),
    (verdicts.paired_difference_interval, ([0.5], [float("nan")]), {}, "reference has NaN"),
]


@pytest.mark.parametrize("function, args, options, message", BAD_INTERVAL_CALLS)
def test_interval_functions_reject(function, args, options, message):
    with pytest.raises(ValueError, match=message):
        function(*args, **options)


DESCRIBE_CASES = [
    # shape: effect, interval, options -> prose, rounded by hand
    (0.0421, (0.0104, 0.0712), {}, "+0.042 (95 % interval +0.010 to +0.071)"),
    (-0.2, (-0.31, -0.0004), {"digits": 2}, "-0.20 (95 % interval -0.31 to +0.00)"),  # no "-0.00"
    (0.5, (0.25, 0.75), {"digits": 1, "confidence": 0.9}, "+0.5 (90 % interval +0.2 to +0.8)"),  # half to even
    (0.8, (0.8, 0.8), {"digits": 0, "confidence": 0.999}, "+1 (99.9 % interval +1 to +1)"),
]


@pytest.mark.parametrize("effect, interval, options, expected", DESCRIBE_CASES)
def test_describe(effect, interval, options, expected):
    assert verdicts.describe(effect, interval, **options) == expected


@pytest.mark.parametrize(
    "options, message", [({"digits": -1}, "digits"), ({"digits": 1.5}, "digits"), ({"confidence": 1.5}, "confidence")]
)
def test_describe_rejects(options, message):
    with pytest.raises(ValueError, match=message):
        verdicts.describe(0.1, (0.0, 0.2), **options)


def test_imports_no_backend_and_no_scipy_stats():
    code = ("import sys, tutorial_lib.verdicts; "
            "print(*(m for m in ('keras', 'pandas', 'scipy.stats') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def simulated_runs(rng, seeds, cases, *, effect=0.0, interaction=0.0, stall=0.08):
    """(seeds, cases) test Dice of two arms of runs, shaped like the course's (issue 30's measurements).

    Scores live on the logit scale and are squashed into (0, 1), so they are bounded and skewed; the seed
    moves a run more than a case moves within a run; a run stalls (every case 0) with chance ``stall``.
    Both arms share the cases. ``effect`` (logit) is added to the variant, per case give or take
    ``interaction``.
    """
    case = rng.normal(0.3, 0.8, size=cases)
    variant_case = case + rng.normal(effect, interaction, size=cases) if interaction else case + effect

    def arm(case_logits):
        seed = rng.normal(0.0, 0.6, size=(seeds, 1))
        scores = 1 / (1 + np.exp(-(case_logits + seed + rng.normal(0.0, 0.4, size=(seeds, cases)))))
        return np.where(rng.random((seeds, 1)) < stall, 0.0, scores)

    return arm(variant_case), arm(case)


def false_verdict_rate(interval, seeds, cases, trials, rng):
    excluded = 0
    for _ in range(trials):
        _, low, high = interval(*simulated_runs(rng, seeds, cases))
        excluded += low > 0 or high < 0
    return excluded / trials


def seed_averaged_case_interval(variant, reference):
    # What a reader might do: average the seeds, then resample cases. The seeds' spread is lost.
    return verdicts.paired_difference_interval(np.mean(variant, axis=0), np.mean(reference, axis=0))


A_A_SETTINGS = [(2, 5), (3, 5), (3, 200), (6, 5), (6, 50), (10, 200)]  # shape: (seeds per arm, cases)


@pytest.mark.parametrize("seeds, cases", A_A_SETTINGS)
def test_seed_case_interval_keeps_its_false_verdict_rate(seeds, cases):
    # A/A: both arms are one configuration, so an interval without 0 is a false verdict. 1000 trials
    # measure a 5 % rate to +-1.4 % (two standard errors).
    rate = false_verdict_rate(verdicts.seed_case_difference_interval, seeds, cases, 1000,
                              np.random.default_rng(seeds * 1000 + cases))
    assert rate <= 0.05 + 0.014


def test_the_a_a_simulation_catches_an_overconfident_interval():
    # the same simulation fails an interval that ignores the seed-to-seed spread, many times over
    rate = false_verdict_rate(seed_averaged_case_interval, 3, 50, 400, np.random.default_rng(5))
    assert rate > 0.3


def test_seed_case_interval_gains_power_with_seeds_and_cases():
    # a real gain of 0.3 logit (about +0.06 Dice), varying from case to case
    def power(seeds, cases):
        rng = np.random.default_rng(seeds * 1000 + cases)
        hits = 0
        for _ in range(400):
            _, low, _ = verdicts.seed_case_difference_interval(
                *simulated_runs(rng, seeds, cases, effect=0.3, interaction=0.3))
            hits += low > 0
        return hits / 400

    assert power(3, 5) < power(10, 5) < power(10, 100)


def test_seed_case_interval_needs_two_seeds():
    with pytest.raises(ValueError, match="at least 2 runs"):
        verdicts.seed_case_difference_interval([[0.9, 0.7, 0.6, 0.8]], [[0.5, 0.6, 0.6, 0.4]])


SPREAD_CASES = [
    # shape: variant (seeds, cases), reference, paired -> seed variances, case variance; by hand
    # run means 0.7 / 0.5 (variance 0.02) against constant runs; both models find case 2 easier by 0.2
    ([[0.6, 0.8], [0.4, 0.6]], [[0.5, 0.7], [0.5, 0.7]], False, (0.02, 0.0), 0.0),
    # the variant gains 0.2 on case 2 only, every run alike: all of it is case-to-case variance
    ([[0.5, 0.7], [0.5, 0.7]], [[0.5, 0.5], [0.5, 0.5]], False, (0.0, 0.0), 0.02),
    # paired: the same runs, +0.1 everywhere, whatever each run's level
    ([[0.9, 0.6], [0.5, 0.2]], [[0.8, 0.5], [0.4, 0.1]], True, (0.0,), 0.0),
]


@pytest.mark.parametrize("variant, reference, paired, seed_variances, case_variance", SPREAD_CASES)
def test_difference_spread(variant, reference, paired, seed_variances, case_variance):
    spread = verdicts.difference_spread(variant, reference, paired=paired)
    assert spread.seed_variances == pytest.approx(seed_variances, abs=1e-12)
    assert spread.case_variance == pytest.approx(case_variance, abs=1e-12)


def test_seed_case_interval_widens_with_seed_to_seed_spread():
    # shape: (3 seeds, 5 cases); runs that agree against runs that disagree from seed to seed
    steady = np.tile([0.6, 0.7, 0.5, 0.6, 0.7], (3, 1)) + np.array([[-0.01], [0.0], [0.01]])
    noisy = steady + np.array([[-0.2], [0.0], [0.2]])
    reference = steady - 0.1 + np.array([[0.01], [0.0], [-0.01]])  # 0.1 behind on every case
    _, low_steady, high_steady = verdicts.seed_case_difference_interval(steady, reference)
    _, low_noisy, high_noisy = verdicts.seed_case_difference_interval(noisy, reference)
    assert high_noisy - low_noisy > 10 * (high_steady - low_steady)
    assert low_steady > 0 and low_noisy < 0


def test_seeds_to_decide_matches_the_interval_it_plans():
    # plan for the measured spread, then check: at the planned seed count most simulated intervals decide
    rng = np.random.default_rng(11)
    spread = verdicts.difference_spread(*simulated_runs(rng, 30, 20, stall=0.0))
    claim = Claim("plans", "greater", study_effect=0.05)
    planned = verdicts.seeds_to_decide(spread, claim)
    assert 2 < planned < 200
    assert verdicts.seeds_to_decide(spread, claim, effect=0.025) > 3 * planned  # half the effect, ~4x the seeds


@pytest.mark.parametrize(
    "variant, reference, message",
    [
        ([0.5, 0.6], [[0.5, 0.6]], "seeds, cases"),  # shape: 1-D variant
        ([[0.5, 0.6]] * 2, [[0.5, 0.6, 0.7]] * 2, "same cases"),  # 2 cases against 3
        ([[0.5, np.nan]] * 2, [[0.5, 0.6]] * 2, "finite"),
        ([[0.5, 0.6]] * 3, [[0.5, 0.6]] * 2, "same runs"),  # paired, 3 runs against 2
    ],
)
def test_seed_case_interval_rejects_bad_arrays(variant, reference, message):
    with pytest.raises(ValueError, match=message):
        verdicts.seed_case_difference_interval(variant, reference, paired=message == "same runs")


def test_a_a_test_counts_the_splits_whose_interval_excludes_zero():
    # shape: (12 seeds, 4 cases); an interval that always excludes 0 is wrong in every split, one that never does
    # in none; the course's interval on runs of one configuration stays near its promise
    runs = np.random.default_rng(3).normal(0.6, 0.03, size=(12, 4))
    always = verdicts.a_a_test(runs, seeds_per_arm=3, splits=50, interval=lambda v, r, confidence: (0.1, 0.05, 0.2))
    never = verdicts.a_a_test(runs, seeds_per_arm=3, splits=50, interval=lambda v, r, confidence: (0.0, -1.0, 1.0))
    assert (always.false_verdicts, never.false_verdicts) == (1.0, 0.0)
    assert (never.median_width, never.splits, never.seeds_per_arm) == (2.0, 50, 3)
    assert verdicts.a_a_test(runs, seeds_per_arm=6, splits=200).false_verdicts <= 0.1


@pytest.mark.parametrize("seeds_per_arm, splits, message", [(7, 10, "at least 14 seeds"), (0, 10, "positive"),
                                                            (3, 0, "splits")])
def test_a_a_test_rejects(seeds_per_arm, splits, message):
    with pytest.raises(ValueError, match=message):
        verdicts.a_a_test(np.zeros((12, 3)), seeds_per_arm=seeds_per_arm, splits=splits)


MEAN_INTERVAL_CASES = [
    # shape: one value per run -> (mean, low, high); half-width t(0.975, n - 1) * sd / sqrt(n)
    ([1.0, 2.0, 3.0], (2.0, 2.0 - 4.302653 / np.sqrt(3), 2.0 + 4.302653 / np.sqrt(3))),
    ([0.5, 0.5], (0.5, 0.5, 0.5)),
    ([0.0, 1.0], (0.5, 0.5 - 12.706205 * 0.5, 0.5 + 12.706205 * 0.5)),
]


@pytest.mark.parametrize("values, expected", MEAN_INTERVAL_CASES)
def test_mean_interval(values, expected):
    assert verdicts.mean_interval(values) == pytest.approx(expected, rel=1e-6)


def test_mean_interval_needs_two_runs():
    with pytest.raises(ValueError, match="at least 2"):
        verdicts.mean_interval([0.5])


def test_seeds_needed_names_the_most_any_part_needs_or_says_why_seeds_cannot_do_it():
    # run means 0.62 / 0.58 against 0.57 / 0.53: seed sd 0.028 each, no case-to-case variance
    spread = verdicts.difference_spread([[0.62, 0.62], [0.58, 0.58]], [[0.57, 0.57], [0.53, 0.53]])
    unsized, small = Claim("x beats y", "greater"), Claim("x beats y a little", "greater", study_effect=0.02)
    assert verdicts.PLANNED_EFFECT == 0.05
    assert verdicts.seeds_needed([(spread, unsized)]) == "about 7 seeds per arm"  # planned for +0.05
    assert verdicts.seeds_needed([(spread, unsized), (spread, small)]) == "about 33 seeds per arm"
    # the variant gains 0.2 on one case and nothing on the other: only more cases narrow that
    cases = verdicts.difference_spread([[0.5, 0.7], [0.5, 0.7]], [[0.5, 0.5], [0.5, 0.5]])
    assert verdicts.seeds_needed([(cases, unsized)]).startswith("more test cases")
    on_margin = Claim("about the same", "similar", margin=0.05, study_effect=0.05)
    assert "margin" in verdicts.seeds_needed([(spread, on_margin)])
    with pytest.raises(ValueError, match="at least one"):
        verdicts.seeds_needed([])


@pytest.mark.parametrize(("verdict", "seeds", "expected"), [
    (verdicts.REPRODUCED, 3, "decided with 3 seeds per arm"),
    (verdicts.CONTRADICTED, 4, "decided with 4 seeds per arm"),
    (verdicts.INCONCLUSIVE, 3, "about 7 seeds per arm"),  # 3 seeds were too few for +0.05
    # the claim has no study's number, so the plan is for PLANNED_EFFECT
    (verdicts.INCONCLUSIVE, 7, "about 7 seeds per arm would show an effect of +0.05; this one is smaller"),
    (verdicts.INCONCLUSIVE, 10, "about 7 seeds per arm would show an effect of +0.05; this one is smaller"),
])
def test_seeds_needed_reads_the_verdict_and_the_seeds_behind_it(verdict, seeds, expected):
    spread = verdicts.difference_spread([[0.62, 0.62], [0.58, 0.58]], [[0.57, 0.57], [0.53, 0.53]])
    assert verdicts.seeds_needed([(spread, Claim("x beats y", "greater"))], verdict=verdict, seeds=seeds) == expected


@pytest.mark.parametrize(("verdict", "seeds"), [("likely", 3), (verdicts.REPRODUCED, None)])
def test_seeds_needed_rejects_an_unknown_verdict_or_one_without_seeds(verdict, seeds):
    spread = verdicts.difference_spread([[0.62, 0.62], [0.58, 0.58]], [[0.57, 0.57], [0.53, 0.53]])
    with pytest.raises(ValueError, match="verdict must be one of"):
        verdicts.seeds_needed([(spread, Claim("x beats y", "greater"))], verdict=verdict, seeds=seeds)
