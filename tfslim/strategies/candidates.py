"""The candidates a strategy makes from a trained model, and how each is trained.

Every candidate starts as a copy of the model (weights included), is made smaller by its
levers (narrower by channel pruning, sparser by unstructured or m:n pruning, fewer distinct
weight values by clustering), then improved: distilled from the teacher with
quantization-aware training, so what is measured after int8 conversion is what was trained.
"""

import dataclasses

from tfslim._checks import check_float, check_int, invalid_type

# Re-exported. The lever names and their checks live in a low module that imports no Keras
# (importing anything in `tfslim.strategies` loads Keras), so the CLI checks them first.
from tfslim._levers import (
    DEFAULT_TECHNIQUES,
    MAX_CLUSTERS,
    TECHNIQUES,
    check_clusters,
    check_techniques,
)

__all__ = [
    "DEFAULT_TECHNIQUES",
    "MAX_CLUSTERS",
    "TECHNIQUES",
    "CandidateSpec",
    "check_clusters",
    "check_techniques",
    "plan_candidates",
    "train_candidate",
]


@dataclasses.dataclass(frozen=True)
class CandidateSpec:
    """The levers of one candidate.

    Args:
        name: str. Unique name, also the stem of its files.
        width: float in (0, 1]. Fraction of each prunable channel group kept.
        sparsity: float in [0, 1). Unstructured sparsity of the weights.
        m_by_n: tuple of two ints or None. m:n sparsity (m zeros of every n).
        qat: bool. Quantization-aware training (else post-training int8).
        train: bool. False: the model as given, only converted (the baseline).
        growth: float >= 1. Width multiplier of a grown model (`grow_improve_shrink`);
            `width` then is the fraction of the grown model's channels kept.
        clusters: int. Distinct values per kernel after weight clustering (0: not
            clustered); not combined with `sparsity` or `m_by_n`.
        depth: int or None. The `depth` a grown model was built with (`grow_improve_shrink`
            with `build_model(width_multiplier=..., depth=...)`); None: the baseline's.
    """

    name: str
    width: float = 1.0
    sparsity: float = 0.0
    m_by_n: tuple | None = None
    qat: bool = True
    train: bool = True
    growth: float = 1.0
    clusters: int = 0
    depth: int | None = None

    def __post_init__(self):
        if self.clusters:
            check_clusters(self.clusters)
            if self.sparsity or self.m_by_n:
                raise ValueError(
                    "Invalid value for argument `clusters`. Clustering is not combined with "
                    "pruning (a clustered kernel is stored as indices whatever its zeros); "
                    f"expected sparsity=0 and m_by_n=None. Received: clusters={self.clusters}, "
                    f"sparsity={self.sparsity}, m_by_n={self.m_by_n}"
                )

    def description(self) -> str:
        if not self.train:
            return "the model as given, post-training int8"
        grown = [f"{self.growth:g}x width"] if self.growth > 1 else []
        grown += [f"depth {self.depth}"] if self.depth is not None else []
        if grown and self.width == 1:
            return f"grown to {' and '.join(grown)}, trained from scratch, post-training int8"
        parts = [f"grown to {' and '.join(grown)} and trained"] if grown else []
        if self.width < 1:
            parts.append(f"channels pruned to {self.width:.0%} width")
        if self.sparsity:
            parts.append(f"{self.sparsity:.0%} unstructured sparsity")
        if self.m_by_n:
            parts.append(f"{self.m_by_n[0]}:{self.m_by_n[1]} sparsity")
        if self.clusters:
            parts.append(f"clustered to {self.clusters} values per kernel")
        qat = "distilled + clustering-preserving QAT" if self.clusters else "distilled + QAT"
        parts.append(qat if self.qat else "distilled, post-training int8")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["m_by_n"] = list(self.m_by_n) if self.m_by_n else None
        # Written only when set, so the specs in manifests written before clustering (or
        # growth in depth) was a lever still match and their candidates resume.
        if not values["clusters"]:
            del values["clusters"]
        if values["depth"] is None:
            del values["depth"]
        return values


def check_widths(widths) -> tuple:
    if isinstance(widths, str) or not isinstance(widths, list | tuple) or not widths:
        raise invalid_type("widths", "a non-empty list of floats in (0, 1)", widths)
    return tuple(
        check_float("widths", w, minimum=0, maximum=1, min_inclusive=False, max_inclusive=False)
        for w in widths
    )


