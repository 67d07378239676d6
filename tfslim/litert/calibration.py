"""Calibration data for full-integer conversion: validated, one sample per batch.

Accepts what Keras users have at hand: a NumPy array, an `(x, y)` tuple, a
`tf.data.Dataset`, an iterable or generator function of batches, and for models with
several inputs a list of arrays (one per input).
"""

import numpy as np

__all__ = ["calibration_samples"]


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
    return [[a[i : i + 1].astype(np.float32) for a in arrays] for i in range(min(n, steps))]


def calibration_samples(data, shapes, steps):
    """Turns calibration data into a list of float32 batches of one sample each."""
    import tensorflow as tf

    if shapes and len(shapes) > 1:
        return _multi_input_samples(data, shapes, steps)

    if isinstance(data, tuple) and len(data) == 2 and not callable(data[0]):
        data = data[0]  # (x, y)
    if isinstance(data, tf.data.Dataset):
        batches = data.take(steps).as_numpy_iterator()
    elif isinstance(data, np.ndarray | list) and not callable(data):
        batches = [np.asarray(data)]
    elif callable(data):
        batches = data()
    elif hasattr(data, "__iter__"):
        batches = data
    else:
        raise TypeError(
            "Invalid type for argument `calibration_data`. Expected a NumPy array, an (x, y) "
            "tuple, a tf.data.Dataset, or a generator of batches. Received: calibration_data "
            f"of type {type(data).__name__}"
        )
    expected = shapes[0] if shapes else None
    samples = []
    for batch in batches:
        if isinstance(batch, tuple | list) and len(batch) == 2:
            batch = batch[0]
        batch = np.asarray(batch)
        if batch.dtype.kind not in "fiub":
            raise ValueError(
                "Invalid value for argument `calibration_data`. Expected numeric samples. "
                f"Received: dtype={batch.dtype}"
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
            samples.append(sample[None].astype(np.float32))
            if len(samples) >= steps:
                return samples
    if not samples:
        raise ValueError(
            "Invalid value for argument `calibration_data`. Expected at least one sample. "
            "Received: an empty dataset"
        )
    return samples
