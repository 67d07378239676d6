"""Argument checks shared across tfslim, with the message shape used everywhere: the
argument's name, the value received and what was expected."""


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Returns `value` if it is an int (not a bool) >= `minimum`, else raises `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    return value
