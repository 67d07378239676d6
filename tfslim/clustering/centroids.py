"""Initial centroids of a weight's clusters, and nearest-centroid assignment.

The initial centroids are computed once, in NumPy, from the trained weights when a layer is
clustered (tfmot's four methods). The assignment is graph code: it runs inside the compiled
train step on every step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfslim._checks import check_int

INITS = ("kmeans++", "linear", "density", "random")

# k-means on more than this many weights uses a random sample of them: 1-D centroids
# settle long before that, and a 2.3M-weight kernel would make clustering slow to start.
_MAX_KMEANS_SAMPLE = 200_000
_KMEANS_ITERATIONS = 30


def check_init(init) -> str:
    """Returns `init` if it names a centroid initialization, else raises ValueError."""
    if init not in INITS:
        raise ValueError(
            f"Invalid value for argument `init`. Expected one of {INITS}. Received: init={init!r}"
        )
    return init


def check_number_of_clusters(number_of_clusters) -> int:
    """Returns `number_of_clusters` if it is an int >= 2 (TypeError / ValueError otherwise)."""
    return check_int("number_of_clusters", number_of_clusters, minimum=2)


def initial_centroids(values: np.ndarray, k: int, init: str) -> np.ndarray:
    """Returns `k` sorted float32 centroids for the 1-D `values`.

    Args:
        values: the weights to cluster (flattened; may be empty).
        k: number of centroids.
        init: "kmeans++" (k-means++ seeding refined by Lloyd iterations), "linear" (evenly
            spaced between the smallest and largest weight), "density" (at evenly spaced
            quantiles, so dense regions get more centroids) or "random" (uniform between
            the smallest and largest weight; NumPy's global generator, which
            `keras.utils.set_random_seed` seeds).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.zeros(k, np.float32)
    low, high = float(values.min()), float(values.max())
    if init == "linear":
        centroids = np.linspace(low, high, k)
    elif init == "random":
        centroids = np.random.uniform(low, high, k)
    elif init == "density":
        centroids = np.quantile(values, np.linspace(0.0, 1.0, k))
    else:
        centroids = _kmeans(values, k)
    return np.sort(centroids).astype(np.float32)


def _kmeans(values: np.ndarray, k: int) -> np.ndarray:
    if values.size > _MAX_KMEANS_SAMPLE:
        values = np.random.choice(values, _MAX_KMEANS_SAMPLE, replace=False)
    # k-means++ seeding: each next centroid drawn with probability ~ squared distance.
    centroids = [values[np.random.randint(values.size)]]
    distance = (values - centroids[0]) ** 2
    for _ in range(1, k):
        total = distance.sum()
        if total <= 0:  # Fewer distinct values than clusters: reuse the last one.
            centroids.append(centroids[-1])
            continue
        pick = values[np.searchsorted(np.cumsum(distance), np.random.uniform(0, total))]
        centroids.append(pick)
        distance = np.minimum(distance, (values - pick) ** 2)
    centroids = np.sort(np.asarray(centroids))
    for _ in range(_KMEANS_ITERATIONS):
        labels = nearest_numpy(values, centroids)
        sums = np.bincount(labels, weights=values, minlength=k)
        counts = np.bincount(labels, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    return centroids


def nearest_numpy(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each value (NumPy)."""
    order = np.argsort(centroids, kind="stable")
    ordered = centroids[order]
    midpoints = (ordered[1:] + ordered[:-1]) / 2
    return order[np.searchsorted(midpoints, values)]


def nearest(values, centroids, *, compiled: bool = False):
    """Index (int32) of the nearest centroid for each row of `values` (graph code).

    Args:
        values: float tensor (rows, n): the weights of each row (one row per channel, or a
            single row for per-tensor clusters).
        centroids: float tensor (rows, k).
        compiled: bool, run the search as one XLA-compiled computation (what the train
            step uses). Defaults to `False`: plain TensorFlow ops, for graphs that are
            exported or converted.

    The centroids are sorted and each value is placed among their midpoints. TensorFlow's
    own kernels for that search and the gathers around it cost about 2 ms of CPU per step
    for the digits CNN's 75k weights; compiled, they fuse into one loop that takes under
    half of that (checked side by side outside the project's scripts), which is most of the
    difference between a clustered and a plain step.
    """
    return (_nearest_xla if compiled else _nearest)(values, centroids)


def _nearest(values, centroids):
    order = tf.argsort(centroids, axis=-1, stable=True)
    ordered = tf.gather(centroids, order, batch_dims=1)
    midpoints = (ordered[:, 1:] + ordered[:, :-1]) / 2
    position = tf.searchsorted(midpoints, values, side="left", out_type=tf.int32)
    return tf.gather(order, position, batch_dims=1)


def _gather(table, index):
    return tf.gather(table, index, batch_dims=1)


_nearest_xla = tf.function(_nearest, jit_compile=True, autograph=False)
_gather_xla = tf.function(_gather, jit_compile=True, autograph=False)


def lookup(table, index, *, compiled: bool = False):
    """`table[row, index]` for each row (graph code), with a cheap gradient to `table`.

    Args:
        table: float tensor (rows, k): the centroids.
        index: int32 tensor (rows, n): a centroid per weight.
        compiled: bool, gather in an XLA-compiled computation (see `nearest`).
            Defaults to `False`.

    The gradient of each centroid is the sum of its weights' gradients, as `tf.gather`'s
    would be; TensorFlow computes that one with `unsorted_segment_sum`, whose CPU kernel took
    several times as long as the weighted `bincount` used here for a 55k-weight kernel (most
    of a small model's clustered train step).
    """

    @tf.custom_gradient
    def gather(table):
        value = (_gather_xla if compiled else _gather)(table, index)

        def grad(upstream):
            shape = tf.shape(table)
            rows, k = shape[0], shape[1]
            bins = tf.reshape(index + tf.range(rows)[:, None] * k, [-1])
            # The raw op with its size given: `tf.math.bincount` derives the size from the
            # data, which XLA (`compile(jit_compile=True)`) cannot compile.
            summed = tf.raw_ops.DenseBincount(
                input=bins, size=rows * k, weights=tf.reshape(upstream, [-1])
            )
            return tf.reshape(summed, shape)

        return value, grad

    return gather(table)
