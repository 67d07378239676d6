"""`Pruning`: magnitude pruning of any Keras 3 model during `fit`, as a callback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras
import numpy as np

from tfslim import _keras_graph
from tfslim._checks import check_bool
from tfslim._compat import is_tf_keras
from tfslim.pruning import policy
from tfslim.pruning.constraint import (
    PruningConstraint,
    restore_plain_step,
    reuse_constrained_step,
    sparsity_of,
    trace_constrained_step,
)
from tfslim.pruning.masks import Granularity
from tfslim.pruning.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    _check_sparsity,
)
from tfslim.pruning.wrapper import find_wrappers

_AUTO_SCHEDULES = ("polynomial", "constant", "keep")


class Pruning(keras.callbacks.Callback):
    """Prunes a model's kernels by magnitude during `fit` and logs the sparsity reached.

    At the start of `fit` the callback attaches an in-graph mask to every prunable weight
    (trainable kernels of `Dense`, `Conv*`, `Embedding`, RNN and `EinsumDense` layers, in
    Sequential, Functional and subclassed models alike). The masks are applied by the optimizer
    inside the compiled train step; the callback updates them between steps when the schedule
    says so (per batch it only compares integers; with `steps_per_execution > 1` the update
    runs inside the step instead, in a `tf.cond`). At the end of each
    epoch it adds `sparsity` (all pruned weights) and `sparsity/<layer>` to the logs, where the
    progress bar, `History`, `CSVLogger` and `TensorBoard` pick them up (list it before those
    callbacks). At the end of `fit` the masks are detached; the zeros stay in the weights.

    A model from `tfslim.prune_low_magnitude` already carries its masks; the callback then only
    logs.

    Args:
        target_sparsity: float in [0, 1), final fraction of zeros in each pruned weight. Required
            unless `schedule` is a `PruningSchedule`.
        schedule: "polynomial" (ramp from 0 to `target_sparsity` over the first 70% of the
            training steps, masks updated 20 times), "constant" (`target_sparsity` from step 0,
            masks updated every 10% of the steps), "keep" (prune nothing new, keep the zeros the
            model already has: pruning-preserving fine-tuning or QAT; `target_sparsity` is not
            needed), or a `PruningSchedule` for explicit steps. Defaults to `"polynomial"`.
        block_size: (rows, cols) pruned together on the TFLite `(out, in)` layout; `(1, 16)` gives
            the smallest sparse TFLite files. Defaults to `(1, 1)` (unstructured).
        block_pooling_type: "AVG" or "MAX". Defaults to `"AVG"`.
        sparsity_m_by_n: (m, n) for m zeros in every n consecutive input channels, e.g.
            `(2, 4)`. Defaults to `None`.
        layer_sparsity: {layer name: sparsity or `PruningSchedule`} per-layer targets.
            Defaults to `None`.
        skip_layers: layer names or classes left dense. Defaults to `()`.
        log_layers: bool, also log each layer's sparsity. Defaults to `True`.

    Raises:
        ValueError: for a sparsity outside [0, 1), conflicting arguments, or (at the start of
            `fit`) a model with no prunable layers, an unknown layer name or a weight whose shape
            cannot take the pattern.
        TypeError: (at the start of `fit`) for a tf_keras model.

    Example:

    >>> import keras, numpy as np
    >>> from tfslim import pruning
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
    ...                           keras.layers.Dense(2)])
    >>> model.compile("adam", "mse")
    >>> history = model.fit(np.ones((32, 8)), np.ones((32, 2)), epochs=2, verbose=0,
    ...                     callbacks=[pruning.Pruning(0.5)])
    >>> round(history.history["sparsity"][-1], 2)
    0.5
    """

    def __init__(
        self,
        target_sparsity: float | None = None,
        *,
        schedule: str | PruningSchedule = "polynomial",
        block_size: tuple[int, int] = (1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n: tuple[int, int] | None = None,
        layer_sparsity: Mapping[str, float | PruningSchedule] | None = None,
        skip_layers: Iterable[str | type] = (),
        log_layers: bool = True,
    ):
        super().__init__()
        if isinstance(schedule, PruningSchedule):
            if target_sparsity is not None and target_sparsity != schedule.target_sparsity:
                raise ValueError(
                    "Arguments `target_sparsity` and `schedule` disagree. Expected the "
                    "schedule's target or None. Received: target_sparsity="
                    f"{target_sparsity}, schedule={schedule!r}"
                )
            target_sparsity = schedule.target_sparsity
        elif schedule not in _AUTO_SCHEDULES:
            raise ValueError(
                f"Invalid value for argument `schedule`. Expected one of {_AUTO_SCHEDULES} or a "
                f"`tfslim.pruning.PruningSchedule`. Received: schedule={schedule!r}"
            )
        elif schedule == "keep":
            target_sparsity = 0.0 if target_sparsity is None else target_sparsity
        elif target_sparsity is None:
            raise ValueError(
                "Argument `target_sparsity` is required unless `schedule` is a PruningSchedule. "
                "Received: target_sparsity=None"
            )
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.schedule = schedule
        self.granularity = Granularity(block_size, block_pooling_type, sparsity_m_by_n)
        self.layer_sparsity = policy.check_layer_sparsity(layer_sparsity)
        self.skip_layers = policy.check_skip_layers(skip_layers)
        self.log_layers = check_bool("log_layers", log_layers)
        self._constraints: list[PruningConstraint] = []
        self._layer_weights: dict[str, list] = {}
        self._pending = self._needs_init = self._stepped = False
        self._hoisted = False  # the masks are updated between steps, by this callback
        self._next_step = 0
        self._plain_train_function = self._train_function = None

    def _resolve_schedule(self) -> PruningSchedule:
        if isinstance(self.schedule, PruningSchedule):
            return self.schedule
        if self.schedule == "keep":
            # One update at step 0 with sparsity 0 leaves the masks at the current zeros.
            return ConstantSparsity(0.0, begin_step=0, end_step=0, frequency=1)
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        if not epochs or not steps:
            raise ValueError(
                f"Argument `schedule`='{self.schedule}' needs the number of steps per epoch, but "
                "`fit` does not know it (e.g. a dataset of unknown length). Pass "
                "`steps_per_epoch` to `fit` or a PruningSchedule with explicit steps. "
                f"Received: epochs={epochs}, steps={steps}"
            )
        total = int(epochs) * int(steps)
        if self.schedule == "constant":
            return ConstantSparsity(self.target_sparsity, 0, frequency=max(1, total // 10))
        frequency = max(1, int(0.7 * total) // 20)
        end_step = max(frequency, (int(0.7 * total) // frequency) * frequency)
        return PolynomialDecay(0.0, self.target_sparsity, 0, end_step, frequency=frequency)

    def _check_model(self, model) -> None:
        if is_tf_keras(model):
            raise TypeError(
                f"The Pruning callback cannot prune tf_keras model '{model.name}'. Use "
                "`tfslim.prune_low_magnitude(model)` (routed to tfmot) and tfmot's "
                "`UpdatePruningStep` callback."
            )
        if not isinstance(model, keras.Model):
            raise TypeError(
                "The Pruning callback needs a Keras 3 model. "
                f"Received: model={model!r} of type {type(model).__name__}"
            )

    def on_train_begin(self, logs=None):
        model = self.model
        self._check_model(model)
        self._constraints, self._layer_weights = [], {}
        self._pending = self._needs_init = self._stepped = False
        self._hoisted, self._next_step = False, 0
        if not model.variables:
            # A subclassed model is built by the first traced train step (without a
            # distribution strategy); attach after that step and retrace once.
            self._pending = True
            return
        self._attach_all(catch_up=False)

    # No `on_train_batch_end`: a callback with one makes Keras wait for every step's logs
    # before it starts the next step (about 8% of a small model's `fit`). A subclassed model
    # built by its first step gets its masks before the second.
    def on_train_batch_begin(self, batch, logs=None):
        if self._pending and self._stepped:
            self._pending = False
            self._attach_all(catch_up=True)
        self._stepped = True
        if self._needs_init:
            self._init_state(step_offset=0)
        if self._hoisted:
            self._update_masks(self._next_step)
            self._next_step += 1

    def _update_masks(self, step: int) -> None:
        for constraint in self._constraints:
            if constraint.schedule.prunes_at(step):
                constraint.update_mask(step)

    def _init_state(self, *, step_offset: int) -> None:
        """Starts masks at the current zeros and step counters at the optimizer's step.

        Runs just before the first train step, after every `on_train_begin` hook, so weights
        and optimizer state restored by e.g. `BackupAndRestore` are what the masks start from.
        """
        self._needs_init = False
        optimizer = getattr(self.model, "optimizer", None)
        step = int(optimizer.iterations.numpy()) if optimizer is not None else 0
        for constraint in self._constraints:
            constraint.init_mask_from_weights()
            constraint.step.assign(max(step - step_offset, 0))
        self._next_step = max(step - step_offset, 0)

    def _attach_all(self, *, catch_up: bool) -> None:
        model = self.model
        wrappers = find_wrappers(model)
        if wrappers:
            for wrapper in wrappers:
                self._add_log_entry(wrapper.layer, [c.variable for c in wrapper.constraints])
            return
        policy.check_names_exist(model, self.skip_layers, self.layer_sparsity)
        schedule = self._resolve_schedule()
        planned = []
        for layer in _keras_graph.sublayers(model, include_self=True):
            if policy.is_skipped(layer, self.skip_layers) or not layer.trainable:
                continue
            variables = policy.own_prunable_weights(layer)
            for variable in variables:
                where = f"layer '{layer.name}' ({type(layer).__name__}), weight '{variable.name}'"
                self.granularity.check_weight(variable.shape, where)
                if isinstance(variable.constraint, PruningConstraint):
                    raise ValueError(
                        f"The Pruning callback cannot prune {where}: it is already being pruned "
                        "(is another Pruning callback in the list?)."
                    )
                layer_schedule = policy.schedule_for(layer, schedule, self.layer_sparsity)
                planned.append((variable, layer_schedule))
            if variables:
                self._add_log_entry(layer, variables)
        if not planned:
            raise ValueError(
                f"The Pruning callback found no prunable layer in model '{model.name}' "
                f"({type(model).__name__}): no trainable kernel outside `skip_layers`. "
                f"Layers: {policy.describe_layers(model)}"
            )
        # The traced step depends on which variables are pruned, how, and what constraint each
        # already had; the same again (the next `fit` of this model) reuses that trace.
        key = (
            self.granularity,
            tuple((id(v), repr(s), id(v.constraint)) for v, s in planned),
        )
        # Between-step mask updates need a batch hook before every step: not when one call
        # of the train function runs several steps.
        hoist = int(getattr(model, "steps_per_execution", 1) or 1) == 1
        key = (*key, hoist)
        self._plain_train_function = model.train_function
        reused = None if catch_up else reuse_constrained_step(model, "Pruning", key)
        if reused is not None:
            self._constraints = list(reused)
            for constraint in self._constraints:
                constraint.attach()
        else:
            with model.distribute_strategy.scope():
                for variable, layer_schedule in planned:
                    self._attach(variable, layer_schedule)
        for constraint in self._constraints:
            constraint.hoisted = hoist
        self._hoisted = hoist
        self._needs_init = True
        if catch_up:
            # Replay the step that ran before the masks existed.
            self._init_state(step_offset=1)
            if self._hoisted:
                self._update_masks(self._next_step)
                self._next_step += 1
            for constraint in self._constraints:
                constraint.variable.assign(constraint(constraint.variable))
        if reused is None:
            # The train function may have been traced without (or with other) constraints.
            trace_constrained_step(model, "Pruning", key, tuple(self._constraints))
        self._train_function = model.train_function

    def _add_log_entry(self, layer, variables) -> None:
        # Layer names can repeat across nested models (e.g. every attention block has a
        # "query" layer); the variable path, minus the weight name, is unique.
        key = layer.name
        if key in self._layer_weights:
            key = variables[0].path.rsplit("/", 1)[0]
        self._layer_weights.setdefault(key, []).extend(variables)

    def _attach(self, variable, schedule) -> None:
        mask = keras.Variable(
            np.ones(variable.shape, dtype=variable.dtype),
            trainable=False,
            name=f"{variable.name}_mask",
        )
        counter = keras.Variable(0, dtype="int64", trainable=False, name="pruning_step")
        constraint = PruningConstraint(
            variable,
            mask,
            counter,
            schedule,
            self.granularity,
        )
        constraint.attach()
        self._constraints.append(constraint)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs.update(self.sparsity_logs())

    def on_train_end(self, logs=None):
        if self._pending and self._stepped and self.model.variables:
            # A one-step fit of a subclassed model: prune what that step trained.
            self._pending = False
            self._attach_all(catch_up=True)
        for constraint in self._constraints:
            constraint.detach()
        if self._constraints:
            restore_plain_step(self.model, self._plain_train_function, self._train_function)
        self._constraints = []
        self._plain_train_function = self._train_function = None
        self._pending = self._needs_init = self._hoisted = False

    def sparsity_logs(self) -> dict[str, float]:
        """{"sparsity": overall, "sparsity/<layer>": per layer} over the pruned weights."""
        logs = {"sparsity": sparsity_of([v for vs in self._layer_weights.values() for v in vs])}
        if self.log_layers:
            for name, variables in self._layer_weights.items():
                logs[f"sparsity/{name}"] = sparsity_of(variables)
        return logs
