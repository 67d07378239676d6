"""Argument checks shared across tfslim, with one behaviour and one message shape.

A value of the wrong type raises `TypeError`, a value of the right type outside the accepted
range raises `ValueError`; both messages name the argument, say what was expected and show the
value received (Keras's "Received:" form). Bools are never numbers here: `True` is refused where
an int or a float is expected. NumPy scalars are accepted and returned as Python values.

This module imports only the standard library (Keras lazily, in `check_image_tensor`), so the
CLI can check its arguments before TensorFlow loads.
"""

import math
import numbers
from collections.abc import Sequence

__all__ = [
    "check_bool",
    "check_float",
    "check_image_tensor",
    "check_int",
    "check_positive_float",
    "check_positive_int",
    "check_rate",
    "check_shape",
    "invalid_type",
    "invalid_value",
]


def invalid_value(name: str, expected: str, value: object) -> ValueError:
    """The house-format `ValueError` for `name=value` when `expected` was wanted."""
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}"
    )


def invalid_type(name: str, expected: str, value: object) -> TypeError:
    """The house-format `TypeError` for `name=value` when `expected` was wanted."""
    return TypeError(
        f"Invalid type for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r} of type {type(value).__name__}"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str, value: object, *, minimum: int | None = 1, maximum: int | None = None
) -> int:
    """Returns `value` as an int if it is an int (not a bool) in [`minimum`, `maximum`].

    A bound of None means no bound on that side.

    Raises:
        TypeError: if `value` is not an int (a float such as `2.0`, a string, a bool).
        ValueError: if it is out of range.
    """
    if minimum is not None and maximum is not None:
        expected = f"an int in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an int >= {minimum}"
    elif maximum is not None:
        expected = f"an int <= {maximum}"
    else:
        expected = "an int"
    if not _is_int(value):
        raise invalid_type(name, expected, value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise invalid_value(name, expected, value)
    return int(value)


def check_positive_int(name: str, value: object) -> int:
    """Returns `value` as an int if it is an int >= 1 (see `check_int`)."""
    return check_int(name, value, minimum=1)


def check_bool(name: str, value: object, *, allow_none: bool = False) -> "bool | None":
    """Returns `value` if it is a bool (or None when `allow_none`), else raises `TypeError`.

    NumPy bools are accepted and returned as Python bools; `0`, `1` and strings are refused,
    because `sparse="no"` being truthy is exactly the mistake this check exists to catch.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or (
        type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    ):
        return bool(value)
    raise invalid_type(name, "a bool or None" if allow_none else "a bool", value)


def _range_text(minimum, maximum, min_inclusive, max_inclusive) -> str:
    if minimum is not None and maximum is not None:
        left = "[" if min_inclusive else "("
        right = "]" if max_inclusive else ")"
        return f"a float in {left}{minimum:g}, {maximum:g}{right}"
    if minimum is not None:
        return f"a float {'>=' if min_inclusive else '>'} {minimum:g}"
    if maximum is not None:
        return f"a float {'<=' if max_inclusive else '<'} {maximum:g}"
    return "a finite float"


def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    expected: str | None = None,
) -> float:
    """Returns `value` as a float if it is a finite real number (an int is fine) in range.

    Args:
        name: str. The argument's name, for the message.
        value: The value to check.
        minimum: float or None. Lower bound, or None for none.
        maximum: float or None. Upper bound, or None for none.
        min_inclusive: bool. Whether `minimum` itself is accepted.
        max_inclusive: bool. Whether `maximum` itself is accepted.
        expected: str or None. Overrides the "a float in [a, b)" wording of the message.

    Raises:
        TypeError: if `value` is not a real number (a string, a bool, None).
        ValueError: if it is NaN, infinite or out of range.
    """
    text = expected or _range_text(minimum, maximum, min_inclusive, max_inclusive)
    if not _is_real(value):
        raise invalid_type(name, text, value)
    number = float(value)
    ok = math.isfinite(number)
    if ok and minimum is not None:
        ok = number >= minimum if min_inclusive else number > minimum
    if ok and maximum is not None:
        ok = number <= maximum if max_inclusive else number < maximum
    if not ok:
        raise invalid_value(name, text, value)
    return number


def check_positive_float(name: str, value: object) -> float:
    """Returns `value` as a float if it is a finite number > 0."""
    return check_float(name, value, minimum=0, min_inclusive=False)


def check_rate(name: str, value: object) -> float:
    """Returns `value` as a float if it is in [0, 1), e.g. a dropout rate or a sparsity."""
    return check_float(name, value, minimum=0, maximum=1, max_inclusive=False)


def check_shape(
    name: str, value: object, *, rank: int | None = None, what: str = "positive ints"
) -> tuple[int, ...]:
    """Returns `value` as a tuple of ints >= 1: a shape without the batch axis.

    Args:
        name: str. The argument's name, for the message.
        value: A tuple or list of positive ints (a single int is not a shape).
        rank: int or None. The number of dimensions required; None accepts any rank >= 1.
        what: str. How the dimensions are described in the message.

    Raises:
        TypeError: if `value` is not a sequence of ints (e.g. the string `'4'` or `4`).
        ValueError: if it has the wrong rank or a dimension < 1.
    """
    if rank is None:
        expected = f"a tuple of {what}, without the batch axis"
    else:
        dims = ", ".join(["int"] * rank)
        expected = f"a tuple of {rank} {what} ({dims}), without the batch axis"
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str | bytes)
        or not all(_is_int(v) for v in value)
    ):
        raise invalid_type(name, expected, value)
    if (rank is not None and len(value) != rank) or not value or any(v < 1 for v in value):
        raise invalid_value(name, expected, value)
    return tuple(int(v) for v in value)


def check_image_tensor(name: str, value: object) -> int:
    """Checks `value` is a rank-4 (batch, height, width, channels) KerasTensor.

    Returns:
        The number of channels, which must be known.
    """
    import keras

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
