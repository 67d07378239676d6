"""tfslim's callbacks leave Keras free to start a train step before the last one's logs arrive.

Keras dispatches the batch-end hooks asynchronously only when no callback overrides
`on_train_batch_end` (or `on_batch_end`); one that does makes every step wait for the previous
step's logs, about 8% of a small model's `fit` on a CPU.
"""

import keras
import pytest

import tfslim


@pytest.mark.parametrize("name", tfslim.callbacks.__all__)
def test_no_batch_end_hook(name):
    cls = getattr(tfslim.callbacks, name)
    assert issubclass(cls, keras.callbacks.Callback)
    for hook in ("on_train_batch_end", "on_batch_end"):
        assert getattr(cls, hook) is getattr(keras.callbacks.Callback, hook), (name, hook)
