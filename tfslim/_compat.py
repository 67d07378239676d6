"""Which Keras an object belongs to (decided without importing tf_keras), and tfmot
imported without changing the process environment."""

import os
import warnings


def is_tf_keras(obj) -> bool:
    """True for instances of `tf_keras` classes, user subclasses of them included.

    Looking at the whole class hierarchy (not just `type(obj).__module__`) matters: a
    user's `class MyModel(tf_keras.Model)` lives in the user's own module.
    """
    return any(c.__module__.startswith("tf_keras") for c in type(obj).__mro__)


def import_tfmot():
    """Returns `tensorflow_model_optimization` without leaving `TF_USE_LEGACY_KERAS` set.

    tfmot 0.8 sets `TF_USE_LEGACY_KERAS=1` in the process environment when imported (it only
    works with `tf_keras`); the user's value is restored right after the import.
    """
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        with warnings.catch_warnings():
            # tfmot 0.8 compares versions with the deprecated distutils on import.
            warnings.simplefilter("ignore", DeprecationWarning)
            import tensorflow_model_optimization as tfmot
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot
