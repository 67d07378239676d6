"""Calibration data for full-integer conversion: validated, one sample per batch.

Accepts what Keras users have at hand: a NumPy array, an `(x, y)` tuple, a
`tf.data.Dataset`, an iterable or generator function of batches, and for models with
several inputs a list of arrays (one per input).
"""

import os
from collections.abc import Mapping

import numpy as np

__all__ = ["calibration_samples", "check_finite"]

_ACCEPTED = (
    "a NumPy array of samples, an (x, y) tuple, a tf.data.Dataset, or an iterable or "
    "generator function of batches"
)


def _check_container(data) -> None:
    """Refuses inputs that look iterable but are not batches (a path, a dict of features)."""
    if isinstance(data, str | bytes | os.PathLike):
        raise TypeError(
            f"Invalid type for argument `calibration_data`. Expected {_ACCEPTED}; a file is "
            "not read for you (load it first, e.g. `np.load(path)`). Received: "
            f"calibration_data={data!r} of type {type(data).__name__}"
        )
    if isinstance(data, Mapping):
        raise TypeError(
            f"Invalid type for argument `calibration_data`. Expected {_ACCEPTED}; a dict of "
            "named features is not supported (pass the array, or a list of arrays in the "
            f"model's input order). Received: calibration_data of type {type(data).__name__} "
            f"with keys {list(data)[:5]}"
        )


def check_finite(samples) -> None:
    """Raises `ValueError` if a calibration sample holds NaN or an infinity.

    The TFLite converter derives quantization scales from the observed min and max: an
    infinity makes the scale overflow (the converter then crashes the process), a NaN
    poisons the range silently. Checked before anything is exported.
    """
    bad_samples, bad_values, first = 0, 0, None
    for i, sample in enumerate(samples):
        arrays = sample if isinstance(sample, list) else [sample]
        count = sum(int(a.size - np.count_nonzero(np.isfinite(a))) for a in arrays)
        if count:
            bad_samples += 1
            bad_values += count
            if first is None:
                first = (i, count, arrays)
    if first is None:
        return
    i, count, arrays = first
    kinds = []
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        if any(test(a).any() for a in arrays):
            kinds.append(name)
    raise ValueError(
        "Invalid value for argument `calibration_data`. Expected finite numbers (quantization "
        "ranges come from the data's min and max). Received: non-finite values "
        f"({', '.join(kinds)}) in sample {i} ({count} values); {bad_values} non-finite values "
        f"in {bad_samples} of {len(samples)} samples used for calibration"
    )


def _multi_input_samples(data, shapes, steps):
    """Samples for a model with several inputs: a list of arrays, one per input."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], list | tuple):
        data = data[0]  # (x, y) with x a list of inputs
    if not isinstance(data, list | tuple) or len(data) != len(shapes):
        raise ValueError(
            f"Invalid value for argument `calibration_data`. The model has {len(shapes)} "
            f"inputs; expected a list of {len(shapes)} arrays of shapes "
            f"{[(None, *s) for s in shapes]}. Received: calibration_data of type "
            f"{type(data).__name__}"
        )
    arrays = [np.asarray(a) for a in data]
    for i, (a, shape) in enumerate(zip(arrays, shapes, strict=True)):
        if a.dtype.kind not in "fiub" or tuple(a.shape[1:]) != shape:
            raise ValueError(
                f"Invalid value for argument `calibration_data`. Expected input {i} as numeric "
                f"samples of shape {shape}. Received: shape {tuple(a.shape)}, dtype {a.dtype}"
            )
    n = min(len(a) for a in arrays)
    if n == 0:
        raise ValueError(
            "Invalid value for argument `calibration_data`. Expected at least one sample. "
            "Received: an empty dataset"
        )
    with np.errstate(over="ignore"):  # Overflow to inf is caught by check_finite.
        return [[a[i : i + 1].astype(np.float32) for a in arrays] for i in range(min(n, steps))]


def calibration_samples(data, shapes, steps):
    """Turns calibration data into a list of float32 batches of one sample each."""
    _check_container(data)
    if shapes and len(shapes) > 1:
        samples = _multi_input_samples(data, shapes, steps)
        check_finite(samples)
        return samples
    import tensorflow as tf

    if isinstance(data, tuple) and len(data) == 2 and not callable(data[0]):
        data = data[0]  # (x, y)
    if isinstance(data, tf.data.Dataset):
        batches = data.take(steps).as_numpy_iterator()
    elif isinstance(data, np.ndarray | list) and not callable(data):
        batches = [np.asarray(data)]
    elif callable(data):
        batches = data()
    elif hasattr(data, "__iter__"):
        _check_container(data)
        batches = data
    else:
        raise TypeError(
            f"Invalid type for argument `calibration_data`. Expected {_ACCEPTED}. Received: "
            f"calibration_data of type {type(data).__name__}"
        )
    expected = shapes[0] if shapes else None
    samples = []
    for batch in batches:
        if isinstance(batch, tuple | list) and len(batch) == 2:
            batch = batch[0]
        _check_container(batch)
        batch = np.asarray(batch)
        if batch.dtype.kind not in "fiub":
            raise ValueError(
                "Invalid value for argument `calibration_data`. Expected numeric samples "
                f"({_ACCEPTED}). Received: dtype={batch.dtype}"
            )
        if (
            expected is not None
            and tuple(batch.shape[-len(expected) :]) != expected
            or (expected is not None and batch.ndim not in (len(expected), len(expected) + 1))
        ):
            raise ValueError(
                "Invalid value for argument `calibration_data`. Expected samples of shape "
                f"{expected} (batches of shape (N, *{expected})). Received: shape "
                f"{tuple(batch.shape)}"
            )
        if expected is not None and batch.ndim == len(expected):
            batch = batch[None]
        for sample in batch:
            with np.errstate(over="ignore"):  # Overflow to inf is caught by check_finite.
                samples.append(sample[None].astype(np.float32))
            if len(samples) >= steps:
                check_finite(samples)
                return samples
    if not samples:
        raise ValueError(
            "Invalid value for argument `calibration_data`. Expected at least one sample. "
            "Received: an empty dataset"
        )
    check_finite(samples)
    return samples
