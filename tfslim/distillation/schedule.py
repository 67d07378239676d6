"""`DistillationSchedule`: changes a `Distiller`'s temperature and loss weight during `fit`."""

from __future__ import annotations

from collections.abc import Callable

import keras

Value = float | Callable[[int], float] | tuple[float, float] | None


def _check_value(argument: str, value) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, (tuple, list)) and len(value) == 2:
        items = value
    else:
        items = [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise TypeError(
                f"Invalid value for argument `{argument}`. Expected a float, a (start, end) "
                f"pair of floats, a function of the epoch, or None. Received: {argument}="
                f"{value!r}"
            )


def _value_at(value, epoch: int, epochs: int) -> float | None:
    if value is None:
        return None
    if callable(value):
        return float(value(epoch))
    if isinstance(value, (tuple, list)):
        start, end = value
        fraction = epoch / max(epochs - 1, 1)
        return float(start + (end - start) * min(fraction, 1.0))
    return float(value)


class DistillationSchedule(keras.callbacks.Callback):
    """Sets a `tfslim.Distiller`'s temperature and student-loss weight at each epoch, and logs them.

    The values are written to the distiller's variables at the start of each epoch, so the
    compiled train step is not retraced. `temperature` and `student_loss_weight` are added to
    the logs at the end of each epoch (`History`, `CSVLogger`, progress bar).

    Each value is a float (constant), a `(start, end)` pair (linear over the epochs of `fit`),
    a function `epoch -> value`, or `None` (left unchanged, still logged).

    Args:
        temperature: schedule of the softmax temperature (values > 0). Defaults to `None`.
        student_loss_weight: schedule of the supervised loss weight (values in [0, 1]); the
            distillation loss gets `1 - student_loss_weight`. Defaults to `None`.

    Raises:
        TypeError: a schedule of the wrong type, or (at the start of `fit`) a model that is
            not a `tfslim.Distiller`.
        ValueError: (during `fit`) a scheduled value out of range.

    Example:

    >>> import tfslim
    >>> schedule = tfslim.distillation.DistillationSchedule(
    ...     temperature=(6.0, 2.0), student_loss_weight=lambda epoch: min(0.1 * epoch, 0.5))
    """

    def __init__(self, *, temperature: Value = None, student_loss_weight: Value = None):
        super().__init__()
        _check_value("temperature", temperature)
        _check_value("student_loss_weight", student_loss_weight)
        self.temperature = temperature
        self.student_loss_weight = student_loss_weight

    def _distiller(self):
        from tfslim.distillation.distiller import Distiller

        if not isinstance(self.model, Distiller):
            raise TypeError(
                "DistillationSchedule needs a `tfslim.distillation.Distiller` being fit. "
                f"Received: model={self.model.name!r} of type {type(self.model).__name__}"
            )
        return self.model

    def on_train_begin(self, logs=None):
        self._distiller()

    def on_epoch_begin(self, epoch, logs=None):
        distiller = self._distiller()
        epochs = int(self.params.get("epochs") or 1)
        temperature = _value_at(self.temperature, epoch, epochs)
        if temperature is not None:
            if not temperature > 0:
                raise ValueError(
                    "Invalid value for argument `temperature`. Expected values > 0. "
                    f"Received: temperature={temperature} at epoch {epoch}"
                )
            distiller.temperature.assign(temperature)
        weight = _value_at(self.student_loss_weight, epoch, epochs)
        if weight is not None:
            if not 0.0 <= weight <= 1.0:
                raise ValueError(
                    "Invalid value for argument `student_loss_weight`. Expected values in "
                    f"[0, 1]. Received: student_loss_weight={weight} at epoch {epoch}"
                )
            distiller.student_loss_weight_variable.assign(weight)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        distiller = self._distiller()
        logs["temperature"] = float(distiller.temperature.numpy())
        logs["student_loss_weight"] = float(distiller.student_loss_weight_variable.numpy())
