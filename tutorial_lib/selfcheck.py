"""Self-checks for the chapters' exercises, with failures in plain words.

Each exercise of the course has a test cell that a learner runs after
writing their answer; nbgrader grades the same cell (it passes when it raises
nothing). The checks take a zero-argument function rather than a value, so
that an answer which is not written yet (nbgrader's release leaves
``raise NotImplementedError()`` in its place) or which crashes is reported
as such instead of as a traceback from deep inside NumPy or Keras.

A failed check raises :class:`SelfCheckError`, an ``AssertionError`` whose
message says what was checked, what was expected and what came back; the
checks' own frames are hidden from IPython's traceback, so the learner sees
their cell and that sentence.

Examples
--------
>>> expect_close(lambda: 0.1 + 0.2, 0.3, "adding tenths")
>>> expect_equal(lambda: sorted([3, 1]), [1, 3], "sorting two numbers")
>>> expect_close(lambda: 2 * 0.25, 0.75, "halving")
Traceback (most recent call last):
...
tutorial_lib.selfcheck.SelfCheckError: halving: expected 0.75, got 0.5.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["SelfCheckError", "expect_close", "expect_equal", "expect_raises", "passed"]

NOT_WRITTEN = ("not answered yet: replace `raise NotImplementedError()` in the exercise cell with your "
               "code, run that cell, then run this one again.")


class SelfCheckError(AssertionError):
    """A self-check that failed; the message says which and why."""


def _run(compute: Callable[[], Any], what: str) -> Any:
    __tracebackhide__ = True  # noqa: F841  (IPython and pytest leave this frame out of tracebacks)
    try:
        return compute()
    except NotImplementedError:
        raise SelfCheckError(f"{what}: {NOT_WRITTEN}") from None
    except SelfCheckError:
        raise
    except Exception as error:  # a learner's crash becomes a failed check with its reason
        raise SelfCheckError(f"{what}: your code raised {type(error).__name__}: {error}") from error


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"array {value.tolist()} ({value.dtype})"
        return f"an array of shape {value.shape} ({value.dtype})"
    return repr(value)


def expect_close(compute: Callable[[], Any], expected: Any, what: str, *, atol: float = 1e-6) -> None:
    """Check that ``compute()`` returns numbers within ``atol`` of ``expected``.

    Shapes must match exactly (a scalar is shape ``()``).

    Raises
    ------
    SelfCheckError
        If ``compute`` raises, returns another shape, or differs by more than ``atol``.
    """
    __tracebackhide__ = True  # noqa: F841
    actual = _run(compute, what)
    try:
        actual_array = np.asarray(actual, dtype=float)
    except (TypeError, ValueError):
        raise SelfCheckError(f"{what}: expected a number or an array of numbers, got {_describe(actual)}.") from None
    expected_array = np.asarray(expected, dtype=float)
    if actual_array.shape != expected_array.shape:
        raise SelfCheckError(f"{what}: expected shape {expected_array.shape}, got shape {actual_array.shape}.")
    if not np.allclose(actual_array, expected_array, atol=atol, rtol=0, equal_nan=True):
        shown = actual_array.item() if actual_array.ndim == 0 else _describe(actual_array)
        wanted = expected_array.item() if expected_array.ndim == 0 else _describe(expected_array)
        raise SelfCheckError(f"{what}: expected {wanted}, got {shown}.")


def expect_equal(compute: Callable[[], Any], expected: Any, what: str) -> None:
    """Check that ``compute()`` equals ``expected`` exactly (arrays: same shape and values).

    Raises
    ------
    SelfCheckError
        If ``compute`` raises or returns something else.
    """
    __tracebackhide__ = True  # noqa: F841
    actual = _run(compute, what)
    if isinstance(expected, np.ndarray) or isinstance(actual, np.ndarray):
        same = np.shape(actual) == np.shape(expected) and np.array_equal(actual, expected)
    else:
        same = actual == expected
    if not same:
        raise SelfCheckError(f"{what}: expected {_describe(expected)}, got {_describe(actual)}.")


def expect_raises(compute: Callable[[], Any], error: type[BaseException], what: str) -> None:
    """Check that ``compute()`` raises ``error`` (for instance ``ValueError`` on bad input).

    Raises
    ------
    SelfCheckError
        If ``compute`` returns normally or raises another exception.
    """
    __tracebackhide__ = True  # noqa: F841
    try:
        compute()
    except NotImplementedError:
        raise SelfCheckError(f"{what}: {NOT_WRITTEN}") from None
    except error:
        return
    except Exception as other:
        raise SelfCheckError(f"{what}: expected {error.__name__}, your code raised "
                             f"{type(other).__name__}: {other}") from other
    raise SelfCheckError(f"{what}: expected {error.__name__}, but your code returned normally.")


def passed(exercise: str) -> None:
    """Print the line a learner sees when every visible check of ``exercise`` passed."""
    print(f"{exercise}: all visible checks passed.")
