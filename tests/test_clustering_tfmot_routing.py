"""tf_keras models go to tfmot's clustering API behind tfslim's calls."""

import os

import numpy as np
import pytest

import tfslim


@pytest.fixture
def tf_keras_model():
    import tf_keras

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Conv2D(4, 3, input_shape=(8, 8, 1)),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(10),
        ]
    )
    return model


def test_cluster_weights_and_strip_route_to_tfmot(tf_keras_model):
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    clustered = tfslim.cluster_weights(tf_keras_model, 4, init="linear")
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    names = [type(layer).__name__ for layer in clustered.layers]
    assert names[0] == names[2] == "ClusterWeights"  # tfmot wraps every layer it can
    stripped = tfslim.strip_clustering(clustered)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Flatten", "Dense"]
    for layer in (stripped.layers[0], stripped.layers[2]):
        assert np.unique(layer.kernel.numpy()).size <= 4


def test_cluster_preserving_qat_routes_to_tfmot(tf_keras_model):
    stripped = tfslim.strip_clustering(tfslim.cluster_weights(tf_keras_model, 4))
    cqat = tfslim.quantize_model(stripped, preserve="clusters")
    assert "QuantizeWrapperV2" in [type(layer).__name__ for layer in cqat.layers]
    assert tfslim.is_quantized_model(cqat)


def test_skip_is_refused_for_tf_keras(tf_keras_model):
    with pytest.raises(ValueError, match="skip.*tf_keras.*Received: skip=\\['dense'\\]"):
        tfslim.cluster_weights(tf_keras_model, 4, skip=["dense"])
