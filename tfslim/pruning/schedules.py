"""Sparsity schedules: which training steps update the masks, and to what sparsity.

The semantics are tfmot's (`tfmot.sparsity.keras.ConstantSparsity` / `PolynomialDecay`), so a
schedule written for tfmot prunes at the same steps to the same sparsity here. The classes are
re-implemented rather than imported because importing tfmot sets `TF_USE_LEGACY_KERAS=1` and
registers its schedules with `tf_keras`, neither of which a Keras 3 user should pay for.
A schedule is called with a scalar step tensor inside the compiled train step and returns
`(should_prune, sparsity)` tensors.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfslim._checks import check_float, check_int, check_rate


def _check_sparsity(name: str, value) -> float:
    return check_rate(name, value)


def _check_steps(begin_step, end_step, frequency, *, allow_open_end: bool) -> None:
    check_int("begin_step", begin_step, minimum=0)
    check_int("end_step", end_step, minimum=None)
    if allow_open_end and end_step == -1:
        pass
    elif end_step < begin_step:
        expected = "-1 (prune until training ends) or an int" if allow_open_end else "an int"
        raise ValueError(
            f"Invalid value for argument `end_step`. Expected {expected} >= "
            f"begin_step={begin_step}. Received: end_step={end_step}"
        )
    check_int("frequency", frequency)


class PruningSchedule:
    """Base class of sparsity schedules.

    Subclasses implement `sparsity(step)`, `get_config()`, `target_sparsity` (the sparsity
    reached at the end) and `with_target(sparsity)`; `should_prune(step)` follows tfmot's
    `begin_step` / `end_step` / `frequency` rule. Calling a schedule returns both tensors.
    """

    begin_step: int
    end_step: int
    frequency: int

    def should_prune(self, step):
        """Scalar bool tensor: whether the masks are updated at `step`."""
        step = tf.cast(step, tf.int64)
        in_range = step >= self.begin_step
        if self.end_step >= 0:
            in_range = tf.logical_and(in_range, step <= self.end_step)
        on_turn = tf.equal(tf.math.floormod(step - self.begin_step, self.frequency), 0)
        return tf.logical_and(in_range, on_turn)

    def prunes_at(self, step: int) -> bool:
        """`should_prune` for a Python int step, without building a tensor."""
        if type(self).should_prune is not PruningSchedule.should_prune:
            return bool(self.should_prune(tf.constant(step, tf.int64)))
        if step < self.begin_step or (self.end_step >= 0 and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0

    def sparsity(self, step):
        """Scalar float32 tensor: the sparsity the masks are updated to at `step`."""
        raise NotImplementedError

    def __call__(self, step):
        """Returns `(should_prune, sparsity)` tensors at `step`, like tfmot's schedules."""
        return self.should_prune(step), self.sparsity(step)

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> PruningSchedule:
        return cls(**dict(config))

    @property
    def target_sparsity(self) -> float:
        raise NotImplementedError

    def with_target(self, sparsity: float) -> PruningSchedule:
        """Returns the same schedule (same steps) ending at `sparsity` instead."""
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfslim")
class ConstantSparsity(PruningSchedule):
    """Prunes to one constant sparsity every `frequency` steps in `[begin_step, end_step]`.

    Args:
        target_sparsity: float in [0, 1), the fraction of weights set to zero.
        begin_step: int, first step (optimizer update) at which the masks are updated.
            Defaults to `0`.
        end_step: int, last step at which the masks may be updated, or `-1` to keep updating
            until training ends. Defaults to `-1`.
        frequency: int, update the masks every `frequency` steps. Defaults to `100`.

    Raises:
        ValueError: if a sparsity is outside [0, 1), a step is negative, `end_step` is before
            `begin_step` or `frequency` is not positive.

    Example:

    >>> schedule = ConstantSparsity(0.8, begin_step=10, frequency=5)
    >>> [bool(schedule(step)[0]) for step in (9, 10, 12, 15)]
    [False, True, False, True]
    """

    def __init__(
        self,
        target_sparsity: float,
        begin_step: int = 0,
        end_step: int = -1,
        frequency: int = 100,
    ):
        self._target = _check_sparsity("target_sparsity", target_sparsity)
        _check_steps(begin_step, end_step, frequency, allow_open_end=True)
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    @property
    def target_sparsity(self) -> float:
        return self._target

    def sparsity(self, step):
        return tf.constant(self._target, tf.float32)

    def get_config(self) -> dict:
        return {
            "target_sparsity": self._target,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    def with_target(self, sparsity: float) -> ConstantSparsity:
        return ConstantSparsity(sparsity, self.begin_step, self.end_step, self.frequency)


@keras.saving.register_keras_serializable(package="tfslim")
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `final_sparsity` between two steps.

    `sparsity(step) = final + (initial - final) * (1 - p) ** power` with
    `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)` (Zhu & Gupta, 2017), the
    masks being updated every `frequency` steps in `[begin_step, end_step]`.

    Args:
        initial_sparsity: float in [0, 1), sparsity at `begin_step`.
        final_sparsity: float in [0, 1), sparsity from `end_step` on.
        begin_step: int, first step at which the masks are updated.
        end_step: int, step at which `final_sparsity` is reached; must be >= `begin_step`.
        power: float, exponent of the decay. Defaults to `3`.
        frequency: int, update the masks every `frequency` steps. Defaults to `100`.

    Raises:
        ValueError: if a sparsity is outside [0, 1), a step is negative, `end_step` is before
            `begin_step` or `frequency` is not positive.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    >>> round(float(schedule(100)[1]), 3), round(float(schedule(50)[1]), 3)
    (0.8, 0.7)
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        _check_steps(begin_step, end_step, frequency, allow_open_end=False)
        check_float("power", power, minimum=0, min_inclusive=False)
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = power
        self.frequency = frequency

    @property
    def target_sparsity(self) -> float:
        return self.final_sparsity

    def sparsity(self, step):
        span = float(max(self.end_step - self.begin_step, 1))
        progress = tf.cast(tf.cast(step, tf.int64) - self.begin_step, tf.float32) / span
        progress = tf.clip_by_value(progress, 0.0, 1.0)
        sparsity = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * tf.pow(
            1.0 - progress, float(self.power)
        )
        return sparsity

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }

    def with_target(self, sparsity: float) -> PolynomialDecay:
        initial = min(self.initial_sparsity, sparsity)
        return PolynomialDecay(
            initial, sparsity, self.begin_step, self.end_step, self.power, self.frequency
        )


def serialize(schedule: PruningSchedule) -> dict:
    """Returns the JSON-safe `{"class_name", "config"}` form used inside layer configs."""
    return keras.saving.serialize_keras_object(schedule)


def deserialize(config) -> PruningSchedule:
    """Inverse of `serialize`; passes `PruningSchedule` instances through."""
    if isinstance(config, PruningSchedule):
        return config
    schedule = keras.saving.deserialize_keras_object(config)
    if not isinstance(schedule, PruningSchedule):
        raise TypeError(
            "Invalid value for argument `pruning_schedule`. Expected a "
            f"`tfslim.pruning.PruningSchedule`. Received: pruning_schedule={schedule!r}"
        )
    return schedule


def check_schedule(schedule, name: str = "pruning_schedule") -> PruningSchedule:
    """Raises a TypeError naming `name` unless `schedule` is a PruningSchedule."""
    if not isinstance(schedule, PruningSchedule):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a `tfslim.pruning.PruningSchedule` "
            f"(e.g. `PolynomialDecay(...)`). Received: {name}={schedule!r}"
        )
    return schedule
