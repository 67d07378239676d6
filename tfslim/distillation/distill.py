"""`distill`: one call from a trained teacher to a shrunk, distilled student ready to convert."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tfslim._checks import check_bool, check_int, invalid_type
from tfslim.distillation.distiller import (
    DEFAULT_TEMPERATURE,
    Distiller,
    _check_model,
    is_probabilities,
    logits_crossentropy,
)
from tfslim.distillation.schedule import DistillationSchedule, Value


def _pruning_callback(pruning):
    from tfslim.pruning import Pruning

    if pruning is None or isinstance(pruning, Pruning):
        return pruning
    if isinstance(pruning, bool) or not isinstance(pruning, (int, float)):
        raise TypeError(
            "Invalid value for argument `pruning`. Expected None, a target sparsity in [0, 1) "
            f"or a `tfslim.callbacks.Pruning`. Received: pruning={pruning!r}"
        )
    return Pruning(float(pruning))


def _check_arguments(quantize, optimizer, loss, metrics, callbacks) -> None:
    check_bool("quantize", quantize)
    if not isinstance(optimizer, (str, keras.optimizers.Optimizer)):
        raise invalid_type(
            "optimizer", "an optimizer name or a `keras.optimizers.Optimizer`", optimizer
        )
    if loss is None:
        raise ValueError(
            "Invalid value for argument `loss`. Expected the student's supervised loss (a name "
            "or a `keras.losses.Loss`). Received: loss=None"
        )
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise invalid_type("metrics", "a list of metrics, e.g. `['accuracy']`", metrics)
    if isinstance(callbacks, keras.callbacks.Callback) or not isinstance(callbacks, Sequence):
        raise invalid_type("callbacks", "a list of `keras.callbacks.Callback`", callbacks)
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise invalid_type("callbacks", "a list of `keras.callbacks.Callback`", callback)


def _plain_loss(student, x, loss, from_logits):
    """`loss` for the plain student: its `from_logits=True` form if the student emits logits."""
    logits_loss = logits_crossentropy(keras.losses.get(loss) if isinstance(loss, str) else loss)
    if logits_loss is None or from_logits is False:
        return loss
    if from_logits is None:
        if isinstance(x, tf.data.Dataset):
            sample = next(iter(x.take(1)))[0]
        else:
            sample = keras.tree.map_structure(lambda array: array[:32], x)
        if is_probabilities(student(sample, training=False)):
            return loss  # The given loss reads probabilities as they are.
    return logits_loss


def distill(
    teacher: keras.Model,
    student: keras.Model,
    x,
    y=None,
    *,
    epochs: int,
    batch_size: int | None = 32,
    validation_data=None,
    temperature: Value = DEFAULT_TEMPERATURE,
    student_loss_weight: Value = 0.5,
    quantize: bool = False,
    pruning=None,
    distillation_losses=None,
    from_logits: bool | None = None,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    loss="sparse_categorical_crossentropy",
    metrics: Sequence = ("accuracy",),
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
) -> keras.Model:
    """Distils `teacher` into `student` while (optionally) quantizing and pruning it.

    `student` is wrapped with `tfslim.quantize_model` when `quantize=True`, pruned during `fit`
    by `tfslim.callbacks.Pruning` when `pruning` is given, and trained by a
    `tfslim.distillation.Distiller`. The returned student is a plain model (no teacher, no
    pruning wrappers), compiled with `loss` and `metrics` for `evaluate`, and ready for
    `tfslim.convert` (a QAT student converts to int8 without calibration data). The fit
    `History` is in `student.history`.

    Args:
        teacher: keras.Model. Trained float teacher; never modified.
        student: keras.Model. Built student with the teacher's output shape.
        x: inputs, or a `tf.data.Dataset` of (x, y) batches.
        y: targets, `None` for a dataset. Defaults to `None`.
        epochs: int. Epochs of distillation.
        batch_size: int, ignored for datasets. Defaults to `32`.
        validation_data: as for `keras.Model.fit`. Defaults to `None`.
        temperature: float > 0, (start, end) pair or function of the epoch. Defaults to
            `1.0`: small students learn best from low temperatures (see `Distiller`).
        student_loss_weight: float in [0, 1], (start, end) pair or function of the epoch:
            the weight of the labels, the teacher gets the rest. Defaults to `0.5`.
        quantize: bool, quantization-aware training of the student. Defaults to `False`.
        pruning: target sparsity (float in [0, 1)) or a `tfslim.callbacks.Pruning`. Defaults
            to `None`.
        distillation_losses: as for `Distiller` (e.g. add a `FeatureDistillation`). Defaults
            to `None` (logits distillation).
        from_logits: as for `Distiller`. Defaults to `None` (softmax outputs detected).
        optimizer: optimizer or its name. Defaults to `"adam"`.
        loss: supervised loss of the student. A categorical cross-entropy reads logits and
            softmax outputs alike (see `from_logits`). Defaults to
            `"sparse_categorical_crossentropy"`.
        metrics: metrics of the student. Defaults to `("accuracy",)`.
        callbacks: more callbacks for `fit` (EarlyStopping, ModelCheckpoint, ...). Defaults
            to `()`.
        verbose: as for `fit`. Defaults to `0`.

    Returns:
        The trained student, a plain `keras.Model` compiled with `loss` (in its
        `from_logits=True` form for a student that outputs logits) and `metrics`.

    Raises:
        TypeError: a teacher or student that is not a Keras 3 `keras.Model`, or a wrong type
            of `pruning`, `quantize`, `temperature`, `student_loss_weight`, `callbacks`,
            `metrics`, `optimizer` or `distillation_losses`.
        ValueError: see `Distiller`; a non-positive `epochs` or `batch_size`.

    Example:

    >>> import keras, numpy as np
    >>> import tfslim
    >>> x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> trained = tfslim.distillation.distill(teacher, student, x, y, epochs=1)
    >>> sorted(trained.history.history)[:2]
    ['accuracy', 'distillation_loss']
    """
    _check_model("teacher", teacher)
    _check_model("student", student)
    check_int("epochs", epochs)
    if batch_size is not None:
        check_int("batch_size", batch_size)
    _check_arguments(quantize, optimizer, loss, metrics, callbacks)
    pruning_callback = _pruning_callback(pruning)
    schedule = DistillationSchedule(
        temperature=temperature, student_loss_weight=student_loss_weight
    )
    if quantize:
        from tfslim.quantization import quantize_model

        student = quantize_model(student)
    scalar = (float, int)
    teacher_trainable = teacher.trainable
    distiller = Distiller(
        teacher,
        student,
        distillation_losses,
        from_logits=from_logits,
        student_loss_weight=student_loss_weight if isinstance(student_loss_weight, scalar) else 0.5,
        temperature=temperature if isinstance(temperature, scalar) else 3.0,
    )
    distiller.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    fit_callbacks = [schedule, *([pruning_callback] if pruning_callback else []), *callbacks]
    if isinstance(x, tf.data.Dataset):
        batch_size = None  # A dataset is already batched.
    history = distiller.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        callbacks=fit_callbacks,
        verbose=verbose,
    )
    # The Distiller froze the teacher; give the caller's model back as it came.
    teacher.trainable = teacher_trainable
    trained = distiller.stripped_student()
    trained.compile(
        optimizer="adam", loss=_plain_loss(trained, x, loss, from_logits), metrics=list(metrics)
    )
    trained.history = history
    return trained
