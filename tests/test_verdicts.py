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


def test_imports_numpy_only():
    code = "import sys, tutorial_lib.verdicts; print(*(m for m in ('keras', 'pandas', 'scipy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_seed_case_interval_with_one_seed_is_the_paired_case_interval():
    # shape: (1 seed, 4 cases) each; one seed per model leaves only the case resampling
    variant, reference = [[0.9, 0.7, 0.6, 0.8]], [[0.5, 0.6, 0.6, 0.4]]
    one = verdicts.seed_case_difference_interval(variant, reference, seed=3)
    assert one[0] == pytest.approx(0.225)  # hand-computed: mean of (0.4, 0.1, 0.0, 0.4)
    assert one[1] <= one[0] <= one[2] and one[1] >= 0.0 - 1e-12  # every case difference is >= 0


def test_seed_case_interval_widens_with_seed_to_seed_spread():
    # shape: (3 seeds, 5 cases); identical runs against runs that disagree from seed to seed
    steady = np.tile([0.6, 0.7, 0.5, 0.6, 0.7], (3, 1))
    noisy = steady + np.array([[-0.2], [0.0], [0.2]])
    reference = np.full((3, 5), 0.5)
    _, low_steady, high_steady = verdicts.seed_case_difference_interval(steady, reference)
    _, low_noisy, high_noisy = verdicts.seed_case_difference_interval(noisy, reference)
    assert high_noisy - low_noisy > high_steady - low_steady


@pytest.mark.parametrize(
    "variant, reference, message",
    [
        ([0.5, 0.6], [[0.5, 0.6]], "seeds, cases"),  # shape: 1-D variant
        ([[0.5, 0.6]], [[0.5, 0.6, 0.7]], "same cases"),  # 2 cases against 3
        ([[0.5, np.nan]], [[0.5, 0.6]], "finite"),
    ],
)
def test_seed_case_interval_rejects_bad_arrays(variant, reference, message):
    with pytest.raises(ValueError, match=message):
        verdicts.seed_case_difference_interval(variant, reference)
