"""Tests for tfslim.clustering: ClusterWeights, cluster_weights, strip_clustering."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfslim
from tfslim.clustering import ClusterWeights, centroids, distinct_values


def _cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.Flatten()(x)
    x = x * 2.0  # An operation node, not a layer.
    outputs = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs)


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, n)


def _kernels(model):
    return {
        layer.name: (layer, w.numpy())
        for layer in model._flatten_layers(include_self=False)
        for w in layer.trainable_weights
        if w.name in ("kernel", "depthwise_kernel")
    }


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [False, True])
def test_strip_leaves_at_most_k_values_per_kernel_after_fit(per_channel):
    model = _cnn()
    clustered = tfslim.cluster_weights(model, 6, per_channel=per_channel)
    assert [type(layer).__name__ for layer in clustered.layers].count("ClusterWeights") == 3
    clustered.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    clustered.fit(x, y, epochs=2, batch_size=16, verbose=0)
    plain = tfslim.strip_clustering(clustered)
    assert not any(isinstance(layer, ClusterWeights) for layer in plain._flatten_layers())
    np.testing.assert_array_equal(plain.predict(x, verbose=0), clustered.predict(x, verbose=0))
    for name, (_, kernel) in _kernels(plain).items():
        depthwise = name == "dw"
        assert distinct_values(kernel, per_channel=per_channel, depthwise=depthwise) <= 6
    if not per_channel:
        # Per tensor: every kernel has exactly k values after k-means on enough weights.
        assert distinct_values(_kernels(plain)["logits"][1]) == 6


def test_per_channel_kernel_has_more_values_per_tensor_than_per_channel():
    clustered = tfslim.cluster_weights(_cnn(), 4, per_channel=True)
    kernel = _kernels(tfslim.strip_clustering(clustered))["conv"][1]
    assert distinct_values(kernel, per_channel=True) == 4
    assert distinct_values(kernel) > 4


def test_clustering_starts_close_to_the_float_model_and_keeps_it_untouched():
    model = _cnn()
    before = [w.numpy().copy() for w in model.weights]
    clustered = tfslim.cluster_weights(model, 32)
    x, _ = _data()
    error = np.abs(clustered.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    assert error < 0.05
    for w, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), old)


def test_centroids_train_with_the_summed_gradient_of_their_weights():
    dense = ClusterWeights(keras.layers.Dense(3, use_bias=False), 2, init="linear")
    keras.Sequential([keras.Input((4,)), dense])
    state = dense.clustered[0]
    x = tf.constant(np.random.default_rng(1).random((5, 4), dtype=np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(dense(x, training=True) ** 2)
    grads = tape.gradient(loss, [state.centroids, state.variable])
    # d loss / d weight, then summed per cluster, is the centroid gradient.
    kernel = dense.strip_values()[state.variable.path]
    y = x @ kernel
    weight_grad = tf.transpose(x) @ (2 * y)
    index = state.assignments.numpy().ravel()
    expected = np.bincount(index, weights=weight_grad.numpy().ravel(), minlength=2)
    np.testing.assert_allclose(grads[0].numpy().ravel(), expected, rtol=1e-5)
    # Straight-through: the original weight gets its own gradient.
    np.testing.assert_allclose(grads[1].numpy(), weight_grad.numpy(), rtol=1e-5)


def test_assignments_follow_the_weights_in_training_steps_only():
    dense = ClusterWeights(keras.layers.Dense(2, use_bias=False), 2, init="linear")
    keras.Sequential([keras.Input((2,)), dense])
    state = dense.clustered[0]
    state.centroids.assign([[-1.0, 1.0]])
    state.variable.assign([[-0.9, 0.8], [0.7, -0.2]])
    dense(tf.ones((1, 2)), training=False)
    before = state.assignments.numpy().copy()
    dense(tf.ones((1, 2)), training=True)
    np.testing.assert_array_equal(state.assignments.numpy(), [[0, 1], [1, 0]])
    assert not np.array_equal(before, state.assignments.numpy())


@pytest.mark.slow
def test_preserve_sparsity_keeps_zeros_zero_through_fit():
    model = _cnn()
    kernel = model.get_layer("logits").kernel
    value = kernel.numpy()
    value[::2] = 0.0
    kernel.assign(value)
    clustered = tfslim.cluster_weights(model, 8, preserve_sparsity=True)
    clustered.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    x, y = _data()
    clustered.fit(x, y, epochs=2, batch_size=16, verbose=0)
    stripped = tfslim.strip_clustering(clustered).get_layer("logits").kernel.numpy()
    np.testing.assert_array_equal(stripped[::2], 0.0)
    assert np.count_nonzero(stripped[1::2]) == stripped[1::2].size
    assert distinct_values(stripped) <= 8


@pytest.mark.parametrize("init", centroids.INITS)
def test_every_init_gives_k_sorted_centroids_within_the_weight_range(init):
    values = np.random.default_rng(0).normal(size=5000)
    table = centroids.initial_centroids(values, 16, init)
    assert table.shape == (16,) and table.dtype == np.float32
    assert np.all(np.diff(table) >= 0)
    assert values.min() - 1e-6 <= table[0] and table[-1] <= values.max() + 1e-6


def test_kmeans_beats_linear_init_on_clustered_data():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(c, 0.01, 500) for c in (-1.0, 0.0, 0.1, 2.0)])

    def error(init):
        table = centroids.initial_centroids(values, 4, init)
        return np.abs(values - table[centroids.nearest_numpy(values, table)]).mean()

    assert error("kmeans++") < 0.02 < error("linear")


@pytest.mark.parametrize("compiled", [False, True])
def test_graph_nearest_matches_numpy(compiled):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 100)).astype(np.float32)
    table = rng.normal(size=(3, 7)).astype(np.float32)  # unsorted
    got = centroids.nearest(tf.constant(values), tf.constant(table), compiled=compiled).numpy()
    for r in range(3):
        np.testing.assert_array_equal(got[r], centroids.nearest_numpy(values[r], table[r]))


@pytest.mark.slow
def test_keras_round_trip_keeps_centroids_assignments_and_predictions(tmp_path):
    clustered = tfslim.cluster_weights(_cnn(), 5, preserve_sparsity=True, per_channel=True)
    clustered.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    clustered.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "clustered.keras"
    clustered.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0))
    wrapper = loaded.get_layer("cluster_logits")
    assert wrapper.get_config()["number_of_clusters"] == 5
    assert wrapper.per_channel and wrapper.preserve_sparsity
    original = clustered.get_layer("cluster_logits")
    for new, old in zip(wrapper.clustered, original.clustered, strict=True):
        np.testing.assert_array_equal(new.centroids.numpy(), old.centroids.numpy())
        np.testing.assert_array_equal(new.assignments.numpy(), old.assignments.numpy())
    # Resume: training continues from the saved state, still clustered.
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    kernel = tfslim.strip_clustering(loaded).get_layer("logits").kernel.numpy()
    assert distinct_values(kernel, per_channel=True) <= 5


def test_config_round_trip():
    wrapper = ClusterWeights(keras.layers.Dense(4), 8, init="density", per_channel=True)
    copy = ClusterWeights.from_config(wrapper.get_config())
    assert copy.get_config() == wrapper.get_config()
    assert isinstance(copy.layer, keras.layers.Dense)


def test_skip_by_name_and_class():
    clustered = tfslim.cluster_weights(_cnn(), 4, skip=["logits", keras.layers.DepthwiseConv2D])
    names = [type(layer).__name__ for layer in clustered.layers]
    assert names.count("ClusterWeights") == 1
    assert isinstance(clustered.get_layer("logits"), keras.layers.Dense)


@pytest.mark.slow
def test_mirrored_strategy_fit_keeps_clusters():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        clustered = tfslim.cluster_weights(_cnn(), 4)
        clustered.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    clustered.fit(x, y, epochs=1, batch_size=16, verbose=0)
    kernel = tfslim.strip_clustering(clustered).get_layer("logits").kernel.numpy()
    assert distinct_values(kernel) <= 4


@pytest.mark.parametrize("preserve_sparsity", [False, True])
def test_xla_compiled_fit_keeps_clusters(preserve_sparsity):
    # `compile(jit_compile=True)`: the whole step, centroid gradient included, goes to XLA.
    clustered = tfslim.cluster_weights(_cnn(), 4, preserve_sparsity=preserve_sparsity)
    clustered.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    x, y = _data()
    before = clustered.get_layer("cluster_logits").clustered[0].centroids.numpy()
    clustered.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after = clustered.get_layer("cluster_logits").clustered[0].centroids.numpy()
    assert not np.array_equal(before, after)  # The centroids trained.
    kernel = tfslim.strip_clustering(clustered).get_layer("logits").kernel.numpy()
    assert distinct_values(kernel) <= 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"number_of_clusters": 1}, ValueError, "number_of_clusters.*Received: number_of_clus"),
        ({"number_of_clusters": 2.5}, TypeError, "Expected an int >= 2"),
        ({"number_of_clusters": 4, "init": "kmeans"}, ValueError, "Received: init='kmeans'"),
        ({"number_of_clusters": 4, "skip": ["nope"]}, ValueError, r"no layer named \['nope'\]"),
        ({"number_of_clusters": 4, "skip": 3}, TypeError, "Received: skip=3"),
        ({"number_of_clusters": 2, "preserve_sparsity": True}, ValueError, "pinned zero"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tfslim.cluster_weights(_cnn(), **kwargs)


def test_refuses_subclassed_and_already_clustered_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="subclassed model"):
        tfslim.cluster_weights(Net(), 4)
    clustered = tfslim.cluster_weights(_cnn(), 4)
    with pytest.raises(ValueError, match="already clustered"):
        tfslim.cluster_weights(clustered, 4)
    with pytest.raises(ValueError, match="no clusterable weight"):
        keras.Sequential([keras.Input((4,)), ClusterWeights(keras.layers.ReLU(), 4)])


def test_subclassed_model_clusters_layers_it_wraps_itself():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tfslim.cluster_weights(keras.layers.Dense(4), 3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net.compile("adam", "mse")
    net.fit(np.ones((8, 5)), np.ones((8, 4)), epochs=1, verbose=0)
    value = net.dense.strip_values()[net.dense.clustered[0].variable.path]
    assert distinct_values(value) <= 3


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("rows, k, n", [(1, 16, 1000), (4, 8, 50)])
def test_centroid_lookup_has_the_gradient_of_a_gather(rows, k, n, compiled):
    rng = np.random.default_rng(0)
    table = tf.Variable(rng.standard_normal((rows, k)).astype("float32"))
    index = tf.constant(rng.integers(0, k, (rows, n)).astype("int32"))
    upstream = tf.constant(rng.standard_normal((rows, n)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        looked_up = centroids.lookup(table, index, compiled=compiled)
        gathered = tf.gather(table, index, batch_dims=1)
        losses = [tf.reduce_sum(v * upstream) for v in (looked_up, gathered)]
    np.testing.assert_array_equal(looked_up.numpy(), gathered.numpy())
    mine, reference = (tf.convert_to_tensor(tape.gradient(loss, table)) for loss in losses)
    np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)
