"""Tests for clustering-preserving QAT: `tfslim.quantize_model(model, preserve="clusters")`."""

import keras
import numpy as np
import pytest

import tfslim
from tfslim.clustering import distinct_values
from tfslim.clustering.cluster_preserve import ClusterPreservingQuantizeWrapper


def _model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs)


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, n)


def _clustered(k=6, zeros=False):
    model = _model()
    if zeros:
        kernel = model.get_layer("logits").kernel
        value = kernel.numpy()
        value[::3] = 0.0
        kernel.assign(value)
    return tfslim.cluster_weights(model, k, preserve_sparsity=zeros)


def _wrappers(model):
    return {
        layer.name: layer
        for layer in model.layers
        if isinstance(layer, ClusterPreservingQuantizeWrapper)
    }


def _effective_kernels(model):
    return {
        name: [np.asarray(value) for _, value in layer.clustered_kernels()]
        for name, layer in _wrappers(model).items()
    }


def test_starts_as_plain_qat_of_the_stripped_model():
    clustered = _clustered()
    cqat = tfslim.quantize_model(clustered, preserve="clusters")
    assert sorted(_wrappers(cqat)) == ["conv", "logits"]
    plain = tfslim.quantize_model(tfslim.strip_clustering(clustered))
    x, _ = _data()
    np.testing.assert_array_equal(cqat.predict(x, verbose=0), plain.predict(x, verbose=0))
    assert tfslim.is_quantized_model(cqat)
    assert tfslim.quantization.float_layers(cqat) == []


@pytest.mark.slow
def test_fit_moves_centroids_but_keeps_assignments_and_zeros():
    cqat = tfslim.quantize_model(_clustered(zeros=True), preserve="clusters")
    wrapper = _wrappers(cqat)["logits"]
    _, centroids, assignments = wrapper._clusters[0]
    before_c, before_a = centroids.numpy().copy(), assignments.numpy().copy()
    zeros = before_c[before_a] == 0
    assert zeros.sum() > 0
    cqat.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x, y = _data()
    cqat.fit(x, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(assignments.numpy(), before_a)
    assert not np.allclose(centroids.numpy(), before_c)
    kernel = _effective_kernels(cqat)["logits"][0]
    np.testing.assert_array_equal(kernel[zeros], 0.0)
    assert np.count_nonzero(kernel[~zeros]) == (~zeros).sum()
    assert distinct_values(kernel) <= 6


@pytest.mark.slow
def test_int8_kernels_keep_the_cluster_count():
    cqat = tfslim.quantize_model(_clustered(k=5), preserve="clusters")
    cqat.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    cqat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    flatbuffer = tfslim.convert(cqat, target="mcu").flatbuffer
    kernels = int8_kernels(flatbuffer)
    assert len(kernels) == 2
    for kernel, per_channel in kernels:
        # Conv is per channel (batch norm folded); Dense per tensor or per channel.
        rows = kernel.reshape(kernel.shape[0], -1) if per_channel else kernel.reshape(1, -1)
        assert max(np.unique(row).size for row in rows) <= 5


def int8_kernels(flatbuffer: bytes) -> list:
    """(int8 weight array, per_channel) of every CONV_2D / FULLY_CONNECTED filter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(flatbuffer))
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            continue
        detail = interpreter._get_tensor_details(op["inputs"][1], 0)
        scales = detail["quantization_parameters"]["scales"]
        found.append((interpreter.get_tensor(detail["index"]), len(scales) > 1))
    return found


def test_keras_round_trip(tmp_path):
    cqat = tfslim.quantize_model(_clustered(), preserve="clusters")
    path = tmp_path / "cqat.keras"
    cqat.save(path)
    loaded = keras.saving.load_model(path)
    x, _ = _data()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), cqat.predict(x, verbose=0))
    for name, kernels in _effective_kernels(loaded).items():
        for got, want in zip(kernels, _effective_kernels(cqat)[name], strict=True):
            np.testing.assert_array_equal(got, want)


def test_config_round_trip():
    wrapper = _wrappers(tfslim.quantize_model(_clustered(), preserve="clusters"))["logits"]
    copy = ClusterPreservingQuantizeWrapper.from_config(wrapper.get_config())
    assert copy.get_config() == wrapper.get_config()
    assert copy.get_config()["centroids"] == {"kernel": 6}


def test_invalid_preserve_and_unclustered_model():
    with pytest.raises(ValueError, match="Received: preserve='weights'"):
        tfslim.quantize_model(_model(), preserve="weights")
    with pytest.raises(ValueError, match="has no clustered kernel"):
        tfslim.quantize_model(_model(), preserve="clusters")


def _int8_accuracy(flatbuffer, x, y):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(flatbuffer))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    hits = 0
    for sample, label in zip(x, y, strict=True):
        interpreter.set_tensor(inp["index"], np.round(sample[None] / scale + zero).astype(np.int8))
        interpreter.invoke()
        hits += int(interpreter.get_tensor(out["index"]).argmax() == label)
    return hits / len(y)


@pytest.mark.slow
def test_prune_cluster_qat_digits_cnn_int8(digits):
    """Pruning 50% -> 16 clusters (zeros kept) -> CQAT: int8 TFLite with <= 16 values per
    kernel (per channel for per-channel kernels), the zeros kept, within 1 point of float."""
    x_train, y_train, x_test, y_test = digits
    keras.utils.set_random_seed(0)

    def compiled(model, lr):
        model.compile(
            keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model

    model = compiled(tfslim.architectures.build_digits_cnn(), 2e-3)
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    schedule = tfslim.ConstantSparsity(0.5, begin_step=0, frequency=50)
    pruned = compiled(tfslim.prune_low_magnitude(model, pruning_schedule=schedule), 1e-3)
    pruned.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    pruned = tfslim.strip_pruning(pruned)
    clustered = compiled(tfslim.cluster_weights(pruned, 16, preserve_sparsity=True), 1e-3)
    clustered.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    cqat = compiled(tfslim.quantize_model(clustered, preserve="clusters"), 1e-4)
    cqat.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    flatbuffer = tfslim.convert(cqat, target="mcu").flatbuffer

    assert _int8_accuracy(flatbuffer, x_test, y_test) >= float_accuracy - 0.01
    kernels = int8_kernels(flatbuffer)
    assert len(kernels) == 4
    pruned_kernels = [layer.kernel.numpy() for layer in pruned.layers if hasattr(layer, "kernel")]
    for (kernel, per_channel), source in zip(kernels, pruned_kernels, strict=True):
        rows = kernel.reshape(kernel.shape[0], -1) if per_channel else kernel.reshape(1, -1)
        assert max(np.unique(row).size for row in rows) <= 16
        # TFLite stores (out, ...) where Keras stores (..., out): every pruned zero is kept.
        layout = np.moveaxis(source, -1, 0)
        assert np.all(kernel[layout == 0] == 0)
        assert np.mean(kernel == 0) >= 0.5
