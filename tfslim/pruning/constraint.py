"""The in-graph mask: a weight constraint that Keras 3 optimizers apply inside the train step.

Every Keras 3 optimizer ends `apply()` with `variable.assign(variable.constraint(variable))`
for each updated trainable variable (keras/src/optimizers/base_optimizer.py), inside the
compiled train step and, under `tf.distribute`, on every replica. `PruningConstraint` is set as
the variable's `constraint`: on each optimizer update it reads its own step counter, asks the
schedule whether this is a mask-update step (a `tf.cond`, so the sort only runs on update
steps), and returns `weight * mask`. So pruned weights are exactly zero after every update of
any model, Sequential, Functional or subclassed. The `Pruning` callback instead updates the
masks between steps (`hoisted`: its batch hook knows the step), and the traced step only
multiplies: an untaken `tf.cond` branch still costs its ops' scheduling on every step.

Masks only ever lose ones during a pruning run: a weight that was pruned stays pruned, even if
the schedule restarts (e.g. training resumed from a weights-only checkpoint).
The constraint lives on the variable, not in the layer's config, so it is never serialized;
whoever attaches it (the `PruneLowMagnitude` wrapper or the `Pruning` callback) owns the mask
and step variables and re-attaches on load or at the next `fit`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfslim._model_facts import zero_fraction
from tfslim.pruning.masks import Granularity
from tfslim.pruning.schedules import PruningSchedule


class PruningConstraint:
    """Masks one variable after each optimizer update and updates the mask on schedule.

    Args:
        variable: the `keras.Variable` to prune.
        mask: a `keras.Variable` of the same shape and dtype holding the 0/1 mask.
        step: an int64 scalar `keras.Variable` counting this variable's optimizer updates.
        schedule: the `PruningSchedule`.
        granularity: the `Granularity` (unstructured, block or m-by-n).
    """

    def __init__(
        self,
        variable,
        mask,
        step,
        schedule: PruningSchedule,
        granularity: Granularity,
    ):
        self.variable = variable
        self.mask = mask
        self.step = step
        self.schedule = schedule
        self.granularity = granularity
        self.wrapped_constraint = None
        self.attached = False
        # True: the owner updates the mask between train steps (`update_mask`), and the
        # traced step only multiplies by it. A `tf.cond` in the step costs its untaken branch
        # (the sort) in scheduling on every step: about 5% of a small model's step.
        self.hoisted = False

    def _new_mask(self, value, step):
        old = tf.convert_to_tensor(self.mask.value)
        sparsity = self.schedule.sparsity(step)
        if self.granularity.fixed_sparsity is not None:
            # m-by-n ignores the amount, but a zero sparsity still means "not yet".
            return tf.cond(
                sparsity > 0,
                lambda: self.granularity.compute_mask(value * old, sparsity) * old,
                lambda: old,
            )
        return self.granularity.compute_mask(value * old, sparsity) * old

    def update_mask(self, step: int) -> None:
        """Updates the mask as the schedule says for `step` and applies it (hoisted mode).

        Runs between train steps, before the optimizer update `step` (0-based), on the
        weights that update `step - 1` left.
        """
        value = tf.convert_to_tensor(self.variable.value)
        new = self._new_mask(value, tf.constant(step, tf.int64))
        self.mask.assign(new)
        self.variable.assign(value * new)

    def __call__(self, value):
        if self.wrapped_constraint is not None:
            value = self.wrapped_constraint(value)
        if self.hoisted:
            return value * tf.convert_to_tensor(self.mask.value)
        step = self.step.value
        # Only the update branch computes the sparsity and the mask: non-update steps cost a
        # few scalar ops and one multiply per pruned variable.
        should_prune = self.schedule.should_prune(step)

        def update():
            new = self._new_mask(value, step)
            self.mask.assign(new)
            return new

        def keep():
            return tf.convert_to_tensor(self.mask.value)

        mask = tf.cond(should_prune, update, keep)
        self.step.assign_add(1)
        return value * mask

    def attach(self) -> None:
        """Sets this as the variable's constraint, chaining any constraint already there."""
        if self.attached:
            return
        current = self.variable.constraint
        if isinstance(current, PruningConstraint):
            raise ValueError(
                f"Variable '{self.variable.path}' is already being pruned. Apply either the "
                "`Pruning` callback or `prune_low_magnitude`, not both."
            )
        self.wrapped_constraint = current
        self.variable.constraint = self
        self.attached = True

    def detach(self) -> None:
        """Restores the variable's original constraint."""
        if self.attached and self.variable.constraint is self:
            self.variable.constraint = self.wrapped_constraint
        self.attached = False

    def init_mask_from_weights(self) -> None:
        """Sets the mask to the variable's current non-zeros, so existing zeros stay pruned.

        An all-zero variable (e.g. a zero-initialised kernel) gets an all-ones mask instead, so
        it can still train.
        """
        value = np.asarray(self.variable.numpy())
        mask = (value != 0) if np.any(value) else np.ones_like(value, dtype=bool)
        self.mask.assign(mask.astype(self.mask.dtype))

    def bake(self) -> None:
        """Multiplies the variable by its mask in place (exact zeros)."""
        value = np.asarray(self.variable.numpy())
        mask = np.asarray(self.mask.numpy())
        self.variable.assign(np.where(mask > 0, value, np.zeros_like(value)))


