import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfslim import _registration  # noqa: E402


def _seed_keras():
    """Seeds Keras and TensorFlow, leaving Python's and NumPy's generators where they were."""
    import keras

    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(0)
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def _build_optimizers_before_the_first_step():
    """Makes `fit` build the optimizer eagerly, after every callback's `on_train_begin`.

    Keras 3 builds the optimizer inside the first traced train step; because that trace
    creates variables (Adam's moments), TensorFlow traces the whole step a second time. That
    retrace is most of a short `fit`'s time. Building the optimizer right before the first
    step, over the variables that step would use, gives the same variables without it; what
    tfslim's callbacks see in `on_train_begin` is unchanged (the build runs after them).
    """
    import keras

    class BuildOptimizer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            model = self.model
            optimizer = getattr(model, "optimizer", None)
            if optimizer is None or getattr(optimizer, "built", True) or not model.built:
                return
            if model.trainable_variables:
                with model.distribute_strategy.scope():
                    optimizer.build(model.trainable_variables)

    fit = keras.Model.fit

    @functools.wraps(fit)
    def fit_with_a_built_optimizer(self, *args, callbacks=None, **kwargs):
        if len(args) > 5 or isinstance(callbacks, keras.callbacks.CallbackList):
            return fit(self, *args, callbacks=callbacks, **kwargs)  # Callbacks not a list.
        return fit(self, *args, callbacks=[*(callbacks or []), BuildOptimizer()], **kwargs)

    keras.Model.fit = fit_with_a_built_optimizer


_registration.call_after_keras_import(_build_optimizers_before_the_first_step)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from seed 0, without importing Keras for tests that never use it.

    Python's and NumPy's generators are seeded before the test. Keras and TensorFlow are seeded
    now if they are already imported, else the moment the test first imports Keras (before any
    Keras randomness is drawn). So a test sees the same random numbers whether it runs alone or
    after other tests have imported Keras.
    """
    random.seed(0)
    np.random.seed(0)
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        _seed_keras()
    else:
        _registration.call_after_keras_import(_seed_keras)
    yield
    _registration.cancel(_seed_keras)


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
