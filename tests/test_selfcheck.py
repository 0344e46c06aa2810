"""tutorial_lib.selfcheck: the exercises' checks and the sentences they fail with."""

from __future__ import annotations

import numpy as np
import pytest

from tutorial_lib import selfcheck


def _not_written():
    raise NotImplementedError()


def _crash():
    raise KeyError("flair")


@pytest.mark.parametrize(
    "compute, expected, message",
    [
        (lambda: 0.5, 0.25, "halves: expected 0.25, got 0.5."),
        (lambda: np.zeros(3), np.zeros(4), "halves: expected shape (4,), got shape (3,)."),
        (lambda: "half", 0.5, "halves: expected a number or an array of numbers, got 'half'."),
        (_not_written, 0.5, "halves: not answered yet: replace `raise NotImplementedError()`"),
        (_crash, 0.5, "halves: your code raised KeyError: 'flair'"),
    ],
)
def test_expect_close_failures_say_what_and_why(compute, expected, message):
    with pytest.raises(selfcheck.SelfCheckError) as caught:
        selfcheck.expect_close(compute, expected, "halves")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "compute, expected",
    [
        (lambda: 0.1 + 0.2, 0.3),
        (lambda: np.float32(1 / 3), 1 / 3),
        (lambda: [[1.0, 2.0]], np.array([[1.0, 2.0]])),
        (lambda: np.nan, np.nan),
    ],
)
def test_expect_close_accepts_equal_numbers(compute, expected):
    selfcheck.expect_close(compute, expected, "numbers", atol=1e-6)


def test_expect_close_tolerance_is_absolute():
    selfcheck.expect_close(lambda: 1.0005, 1.0, "loose", atol=1e-3)
    with pytest.raises(selfcheck.SelfCheckError):
        selfcheck.expect_close(lambda: 1.0005, 1.0, "tight", atol=1e-4)


@pytest.mark.parametrize(
    "actual, expected, same",
    [
        ([(1, 3)], [(1, 3)], True),
        ([(1, 3)], [(1, 4)], False),
        (np.array([True, False]), np.array([True, False]), True),
        (np.array([[True, False]]), np.array([True, False]), False),  # same values, another shape
        (np.zeros(2, np.uint8), np.zeros(2, bool), True),  # values compare, dtypes are checked separately
        (np.dtype(bool), np.dtype(bool), True),
    ],
)
def test_expect_equal(actual, expected, same):
    if same:
        selfcheck.expect_equal(lambda: actual, expected, "equal")
    else:
        with pytest.raises(selfcheck.SelfCheckError, match="^equal: expected "):
            selfcheck.expect_equal(lambda: actual, expected, "equal")


def test_large_arrays_are_described_by_shape():
    with pytest.raises(selfcheck.SelfCheckError, match=r"got an array of shape \(3, 4\) \(float64\)"):
        selfcheck.expect_equal(lambda: np.ones((3, 4)), np.zeros((3, 4)), "big")


def test_expect_raises():
    selfcheck.expect_raises(lambda: int("x"), ValueError, "bad text")
    with pytest.raises(selfcheck.SelfCheckError, match="expected ValueError, but your code returned normally"):
        selfcheck.expect_raises(lambda: 1, ValueError, "no error")
    with pytest.raises(selfcheck.SelfCheckError, match="expected ValueError, your code raised KeyError"):
        selfcheck.expect_raises(_crash, ValueError, "other error")
    with pytest.raises(selfcheck.SelfCheckError, match="not answered yet"):
        selfcheck.expect_raises(_not_written, ValueError, "blank")


def test_failures_are_assertion_errors_so_nbgrader_scores_zero():
    assert issubclass(selfcheck.SelfCheckError, AssertionError)


def test_passed_prints_one_line(capsys):
    selfcheck.passed("Exercise 9.9")
    assert capsys.readouterr().out == "Exercise 9.9: all visible checks passed.\n"