class _SavedStep:
    """A train function traced with constraints attached, and what it was traced beside."""

    __slots__ = ("constrained", "key", "plain", "state")

    def __init__(self, plain, constrained, key, state):
        self.plain, self.constrained, self.key, self.state = plain, constrained, key, state


class _SavedSteps:
    """Per model: one `_SavedStep` per owner (a plain object, so Keras does not track it)."""

    __slots__ = ("by_owner",)

    def __init__(self):
        self.by_owner = {}


_SAVED_STEPS = "_tfslim_constrained_steps"


def reuse_constrained_step(model, owner: str, key):
    """Swaps in the train function `remember_constrained_step` saved under `key`, if valid.

    Tracing a train step costs about as much as several epochs of a small model, and the
    constraints are part of the traced graph. A callback attaching them at the start of every
    `fit` would retrace every `fit`. The saved trace is reused only when the model's train
    function is still the plain one it was traced beside (`compile` makes a new one) and the
    caller attaches the same constraints (same `key`): the caller must then re-attach the saved
    `state`, the constraint objects the graph reads.

    Args:
        model: the Keras model whose `train_function` is swapped.
        owner: str naming the caller, e.g. "Pruning".
        key: comparable description of the constraints about to be attached.

    Returns:
        The saved state (the model's `train_function` now the saved one), or None.
    """
    saved = getattr(model, _SAVED_STEPS, None)
    entry = None if saved is None else saved.by_owner.get(owner)
    plain = getattr(model, "train_function", None)
    if entry is None or plain is None or entry.plain is not plain or entry.key != key:
        return None
    model.train_function = entry.constrained
    return entry.state


def trace_constrained_step(model, owner: str, key, state) -> None:
    """Makes a train function with the attached constraints and saves it for the next `fit`.

    Args:
        model: the Keras model, its constraints attached.
        owner: str naming the caller, e.g. "Pruning".
        key: comparable description of the constraints (see `reuse_constrained_step`).
        state: what the caller re-attaches when the saved function is reused.
    """
    plain = getattr(model, "train_function", None)
    model.make_train_function(force=True)
    if plain is None:  # No plain function to tell a later `compile` by: nothing to reuse.
        return
    saved = getattr(model, _SAVED_STEPS, None)
    if saved is None:
        saved = _SavedSteps()
        setattr(model, _SAVED_STEPS, saved)
    saved.by_owner[owner] = _SavedStep(plain, model.train_function, key, state)


def restore_plain_step(model, plain, constrained) -> None:
    """Puts back the plain train function after the caller detached its constraints.

    Args:
        model: the Keras model.
        plain: the train function before the caller swapped it (None: Keras makes one).
        constrained: the function the caller swapped in. If another callback swapped in its own
            since, neither is valid any more and the next `fit` traces a new one.
    """
    if model.train_function is constrained:
        model.train_function = plain
    else:
        model.make_train_function(force=True)


def find_constraints(model) -> list[PruningConstraint]:
    """Every `PruningConstraint` attached to a variable of `model`."""
    found = []
    for variable in model.variables:
        constraint = getattr(variable, "constraint", None)
        if isinstance(constraint, PruningConstraint):
            found.append(constraint)
    return found


def sparsity_of(variables) -> float:
    """Fraction of exact zeros over `variables` (0.0 when there are none)."""
    return zero_fraction(variables)
