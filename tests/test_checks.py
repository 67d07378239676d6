import subprocess
import sys

import numpy as np
import pytest

from tfslim import _checks
from tfslim._checks import (
    check_bool,
    check_float,
    check_int,
    check_positive_float,
    check_rate,
    check_shape,
)


@pytest.mark.parametrize("value, expected", [(1, 1), (7, 7), (np.int64(3), 3)])
def test_check_int_returns_python_ints(value, expected):
    got = check_int("n", value)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", ["1", 1.0, 2.5, True, None, [1]])
def test_check_int_wrong_type_is_a_type_error(value):
    with pytest.raises(TypeError, match=r"Invalid type for argument `n`\. Expected an int >= 1\. "):
        check_int("n", value)


def test_check_int_message_shows_value_and_type():
    with pytest.raises(TypeError, match=r"Received: n='1' of type str$"):
        check_int("n", "1")


@pytest.mark.parametrize(
    "kwargs, value, match",
    [
        ({}, 0, r"Expected an int >= 1\. Received: n=0$"),
        ({"minimum": 0}, -1, r"Expected an int >= 0\. Received: n=-1$"),
        ({"minimum": 1, "maximum": 4}, 5, r"Expected an int in \[1, 4\]\. Received: n=5$"),
        ({"minimum": None, "maximum": 4}, 5, r"Expected an int <= 4\. Received: n=5$"),
    ],
)
def test_check_int_out_of_range_is_a_value_error(kwargs, value, match):
    with pytest.raises(ValueError, match=r"Invalid value for argument `n`\. " + match):
        check_int("n", value, **kwargs)


def test_check_int_without_bounds_accepts_negatives():
    assert check_int("end_step", -5, minimum=None) == -5


def test_check_bool():
    assert check_bool("flag", True) is True
    assert check_bool("flag", np.bool_(False)) is False
    assert check_bool("flag", None, allow_none=True) is None
    for value in (1, 0, "yes", None):
        with pytest.raises(TypeError, match=r"argument `flag`\. Expected a bool\. Received: flag="):
            check_bool("flag", value)
    with pytest.raises(TypeError, match=r"Expected a bool or None\. Received: flag='no'"):
        check_bool("flag", "no", allow_none=True)


@pytest.mark.parametrize(
    "kwargs, good, bad, text",
    [
        ({"minimum": 0, "min_inclusive": False}, 0.5, 0, r"a float > 0"),
        ({"minimum": 0}, 0, -0.1, r"a float >= 0"),
        ({"minimum": 0, "maximum": 1, "max_inclusive": False}, 0, 1.0, r"a float in \[0, 1\)"),
        ({"minimum": 0, "maximum": 1, "min_inclusive": False}, 1, 0, r"a float in \(0, 1\]"),
        ({"maximum": 2}, -3, 2.5, r"a float <= 2"),
    ],
)
def test_check_float_ranges(kwargs, good, bad, text):
    got = check_float("x", good, **kwargs)
    assert got == good and type(got) is float
    with pytest.raises(ValueError, match=rf"argument `x`\. Expected {text}\. Received: x={bad!r}$"):
        check_float("x", bad, **kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_check_float_refuses_non_finite_values(value):
    with pytest.raises(ValueError, match=r"Expected a finite float\. Received: x="):
        check_float("x", value)


@pytest.mark.parametrize("value", ["0.5", True, None, [0.5]])
def test_check_float_wrong_type_is_a_type_error(value):
    with pytest.raises(TypeError, match=r"Invalid type for argument `x`\. Expected a float > 0"):
        check_positive_float("x", value)


def test_check_float_custom_expectation_and_numpy_scalars():
    assert check_rate("rate", np.float32(0.25)) == 0.25
    with pytest.raises(ValueError, match=r"Expected a number of seconds\. Received: t=-1"):
        check_float("t", -1, minimum=0, expected="a number of seconds")


@pytest.mark.parametrize("value", [(4,), [8, 8, 1], (np.int64(2), 3)])
def test_check_shape_accepts_sequences_of_positive_ints(value):
    got = check_shape("input_shape", value)
    assert got == tuple(int(v) for v in value)
    assert all(type(v) is int for v in got)


@pytest.mark.parametrize("value", ["4", 4, (4.0,), (True, 2), None, b"\x04"])
def test_check_shape_wrong_type_is_a_type_error(value):
    with pytest.raises(TypeError, match=r"argument `input_shape`\. Expected a tuple of positive"):
        check_shape("input_shape", value)


@pytest.mark.parametrize("value", [(), (0,), (4, -1)])
def test_check_shape_bad_dimensions_are_a_value_error(value):
    with pytest.raises(ValueError, match=r"argument `input_shape`.*without the batch axis"):
        check_shape("input_shape", value)


def test_check_shape_rank():
    assert check_shape("s", (1, 2, 3), rank=3) == (1, 2, 3)
    with pytest.raises(ValueError, match=r"Expected a tuple of 3 positive ints \(int, int, int\)"):
        check_shape("s", (1, 2), rank=3)


def test_checks_module_does_not_import_keras():
    code = "import sys, tfslim._checks; assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_check_is_exported():
    public = {n for n in vars(_checks) if n.startswith("check_") or n.startswith("invalid_")}
    assert public == set(_checks.__all__)
