"""Tests for tfslim.architectures.build_mnist1d_cnn, the distillation benchmark's models."""

import keras
import numpy as np
import pytest

from tfslim.architectures import build_mnist1d_cnn


@pytest.mark.parametrize(("width", "params"), [(8, 1514), (48, 28234)])
def test_parameter_count_and_logits_output(width, params):
    model = build_mnist1d_cnn(width=width)
    assert model.count_params() == params
    assert tuple(model.output.shape) == (None, 10)
    outputs = model.predict(np.zeros((2, 40, 1), "float32"), verbose=0)
    assert outputs.dtype == np.float32
    assert [layer.name for layer in model.layers[1:]] == [
        "conv1",
        "conv2",
        "conv3",
        "flatten",
        "logits",
    ]


def test_depth_adds_stride_one_convolutions_before_the_two_strided_ones():
    deep = build_mnist1d_cnn(width=8, depth=5)
    convs = [layer for layer in deep.layers if layer.name.startswith("conv")]
    assert [c.name for c in convs] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [c.strides[0] for c in convs] == [1, 1, 1, 2, 2]
    # The Dense layer sees the same 10 steps as the default depth's: only convolutions add.
    added = 2 * (8 * 8 * 5 + 8)
    assert deep.count_params() == build_mnist1d_cnn(width=8).count_params() + added
    assert tuple(deep.output.shape) == (None, 10)


def test_batch_norm_dropout_and_softmax():
    model = build_mnist1d_cnn(width=4, batch_norm=True, dropout=0.5, softmax=True)
    names = {type(layer).__name__ for layer in model.layers}
    assert {"BatchNormalization", "Dropout"} <= names
    x = np.random.default_rng(0).normal(size=(3, 40, 1)).astype("float32")
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert all(layer.use_bias is False for layer in model.layers if "conv" in layer.name)


def test_saves_and_loads(tmp_path):
    model = build_mnist1d_cnn(width=4)
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.ones((2, 40, 1), "float32")
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, r"argument `width`\. Expected an int >= 1\. Received: width=0"),
        ({"kernel_size": 2.5}, r"`kernel_size`\. Expected an int >= 1\. Received: kernel_size=2.5"),
        ({"depth": 0}, r"argument `depth`\. Expected an int >= 1\. Received: depth=0"),
        ({"dropout": 1.0}, r"`dropout`\. Expected a float in \[0, 1\)\. Received: dropout=1.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_mnist1d_cnn(**kwargs)
