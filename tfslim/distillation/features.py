"""Checks of the distillation losses given to a `Distiller`, intermediate features included.

`keras.distillation.FeatureDistillation` compares a teacher layer's output with a student
layer's output element by element (`"mse"`, `"mae"`, `"cosine_similarity"` ...), so it only
works where the two layers have the same output shape; Keras finds out in the middle of the
first train step, with a broadcasting error that names neither layer. These checks refuse
such a pair when the `Distiller` is made, naming both layers and their shapes.
"""

from __future__ import annotations

import keras
from keras.distillation import DistillationLoss, FeatureDistillation


def _layer(model, role: str, name, loss_index: int):
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid value for argument `distillation_losses`. Expected a layer name (str) "
            f"as `{role}_layer_name` of loss {loss_index}. Received: {role}_layer_name="
            f"{name!r} of type {type(name).__name__}"
        )
    names = [layer.name for layer in model.layers]
    if name not in names:
        shown = ", ".join(repr(n) for n in names[:12]) + (" ..." if len(names) > 12 else "")
        raise ValueError(
            f"Invalid value for argument `distillation_losses`. Expected `{role}_layer_name` of "
            f"loss {loss_index} to name a layer of the {role} {model.name!r} ({shown}). "
            f"Received: {role}_layer_name={name!r}"
        )
    return model.get_layer(name)


def _shape(layer):
    output = getattr(layer, "output", None)
    shapes = [tuple(t.shape) for t in keras.tree.flatten(output)] if output is not None else []
    return shapes[0] if len(shapes) == 1 else tuple(shapes)


def _same_shape(a, b) -> bool:
    if len(a) != len(b) or not all(isinstance(d, (int, type(None))) for d in (*a, *b)):
        return a == b
    return all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:], strict=True))


def check_distillation_losses(teacher, student, losses, weights) -> None:
    """Raises `TypeError`/`ValueError` for losses, weights or feature layers that cannot work.

    Args:
        teacher: keras.Model. The (checked) teacher.
        student: keras.Model. The (checked) student.
        losses: list. The distillation losses.
        weights: list of floats or None. Their weights.
    """
    if not losses:
        raise ValueError(
            "Invalid value for argument `distillation_losses`. Expected at least one "
            f"`keras.distillation.DistillationLoss`. Received: distillation_losses={losses!r}"
        )
    for index, loss in enumerate(losses):
        if not isinstance(loss, DistillationLoss):
            raise TypeError(
                "Invalid value for argument `distillation_losses`. Expected a "
                "`keras.distillation.DistillationLoss` (e.g. `LogitsDistillation()`, "
                f"`FeatureDistillation('mse', 'teacher_layer', 'student_layer')`) or a list of "
                f"them. Received: loss {index} = {loss!r} of type {type(loss).__name__}"
            )
    if weights is not None:
        if not isinstance(weights, (list, tuple)) or len(weights) != len(losses):
            raise ValueError(
                "Invalid value for argument `distillation_loss_weights`. Expected a list of "
                f"{len(losses)} floats, one per distillation loss. "
                f"Received: distillation_loss_weights={weights!r}"
            )
        for weight in weights:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(
                    "Invalid value for argument `distillation_loss_weights`. Expected floats "
                    f">= 0. Received: distillation_loss_weights={list(weights)!r}"
                )
    for index, loss in enumerate(losses):
        if isinstance(loss, FeatureDistillation):
            _check_features(teacher, student, loss, index)


def _check_features(teacher, student, loss: FeatureDistillation, index: int) -> None:
    t_name, s_name = loss.teacher_layer_name, loss.student_layer_name
    if t_name is None and s_name is None:
        return  # Final outputs, whose shapes `_check_pair` compared.
    for role, model in (("teacher", teacher), ("student", student)):
        if getattr(model, "inputs", None) is None:
            raise ValueError(
                "Invalid value for argument `distillation_losses`. Expected Functional or "
                f"Sequential models for `FeatureDistillation` of named layers (loss {index}). "
                f"Received: {role}={model.name!r}, a subclassed model with no symbolic inputs"
            )
    t_layer = _layer(teacher, "teacher", t_name, index) if t_name is not None else None
    s_layer = _layer(student, "student", s_name, index) if s_name is not None else None
    t_shape = _shape(t_layer) if t_layer is not None else tuple(teacher.outputs[0].shape)
    s_shape = _shape(s_layer) if s_layer is not None else tuple(student.outputs[0].shape)
    if not _same_shape(t_shape, s_shape):
        raise ValueError(
            "Invalid value for argument `distillation_losses`. Expected `FeatureDistillation` "
            f"(loss {index}) between layers with the same output shape: the loss compares "
            f"them element by element. Received: teacher layer {t_name!r} with output "
            f"{t_shape} and student layer {s_name!r} with output {s_shape}; pick layers "
            "of equal shape, or distil logits only"
        )
