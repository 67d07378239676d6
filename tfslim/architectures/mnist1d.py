"""A 1-D CNN for MNIST-1D, at any width: the teacher and students of the distillation runs."""

__all__ = ["build_mnist1d_cnn"]


def _check(argument: str, value, expected: str, ok: bool) -> None:
    if not ok:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected {expected}. "
            f"Received: {argument}={value!r}"
        )


def build_mnist1d_cnn(
    *,
    width: int = 32,
    kernel_size: int = 5,
    batch_norm: bool = False,
    dropout: float = 0.0,
    softmax: bool = False,
    depth: int = 3,
):
    """A Conv1D classifier for MNIST-1D sequences of shape (40, 1), over 10 classes.

    `depth` (by default three) `Conv1D(width, kernel_size)` layers, the last two with
    stride 2, a flatten and a final `Dense(10)`: the shape of the paper's CNN (Greydanus
    2020); a deeper one has more stride-1 layers in front, so its Dense layer keeps its
    size. Size shows in quality on this data: 1,514 parameters at `width=8`, 28,234 at `width=48`.

    Args:
        width: int >= 1. Filters of every convolution. Defaults to `32`.
        kernel_size: int >= 1. Kernel length of every convolution. Defaults to `5`.
        batch_norm: bool. Batch normalization after each convolution (before its ReLU).
            Defaults to `False`.
        dropout: float in [0, 1). Dropout rate before the final Dense layer. Defaults to `0.0`.
        softmax: bool. End in a softmax (probabilities) instead of logits. Defaults to
            `False` (logits, as Keras recommends for cross-entropy).
        depth: int >= 1. Number of convolutions (`grow_improve_shrink` grows it).
            Defaults to `3`.

    Returns:
        An uncompiled `keras.Model` named `"mnist1d_cnn"`; its layers are named `conv1`
        to `conv<depth>` (`conv3` by default), `flatten` and `logits`, so intermediate
        layers can be distilled by name.

    Raises:
        ValueError: a width, kernel size or depth below 1, or a dropout rate out of range.
    """
    import keras

    for argument, value in (("width", width), ("kernel_size", kernel_size), ("depth", depth)):
        _check(
            argument,
            value,
            "an int >= 1",
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        )
    _check(
        "dropout",
        dropout,
        "a float in [0, 1)",
        isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1,
    )
    inputs = keras.Input((40, 1), name="sequence")
    x = inputs
    strides_of = (1,) * max(0, depth - 2) + (2,) * min(2, depth)
    for index, strides in enumerate(strides_of, start=1):
        x = keras.layers.Conv1D(
            width,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=not batch_norm,
            activation=None if batch_norm else "relu",
            name=f"conv{index}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
            x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(10, activation="softmax" if softmax else None, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist1d_cnn")