def plan_candidates(
    techniques, *, widths, sparsity, clusters=16, max_candidates=None
) -> list[CandidateSpec]:
    """The baseline first, then each lever alone, then narrow and sparse (or clustered)
    combined.

    Smaller footprints come later in each group; `max_candidates` keeps the first ones.
    Clustering is not combined with pruning: a LUT-compressed kernel costs its indices
    whatever its zeros.
    """
    specs = [CandidateSpec("original", qat=False, train=False)]
    pct = round(100 * sparsity)
    if "qat" in techniques:
        specs.append(CandidateSpec("qat"))
    if "prune" in techniques:
        specs.append(CandidateSpec(f"prune{pct}", sparsity=sparsity))
    if "m_by_n" in techniques:
        specs.append(CandidateSpec("prune2of4", m_by_n=(2, 4)))
    if "cluster" in techniques:
        specs.append(CandidateSpec(f"cluster{clusters}", clusters=clusters))
    if "channels" in techniques:
        for width in widths:
            specs.append(CandidateSpec(f"width{round(100 * width)}", width=width))
        if "prune" in techniques:
            for width in widths:
                specs.append(
                    CandidateSpec(
                        f"width{round(100 * width)}_prune{pct}", width=width, sparsity=sparsity
                    )
                )
        if "cluster" in techniques:
            for width in widths:
                specs.append(
                    CandidateSpec(
                        f"width{round(100 * width)}_cluster{clusters}",
                        width=width,
                        clusters=clusters,
                    )
                )
    if max_candidates is not None:
        specs = specs[: check_int("max_candidates", max_candidates, minimum=1)]
    return specs


def train_candidate(spec, model, teacher, x, y, *, epochs, batch_size, learning_rate):
    """The trained (compressed, float-graph or QAT) Keras model of `spec`."""
    import keras

    from tfslim.distillation import distill
    from tfslim.pruning import Pruning

    if not spec.train:
        return model
    student = keras.models.clone_model(model)
    student.set_weights(model.get_weights())
    if spec.width < 1:
        student = narrow(student, teacher, x, 1.0 - spec.width, batch_size, learning_rate)
    if spec.clusters:
        return cluster(
            student,
            teacher,
            x,
            y,
            clusters=spec.clusters,
            qat=spec.qat,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
        )
    pruning = None
    if spec.sparsity:
        pruning = Pruning(spec.sparsity)
    elif spec.m_by_n:
        pruning = Pruning(sparsity_m_by_n=tuple(spec.m_by_n))
    return distill(
        teacher,
        student,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        quantize=spec.qat,
        pruning=pruning,
        optimizer=keras.optimizers.Adam(learning_rate),
    )


def cluster(student, teacher, x, y, *, clusters, qat, epochs, batch_size, learning_rate):
    """`student` with `clusters` values per kernel, distilled from `teacher`.

    Clustering and quantization-aware training cannot share one fit: the centroids and
    assignments train first, distilled (`ceil(epochs / 2)` epochs); the stripped model is
    then wrapped by `quantize_model(preserve="clusters")`, which keeps every weight on its
    centroid while fake quantization rounds the centroids, and distilled for the other
    `epochs // 2` (at least one). Without `qat` the clustering fit takes all `epochs` and
    the stripped model is converted post-training; either way the int8 kernels hold at
    most `clusters` values (per output channel for per-channel convolution kernels).
    """
    import keras

    from tfslim.clustering import cluster_weights, strip_clustering
    from tfslim.distillation import distill
    from tfslim.quantization import quantize_model

    cluster_epochs = epochs - epochs // 2 if qat else epochs
    clustered = distill(
        teacher,
        cluster_weights(student, clusters),
        x,
        y,
        epochs=cluster_epochs,
        batch_size=batch_size,
        optimizer=keras.optimizers.Adam(learning_rate),
    )
    stripped = strip_clustering(clustered)
    if not qat:
        stripped.compile(optimizer="adam", loss=clustered.loss, metrics=["accuracy"])
        return stripped
    return distill(
        teacher,
        quantize_model(stripped, preserve="clusters"),
        x,
        y,
        epochs=max(1, epochs // 2),
        batch_size=batch_size,
        optimizer=keras.optimizers.Adam(learning_rate),
    )


def classification_loss(model, x):
    """Sparse cross-entropy reading `model`'s outputs as probabilities or as logits."""
    import keras
    import numpy as np

    outputs = np.asarray(model.predict(x[:32], verbose=0))
    probabilities = bool(np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1, atol=1e-3))
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)


def narrow(model, teacher, x, fraction, batch_size, learning_rate):
    """`model` with `fraction` of each channel group removed (smallest L1 norms first).

    The channels go at the first step of one epoch that fits the survivors to the
    teacher's outputs (mean squared error, so any output activation works); the zeroed
    channels are then stripped, giving a physically narrower model.
    """
    import keras

    from tfslim.pruning import ChannelPruning, strip_channels

    targets = teacher.predict(x, batch_size=256, verbose=0)
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    model.fit(
        x,
        targets,
        epochs=1,
        batch_size=batch_size,
        verbose=0,
        callbacks=[ChannelPruning(fraction, schedule="constant")],
    )
    return strip_channels(model)
