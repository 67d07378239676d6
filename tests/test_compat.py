import numpy as np
import pytest

from tfslim._compat import is_tf_keras


def _user_tf_keras_model():
    import tf_keras

    class UserModel(tf_keras.Model):  # Defined here, so its module is this test file.
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = UserModel()
    model(np.zeros((1, 4), "float32"))
    return model


def test_is_tf_keras_sees_user_subclasses_and_not_keras_3():
    import keras
    import tf_keras

    user = _user_tf_keras_model()
    assert type(user).__module__ == __name__
    assert is_tf_keras(user)
    assert is_tf_keras(tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)]))
    assert is_tf_keras(tf_keras.layers.Dense(1))
    assert not is_tf_keras(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    assert not is_tf_keras(np.zeros(2))


def test_a_user_tf_keras_model_gets_the_tf_keras_message():
    import keras

    import tfslim

    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="tf_keras models cannot be distilled"):
        tfslim.Distiller(teacher=_user_tf_keras_model(), student=student)
