"""Trained-like weights for sizing an untrained model's converted file.

A freshly built model has all-zero biases and identity batch norms (gamma 1, beta 0,
mean 0, variance 1). After batch-norm folding every bias is then zero, and the TFLite
converter stores identical constant buffers once and drops zero biases altogether, so an
untrained model converts to a file 5-20% smaller than the same model after training.
`randomize_weights` gives those variables values like training would, so size and arena
figures measured on untrained models (reference files, footprint-aware search) hold for
trained ones.
"""

import keras
import numpy as np

from tfslim._checks import check_int

__all__ = ["randomize_weights"]

# Variable name -> (distribution, a, b): uniform(a, b) or normal(mean=a, std=b).
_TRAINED_LIKE = {
    "gamma": ("uniform", 0.5, 1.5),
    "moving_variance": ("uniform", 0.5, 1.5),
    "beta": ("normal", 0.0, 0.1),
    "moving_mean": ("normal", 0.0, 0.1),
    "bias": ("normal", 0.0, 0.1),
}


def randomize_weights(model: keras.Model, *, seed: int = 0) -> keras.Model:
    """Gives biases and batch-norm variables random, trained-like values, in place.

    Kernels keep their (already random) initial values. Biases and batch-norm `beta` and
    `moving_mean` are drawn from N(0, 0.1); batch-norm `gamma` and `moving_variance` from
    U(0.5, 1.5). The model is no better trained than before: use this only to measure the
    size of its converted file, never for accuracy.

    Args:
        model: keras.Model. The model to modify.
        seed: int. Seed of the random values. Defaults to `0`.

    Returns:
        `model`, for chaining.

    Raises:
        TypeError: If `model` is not a Keras model.

    Example:

    >>> from tfslim.architectures import ds_cnn
    >>> model = randomize_weights(ds_cnn(filters=8, num_blocks=1))
    >>> bool((model.get_layer("stem_conv").bias.numpy() != 0).all())
    True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`. Expected a keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        kind = _TRAINED_LIKE.get(variable.path.rsplit("/", 1)[-1])
        if kind is None:
            continue
        distribution, a, b = kind
        shape = tuple(variable.shape)
        if distribution == "uniform":
            values = rng.uniform(a, b, shape)
        else:
            values = rng.normal(a, b, shape)
        variable.assign(values.astype(variable.dtype))
    return model
