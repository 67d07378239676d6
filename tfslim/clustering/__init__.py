"""Weight clustering for Keras 3 models, and clustering-preserving QAT.

`cluster_weights` wraps layers in `ClusterWeights`: each kernel becomes `number_of_clusters`
trainable centroids plus per-weight assignments, trained inside the compiled step.
`strip_clustering` returns a plain model whose kernels hold only the centroid values, and
`tfslim.quantize_model(model, preserve="clusters")` fine-tunes it with int8 fake quantization
while keeping every weight on its centroid. tf_keras models go to tfmot's clustering API.
"""

from tfslim.clustering.cluster import cluster_weights, distinct_values, strip_clustering
from tfslim.clustering.cluster_wrapper import ClusterWeights

__all__ = [
    "ClusterWeights",
    "cluster_weights",
    "distinct_values",
    "strip_clustering",
]
