"""Keras outputs to compare a converted model with, traced once per model."""

import numpy as np

__all__ = ["BATCH_SIZE", "keras_predict"]

# Every call runs batches of this one size, the last padded with copies of the final
# sample, so a model's predict step is traced once whatever the number of samples. With
# `batch_size=len(x)` here and 256 there, each new remainder retraced it (TensorFlow's
# "triggered tf.function retracing" warnings in the demo), and tracing costs seconds.
BATCH_SIZE = 32


def keras_predict(model, x: np.ndarray):
    """`model.predict(x)` in fixed-size batches: an array, or a list for several outputs."""
    x = np.asarray(x)
    n = len(x)
    pad = -n % BATCH_SIZE if n else 0
    if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    outputs = model.predict(x, batch_size=BATCH_SIZE, verbose=0)
    if isinstance(outputs, list | tuple):
        return [np.asarray(o)[:n] for o in outputs]
    return np.asarray(outputs)[:n]
