"""The candidates a strategy makes from a trained model, and how each is trained.

Every candidate starts as a copy of the model (weights included), is made smaller by its
levers (narrower by channel pruning, sparser by unstructured or m:n pruning), then improved:
distilled from the teacher with quantization-aware training in one fit, so what is measured
after int8 conversion is what was trained.
"""

import dataclasses

from tfslim._checks import check_float, check_int, invalid_type, invalid_value

__all__ = ["TECHNIQUES", "CandidateSpec", "plan_candidates", "train_candidate"]

# Lever name -> what it does; the names `techniques=` accepts.
TECHNIQUES = {
    "qat": "quantization-aware fine-tuning with distillation from the teacher",
    "prune": "unstructured magnitude pruning to `sparsity`",
    "m_by_n": "m:n structured sparsity (2 of every 4 weights zero)",
    "channels": "narrower models: channel pruning to each of `widths`, then stripped",
}
DEFAULT_TECHNIQUES = ("qat", "prune", "channels")


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
    """

    name: str
    width: float = 1.0
    sparsity: float = 0.0
    m_by_n: tuple | None = None
    qat: bool = True
    train: bool = True
    growth: float = 1.0

    def description(self) -> str:
        if not self.train:
            return "the model as given, post-training int8"
        if self.growth > 1 and self.width == 1:
            return f"grown to {self.growth:g}x width, trained from scratch, post-training int8"
        parts = [f"grown to {self.growth:g}x width and trained"] if self.growth > 1 else []
        if self.width < 1:
            parts.append(f"channels pruned to {self.width:.0%} width")
        if self.sparsity:
            parts.append(f"{self.sparsity:.0%} unstructured sparsity")
        if self.m_by_n:
            parts.append(f"{self.m_by_n[0]}:{self.m_by_n[1]} sparsity")
        parts.append("distilled + QAT" if self.qat else "distilled, post-training int8")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["m_by_n"] = list(self.m_by_n) if self.m_by_n else None
        return values


def check_techniques(techniques) -> tuple:
    if isinstance(techniques, str) or not isinstance(techniques, list | tuple):
        raise invalid_type("techniques", f"a list of names from {list(TECHNIQUES)}", techniques)
    unknown = [t for t in techniques if t not in TECHNIQUES]
    if unknown or not techniques:
        raise invalid_value(
            "techniques", f"a non-empty list of names from {list(TECHNIQUES)}", techniques
        )
    return tuple(dict.fromkeys(techniques))


def check_widths(widths) -> tuple:
    if isinstance(widths, str) or not isinstance(widths, list | tuple) or not widths:
        raise invalid_type("widths", "a non-empty list of floats in (0, 1)", widths)
    return tuple(
        check_float("widths", w, minimum=0, maximum=1, min_inclusive=False, max_inclusive=False)
        for w in widths
    )


def plan_candidates(techniques, *, widths, sparsity, max_candidates=None) -> list[CandidateSpec]:
    """The baseline first, then each lever alone, then narrow and sparse combined.

    Smaller footprints come later in each group; `max_candidates` keeps the first ones.
    """
    specs = [CandidateSpec("original", qat=False, train=False)]
    pct = round(100 * sparsity)
    if "qat" in techniques:
        specs.append(CandidateSpec("qat"))
    if "prune" in techniques:
        specs.append(CandidateSpec(f"prune{pct}", sparsity=sparsity))
    if "m_by_n" in techniques:
        specs.append(CandidateSpec("prune2of4", m_by_n=(2, 4)))
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
