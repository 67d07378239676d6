"""Argument checks shared by the architecture builders.

Each check raises with the message shape used across tfslim: the argument's name, the
value received and what was expected.
"""

import numbers
from collections.abc import Sequence

import keras

from tfslim._checks import check_int


def _fail(name: str, expected: str, value: object) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}"
    )


def check_positive_int(name: str, value: object) -> int:
    """Returns `value` if it is an int >= 1, else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected an int >= 1. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return check_int(name, int(value))


def check_positive_float(name: str, value: object) -> float:
    """Returns `value` as a float if it is a finite number > 0, else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a float > 0. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not 0 < value < float("inf"):
        raise _fail(name, "a float > 0", value)
    return float(value)


def check_rate(name: str, value: object) -> float:
    """Returns `value` if it is a float in [0, 1), e.g. a dropout rate, else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise _fail(name, "a float in [0, 1)", value)
    return float(value)


def check_shape(name: str, value: object, *, rank: int) -> tuple[int, ...]:
    """Returns `value` as a tuple if it is a shape of `rank` positive ints (no batch axis)."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == rank
        and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value
        )
    )
    if not ok:
        dims = ", ".join(["int"] * rank)
        raise _fail(
            name, f"a tuple of {rank} positive ints ({dims}), without the batch axis", value
        )
    return tuple(int(v) for v in value)


def check_image_tensor(name: str, value: object) -> int:
    """Checks `value` is a rank-4 (batch, height, width, channels) KerasTensor.

    Returns:
        The number of channels, which must be known.
    """
    if not isinstance(value, keras.KerasTensor):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a KerasTensor from the functional "
            f"API (e.g. `keras.Input(shape=(32, 32, 3))`). Received: {name} of type "
            f"{type(value).__name__}"
        )
    if len(value.shape) != 4 or value.shape[-1] is None:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a rank-4 tensor (batch, height, "
            f"width, channels) with known channels. Received: {name} with shape {value.shape}"
        )
    return int(value.shape[-1])
