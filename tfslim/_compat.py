"""Which Keras an object belongs to, decided without importing tf_keras."""


def is_tf_keras(obj) -> bool:
    """True for instances of `tf_keras` classes, user subclasses of them included.

    Looking at the whole class hierarchy (not just `type(obj).__module__`) matters: a
    user's `class MyModel(tf_keras.Model)` lives in the user's own module.
    """
    return any(c.__module__.startswith("tf_keras") for c in type(obj).__mro__)
