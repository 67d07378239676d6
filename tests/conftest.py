import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as (x_train, y_train, x_test, y_test), images 8x8x1 in [0, 1]."""
    from tfslim.datasets import load_digits_data

    return load_digits_data()


@pytest.fixture(scope="session")
def small_cnn(digits):
    """A small digits CNN (~95% test accuracy); shared, so never train or modify it."""
    import keras

    keras.utils.set_random_seed(0)
    x_train, y_train, _, _ = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="small_cnn",
    )
    model.compile(
        keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def mcu_tflite(small_cnn, digits):
    """`small_cnn` converted for the generic microcontroller target (full int8, int8 I/O)."""
    import tfslim

    return tfslim.convert(small_cnn, target="mcu", calibration_data=digits[0][:100]).flatbuffer
