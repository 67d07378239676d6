"""Routes legacy `tf_keras` models to tfmot behind tfslim's clustering API.

tfmot 0.8 only clusters `tf_keras` (Keras 2) models. It is imported through
`tfslim._compat.import_tfmot`, which leaves the process environment as it was.
"""

from __future__ import annotations

from tfslim._compat import import_tfmot

# tfslim's init names -> tfmot's CentroidInitialization members.
_INITS = {
    "kmeans++": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density": "DENSITY_BASED",
    "random": "RANDOM",
}


def cluster_tf_keras(model, number_of_clusters, *, init, preserve_sparsity, per_channel, skip):
    """`tfmot.clustering.keras.cluster_weights` with tfslim's arguments."""
    if skip:
        raise ValueError(
            "Argument `skip` is not supported for tf_keras models (they are clustered by "
            "tfmot, which wraps every clusterable layer). Cluster individual layers with "
            f"`tfslim.cluster_weights(layer, ...)` instead. Received: skip={skip!r}"
        )
    clustering = import_tfmot().clustering.keras
    return clustering.cluster_weights(
        model,
        number_of_clusters=number_of_clusters,
        cluster_centroids_init=getattr(clustering.CentroidInitialization, _INITS[init]),
        preserve_sparsity=preserve_sparsity,
        cluster_per_channel=per_channel,
    )


def strip_tf_keras(model):
    return import_tfmot().clustering.keras.strip_clustering(model)


def quantize_tf_keras_preserving_clusters(model, *, preserve_sparsity: bool):
    """tfmot's clustering-preserving QAT (CQAT, or PCQAT with `preserve_sparsity`)."""
    tfmot = import_tfmot()
    qk = tfmot.quantization.keras
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
        preserve_sparsity=preserve_sparsity
    )
    return qk.quantize_apply(qk.quantize_annotate_model(model), scheme)
