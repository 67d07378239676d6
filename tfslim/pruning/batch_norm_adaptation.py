"""`reestimate_batch_norm`: refresh batch-norm moving statistics with a few forward batches.

After channels are removed (or masks change what flows through a network), the moving means
and variances that batch normalization learnt describe activations that no longer exist. Like
NNCF's `batch_norm_adaptation` and AIMET's batch-norm re-estimation, a few forward passes
in training mode, with every other layer in inference mode (no dropout, no noise) and no
weight update, replace them with the statistics of the current network: each batch
normalization averages its batch statistics over the batches (cumulative mean).
"""

from __future__ import annotations

import keras
import numpy as np

from tfslim import _keras_graph
from tfslim._checks import check_int

__all__ = ["reestimate_batch_norm"]

_NOISE = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout)


def _batches(data, batch_size: int):
    if isinstance(data, tuple | list) and len(data) in (2, 3) and hasattr(data[0], "shape"):
        data = data[0]  # (x, y) or (x, y, sample_weight)
    if hasattr(data, "shape"):
        array = np.asarray(data)
        for start in range(0, len(array), batch_size):
            yield array[start : start + batch_size]
        return
    for batch in data:
        if isinstance(batch, tuple | list):
            batch = batch[0]
        yield batch


def reestimate_batch_norm(model, data, *, steps: int = 20, batch_size: int = 64) -> int:
    """Replaces every batch normalization's moving statistics with those of `data`.

    Runs up to `steps` forward batches through `model` with batch normalization in training
    mode (frozen ones too) and dropout and noise layers off; weights other than the moving
    statistics do not change. Each batch normalization ends with the mean of its batch
    statistics over the batches.

    Args:
        model: a Keras 3 model.
        data: inputs: a NumPy array, an `(x, y)` tuple, a `tf.data.Dataset` or an iterable
            of batches (`x` or `(x, y)`).
        steps: int. Maximum number of batches. Defaults to `20`.
        batch_size: int. Batch size when `data` is an array. Defaults to `64`.

    Returns:
        The number of batches used.

    Raises:
        ValueError: for an invalid `steps` or `batch_size`, or a model without batch
            normalization.

    Example:

    >>> import keras, numpy as np, tfslim
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    >>> tfslim.reestimate_batch_norm(model, np.full((32, 4), 3.0), steps=2, batch_size=16)
    2
    >>> model.layers[0].moving_mean.numpy().round(3).tolist()
    [3.0, 3.0, 3.0, 3.0]
    """
    check_int("steps", steps, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    layers = _keras_graph.sublayers(model)
    norms = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    if not norms:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with BatchNormalization "
            f"layers. Received: model '{model.name}' without any"
        )
    saved_norms = [(la, la.momentum, la.trainable) for la in norms]
    noise = [la for la in layers if isinstance(la, _NOISE)]
    saved_noise = [(la, dict(la.__dict__)) for la in noise]
    used = 0
    try:
        for layer in noise:
            for attribute in ("rate", "stddev"):
                if hasattr(layer, attribute):
                    setattr(layer, attribute, 0.0)
        for layer in norms:
            layer.trainable = True
        for batch in _batches(data, batch_size):
            if used >= steps:
                break
            for layer in norms:
                layer.momentum = used / (used + 1.0)  # cumulative mean of batch statistics
            model(batch, training=True)
            used += 1
    finally:
        for layer, momentum, trainable in saved_norms:
            layer.momentum, layer.trainable = momentum, trainable
        for layer, state in saved_noise:
            for attribute in ("rate", "stddev"):
                if attribute in state:
                    setattr(layer, attribute, state[attribute])
    return used
