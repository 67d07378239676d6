"""The digits CNN that the demo, the tuner's teacher and the benchmarks train."""

__all__ = ["build_digits_cnn"]


def build_digits_cnn(*, width: int = 32, dense_units: int = 96, dropout: float = 0.25):
    """A small CNN for 8x8 digits, about 75k parameters at the default width.

    Args:
        width: int. Filters of the first convolution (the second has twice as many).
            Defaults to `32`.
        dense_units: int. Units of the hidden Dense layer. Defaults to `96`.
        dropout: float. Dropout rate before the hidden Dense layer. Defaults to `0.25`.

    Returns:
        An uncompiled `keras.Model` with softmax outputs over 10 classes.
    """
    import keras

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="valid", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(dense_units, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")
