"""Channel (filter) pruning during `fit`, and `strip_channels`: a physically smaller model.

`ChannelPruning` masks whole output channels of coupled layer groups (see
`tfslim.pruning.channel_graph`): every per-channel weight that writes a pruned channel (filter,
bias, depthwise filter, batch-norm gamma and beta) is multiplied by the group's 0/1 mask after
each optimizer update, inside the compiled step (a weight constraint, like `Pruning`'s masks),
so a pruned channel is exactly zero at every tensor of its group. `strip_channels` then rebuilds
the model without those channels (fewer filters and units, weights copied): it predicts what
the masked model predicts, with fewer parameters, MACs, bytes and milliseconds on any runtime.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from tfslim import _keras_graph
from tfslim._checks import check_positive_int, check_rate
from tfslim._compat import is_tf_keras
from tfslim.pruning import policy
from tfslim.pruning.channel_graph import _DEPTHWISE, ChannelGraph, group_weights
from tfslim.pruning.channel_plan import (
    _check_latency_target,
    _check_limit,
    _n_pruned,
    allocate_channels,
    plan_rounded_fraction,
)
from tfslim.pruning.constraint import (
    restore_plain_step,
    reuse_constrained_step,
    trace_constrained_step,
)

_CRITERIA = ("l1", "l2", "bn_gamma")
_SCHEDULES = ("polynomial", "constant")
_ALLOCATIONS = ("uniform", "importance")


class ChannelMask:
    """Weight constraint multiplying one axis of a variable by a group's channel mask."""

    def __init__(self, variable, mask, axis: int):
        self.variable, self.mask = variable, mask
        rank = len(variable.shape)
        self.shape = [1] * rank
        self.shape[axis % rank] = int(variable.shape[axis])
        self.wrapped = None
        self.attached = False

    def __call__(self, value):
        if self.wrapped is not None:
            value = self.wrapped(value)
        return value * keras.ops.reshape(keras.ops.cast(self.mask, value.dtype), self.shape)

    def attach(self):
        self.wrapped = self.variable.constraint
        self.variable.constraint = self
        self.attached = True

    def detach(self):
        if self.attached and self.variable.constraint is self:
            self.variable.constraint = self.wrapped
        self.attached = False

    def bake(self):
        mask = np.reshape(np.asarray(self.mask.numpy()), self.shape)
        self.variable.assign(np.asarray(self.variable.numpy()) * mask.astype("float32"))


def channel_scores(weights: list[tuple], size: int, criterion: str) -> np.ndarray:
    """Importance of each channel of a group: summed, per-layer normalized filter norms.

    `l1` / `l2`: norm of each output filter of the group's kernels (conv, dense, depthwise);
    `bn_gamma`: |gamma| of the group's batch normalizations (network slimming), falling back to
    `l1` for a group without one.
    """
    scores = np.zeros(size)
    if criterion == "bn_gamma":
        gammas = [
            np.abs(np.asarray(v.numpy()))
            for layer, v, _ in weights
            if isinstance(layer, keras.layers.BatchNormalization) and v.name == "gamma"
        ]
        if gammas:
            for gamma in gammas:
                scores += gamma / (gamma.mean() + 1e-12)
            return scores
        criterion = "l1"
    for _, variable, axis in weights:
        if variable.name not in ("kernel", "depthwise_kernel"):
            continue
        value = np.moveaxis(np.asarray(variable.numpy()), axis, -1).reshape(-1, size)
        norm = np.abs(value).sum(0) if criterion == "l1" else np.sqrt((value**2).sum(0))
        scores += norm / (norm.mean() + 1e-12)
    return scores


def _kept_channels(weights: list[tuple], size: int) -> np.ndarray:
    """Channels with any non-zero weight writing them."""
    alive = np.zeros(size, dtype=bool)
    for _, variable, axis in weights:
        value = np.moveaxis(np.asarray(variable.numpy()), axis, -1).reshape(-1, size)
        alive |= np.any(value != 0, axis=0)
    return np.flatnonzero(alive)


class ChannelPruning(keras.callbacks.Callback):
    """Prunes whole output channels during `fit`, coupled layers together.

    At the start of `fit` the callback builds the model's channel-dependency graph (residual
    `Add`, depthwise convolutions, `Concatenate`, squeeze-and-excite `Multiply` and
    `Flatten -> Dense` couple channels; see `tfslim.pruning.channel_graph`), and attaches a
    channel mask to every per-channel weight of each prunable group. On schedule it ranks the
    channels of each group by `criterion` and masks the lowest until the group has lost its
    fraction of channels (masks only lose ones). The masks are applied inside the compiled
    train step; the callback's per-batch work is one integer comparison. At the end of `fit`
    the zeros are baked in and the masks detached; `tfslim.strip_pruning` (or `strip_channels`)
    then returns the physically smaller model. Logs `channel_fraction` (pruned fraction of the
    prunable channels) each epoch.

    The target is either a fraction of channels (`target_fraction`, the same in every group)
    or a footprint: `max_params`, `max_macs` and/or `max_int8_bytes`, each an int (an absolute
    count) or a float in (0, 1) (a fraction of the unpruned model's figure), and/or
    `max_latency_ms` on a microcontroller `target` (the same per-op-type latency estimate
    `tfslim.inspect` reports for the board, applied to the convolutions, dense layers, merges
    and pooling of the pruned model; an estimate, not a measurement). For a footprint the
    callback counts the figures from the model's structure at the start of `fit` (see
    `ChannelGraph.cost`: kernel shapes, channels and output pixels; int8 bytes estimated as one
    per weight and four per bias) and chooses the smallest fraction, the same in every group,
    whose pruned model meets every limit; `planned_fraction` holds it. Every group loses the
    same fraction, so the figures do not fall as the square of it: in MobileNetV2 the stem
    (three input channels), the depthwise convolutions and the classifier scale linearly, and
    50% of the channels leave 0.31x of the MACs.

    Args:
        target_fraction: float in [0, 1) or None. Fraction of each group's channels to
            remove; None when a footprint limit is given. Defaults to `None`.
        max_params: int, float in (0, 1) or None. Largest parameter count (Keras
            `count_params`: kernels, biases, batch-norm statistics). Defaults to `None`.
        max_macs: int, float in (0, 1) or None. Largest number of multiply-accumulates of
            one inference (what `tfslim.measure` reports as `macs`). Defaults to `None`.
        max_int8_bytes: int, float in (0, 1) or None. Largest estimated size of the int8
            weights (the .tflite file adds its ops and quantization parameters).
            Defaults to `None`.
        max_latency_ms: float > 0 or None. Largest estimated latency on `target`, in ms.
            Defaults to `None`.
        target: a `tfslim.Target` with a latency estimate (a microcontroller board, e.g.
            `tfslim.get_target("nano33ble")`), for `max_latency_ms`; only the object, not
            its name (the pruning stage does not import the converter's target registry).
            Defaults to `None`.
        criterion: `"l1"` or `"l2"` norm of the filters, or `"bn_gamma"` (|gamma| of the
            group's batch normalization). Defaults to `"l1"`.
        schedule: `"polynomial"` (from 0 to `target_fraction` over the first 70% of the
            steps, cubic, in `updates` steps) or `"constant"` (`target_fraction` at the first
            step). Defaults to `"polynomial"`.
        updates: int. Number of mask updates of the polynomial schedule. Defaults to `10`.
        skip_layers: layer names or classes whose output channels are kept. Defaults to `()`.
        channel_multiple: int >= 1. Every pruned group keeps a multiple of this many channels
            (the multiple nearest to its fraction, at least one); a group of at most
            `channel_multiple` channels stays whole. CPU kernels (LiteRT's XNNPACK among them)
            compute output channels in tiles of several channels, so a layer of 12 channels
            may take as long as one of 16. A footprint target accounts for the rounding, and
            with `allocation="uniform"` gives back what rounding overshoots: groups of one
            width cross a multiple at the same fraction, so groups rounded below their share
            keep the multiple above it, the furthest below first, while the limits hold
            (`planned_channels` then holds each group's kept channels). With
            `max_params=0.3, max_macs=0.3`, `channel_multiple=8` took the int8 XNNPACK latency
            of MLPerf Tiny's ResNet-8 from 0.65x to 0.48x of the unpruned model (16/32 instead
            of 17/34 channels) (`benchmarks/pruning_benchmark.py --channel`, one x86 CPU
            thread). For MobileNetV2 (alpha 0.35) at 0.3x MACs it cost more channels (58.9%
            pruned against 51.6%) for 0.45x instead of 0.50x (untrained architectures, the
            fastest of interleaved rounds). Defaults to `1` (no rounding).
        allocation: `"uniform"` (every group loses the same fraction) or `"importance"`
            (footprint targets only: each group loses its own share, channels taken a few at
            a time from the group that gives up the least of its importance, the share of its
            channels' scores it keeps, per unit of footprint saved; see
            `tfslim.pruning.channel_plan.allocate_channels`). `planned_channels` then holds
            each group's kept channels, keyed by the names of the layers that write it.
            Defaults to `"uniform"`.

    Raises:
        ValueError: for an invalid argument, or (at the start of `fit`) a subclassed model, a
            model with no prunable channel group, or a footprint that pruning every group down
            to one channel (or `channel_multiple` channels) does not reach.

    Example:

    >>> import keras, numpy as np, tfslim
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> model.count_params()
    178
    >>> x, y = np.random.rand(32, 8), np.random.randint(0, 2, 32)
    >>> teacher = keras.models.clone_model(model)  # the unpruned model, to distil from
    >>> teacher.set_weights(model.get_weights())
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> pruning = tfslim.callbacks.ChannelPruning(max_params=0.5)  # or ChannelPruning(0.5)
    >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[pruning])
    >>> small = tfslim.strip_pruning(model)
    >>> round(pruning.planned_fraction, 2), small.layers[0].units, small.count_params()
    (0.53, 7, 79)

    To recover the accuracy pruning cost, fine-tune the smaller model: with a cosine-decayed
    rate from 4e-3, MobileNetV2 (alpha 0.35) at 50% of its channels came within 0.4 points
    of the unpruned model on digits (`benchmarks/pruning_benchmark.py --channel`, 2 seeds);
    distillation from the unpruned model (a trained teacher in practice) is one call, though
    there it lost 3 points against plain fine-tuning:

    >>> small = tfslim.distill(teacher, small, x, y, epochs=1)
    >>> small.count_params()
    79
    """

    def __init__(
        self,
        target_fraction: float | None = None,
        *,
        max_params: int | float | None = None,
        max_macs: int | float | None = None,
        max_int8_bytes: int | float | None = None,
        max_latency_ms: float | None = None,
        target=None,
        criterion: str = "l1",
        schedule: str = "polynomial",
        updates: int = 10,
        skip_layers: Iterable[str | type] = (),
        channel_multiple: int = 1,
        allocation: str = "uniform",
    ):
        super().__init__()
        self.limits = {
            figure: _check_limit(f"max_{figure}", value)
            for figure, value in (
                ("params", max_params),
                ("macs", max_macs),
                ("int8_bytes", max_int8_bytes),
            )
            if value is not None
        }
        self.target = _check_latency_target(max_latency_ms, target)
        if max_latency_ms is not None:
            self.limits["latency_ms"] = float(max_latency_ms)
        if (target_fraction is None) == (not self.limits):
            raise ValueError(
                "ChannelPruning needs one target: `target_fraction`, or a footprint "
                "(`max_params`, `max_macs`, `max_int8_bytes`, `max_latency_ms`). Received: "
                f"target_fraction={target_fraction!r}, max_params={max_params!r}, "
                f"max_macs={max_macs!r}, max_int8_bytes={max_int8_bytes!r}, "
                f"max_latency_ms={max_latency_ms!r}"
            )
        if target_fraction is not None:
            target_fraction = check_rate("target_fraction", target_fraction)
        for argument, value, choices in (
            ("criterion", criterion, _CRITERIA),
            ("schedule", schedule, _SCHEDULES),
            ("allocation", allocation, _ALLOCATIONS),
        ):
            if value not in choices:
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected one of {list(choices)}. "
                    f"Received: {argument}={value!r}"
                )
        if allocation == "importance" and not self.limits:
            raise ValueError(
                "ChannelPruning(allocation='importance') shares a footprint among the groups "
                "and needs one (`max_params`, `max_macs`, `max_int8_bytes`, `max_latency_ms`); "
                "a `target_fraction` prunes every group alike. Received: "
                f"allocation={allocation!r}, target_fraction={target_fraction!r}"
            )
        updates = check_positive_int("updates", updates)
        self.channel_multiple = check_positive_int("channel_multiple", channel_multiple)
        self.target_fraction = None if target_fraction is None else float(target_fraction)
        self.planned_fraction = self.target_fraction
        self.criterion = criterion
        self.schedule = schedule
        self.allocation = allocation
        self.planned_channels: dict[str, int] | None = None
        self._allocated: dict[int, int] | None = None
        self.updates = updates
        self.skip_layers = policy.check_skip_layers(skip_layers)
        self._groups: list[tuple] = []  # (space, weights, mask variable)
        self._constraints: list[ChannelMask] = []
        self._update_steps: dict[int, float] = {}
        self._step = 0
        self._plain_train_function = self._train_function = None

    def _fraction_schedule(self) -> dict[int, float]:
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        if self.schedule == "constant":
            return {0: self.planned_fraction}
        if not epochs or not steps:
            raise ValueError(
                "ChannelPruning(schedule='polynomial') needs the number of steps per epoch, "
                "but `fit` does not know it. Pass `steps_per_epoch` to `fit` or use "
                f"schedule='constant'. Received: epochs={epochs}, steps={steps}"
            )
        end = max(1, int(0.7 * int(epochs) * int(steps)))
        points = np.linspace(0, end, self.updates + 1)[1:]
        return {int(s): self.planned_fraction * (1 - (1 - s / end) ** 3) for s in points}

    def on_train_begin(self, logs=None):
        model = self.model
        if is_tf_keras(model) or not isinstance(model, keras.Model):
            raise TypeError(
                "ChannelPruning needs a Keras 3 model. Received: model of type "
                f"{type(model).__name__}"
            )
        graph = ChannelGraph(model)
        planned = []  # (group, weights)
        for group in graph.groups():
            if any(policy.is_skipped(layer, self.skip_layers) for layer in group.sources):
                continue
            weights = group_weights(graph, group)
            if weights:
                planned.append((group, weights))
        if not planned:
            raise ValueError(
                f"ChannelPruning found no prunable channel group in model '{model.name}'. "
                f"Layers: {policy.describe_layers(model)}"
            )
        # The traced step reads the masks through the constraints: the same groups, weights
        # and existing constraints again (the next `fit` of this model) reuse that trace.
        key = tuple(
            (group.size, tuple((id(v), axis, id(v.constraint)) for _, v, axis in weights))
            for group, weights in planned
        )
        self._plain_train_function = model.train_function
        reused = reuse_constrained_step(model, "ChannelPruning", key)
        masks, constraints = reused if reused is not None else ((), ())
        masks, self._constraints = list(masks), list(constraints)
        self._groups = []
        for index, (group, weights) in enumerate(planned):
            initial = np.zeros(group.size, dtype="float32")
            initial[_kept_channels(weights, group.size)] = 1.0
            if reused is not None:
                mask = masks[index]
                mask.assign(initial)
            else:
                with model.distribute_strategy.scope():
                    mask = keras.Variable(initial, trainable=False, name="channel_mask")
                masks.append(mask)
                for _, variable, axis in weights:
                    if variable.trainable:
                        self._constraints.append(ChannelMask(variable, mask, axis))
            self._groups.append((group, weights, mask))
        for constraint in self._constraints:
            constraint.attach()
        if self.limits:
            self._plan(graph)
        self._update_steps = self._fraction_schedule()
        self._step = 0
        if reused is None:
            state = (tuple(masks), tuple(self._constraints))
            trace_constrained_step(model, "ChannelPruning", key, state)
        self._train_function = model.train_function

    def _plan(self, graph: ChannelGraph) -> None:
        """Sets `planned_fraction` (and each group's count, but for a fraction in ones)."""
        groups = [group for group, _, _ in self._groups]
        if self.allocation == "uniform":
            self.planned_fraction, allocated = plan_rounded_fraction(
                graph, groups, self.limits, self.target, self.channel_multiple
            )
            if self.channel_multiple == 1:
                return
            self._allocated = allocated
        else:
            scores = {
                group.id: channel_scores(weights, group.size, self.criterion)
                for group, weights, _ in self._groups
            }
            self._allocated = allocate_channels(
                graph, groups, scores, self.limits, self.target, self.channel_multiple
            )
            total = sum(group.size for group in groups)
            self.planned_fraction = sum(self._allocated.values()) / total
        self.planned_channels = {
            "/".join(layer.name for layer in group.sources): group.size - self._allocated[group.id]
            for group in groups
        }

    def on_train_batch_begin(self, batch, logs=None):
        fraction = self._update_steps.get(self._step)
        if fraction is not None:
            self._apply(fraction)
        self._step += 1

    def _apply(self, fraction: float) -> None:
        for group, weights, mask in self._groups:
            current = np.asarray(mask.numpy())
            if self._allocated is None:
                n_prune = _n_pruned(fraction, group.size, self.channel_multiple)
            else:  # the group's share of the schedule's progress to its planned count
                progress = fraction / self.planned_fraction if self.planned_fraction else 0.0
                n_prune = int(round(min(1.0, progress) * self._allocated[group.id]))
            pruned = np.flatnonzero(current == 0)
            if len(pruned) < n_prune:
                scores = channel_scores(weights, group.size, self.criterion)
                scores[pruned] = -np.inf
                order = np.argsort(scores, kind="stable")
                current = np.ones(group.size, dtype="float32")
                current[order[:n_prune]] = 0.0
                current[pruned] = 0.0
                mask.assign(current)
        for constraint in self._constraints:
            constraint.bake()

    def channel_fraction(self) -> float:
        """Pruned fraction of the prunable channels."""
        total = sum(group.size for group, _, _ in self._groups)
        pruned = sum(int((np.asarray(m.numpy()) == 0).sum()) for _, _, m in self._groups)
        return pruned / total if total else 0.0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["channel_fraction"] = self.channel_fraction()

    def on_train_end(self, logs=None):
        for constraint in self._constraints:
            constraint.bake()
            constraint.detach()
        if self._constraints:
            restore_plain_step(self.model, self._plain_train_function, self._train_function)
        self._constraints = []
        self._plain_train_function = self._train_function = None


def strip_channels(model, *, batch_norm_data=None, batch_norm_steps: int = 20):
    """Returns `model` rebuilt without its pruned channels (fewer filters and units).

    A channel is pruned when every weight that writes it (the group's filters, biases,
    depthwise filters, batch-norm gamma and beta) is zero, as `ChannelPruning` leaves them.
    The new model has the same layers, names and connections, the kept weights copied, and
    predicts what `model` predicts (up to float rounding). A model without pruned channels is
    returned as it is.

    Args:
        model: a Sequential or Functional Keras 3 model.
        batch_norm_data: inputs (array, `(x, y)` tuple, dataset or iterable of batches) to
            re-estimate batch-norm statistics of the smaller model with
            `tfslim.reestimate_batch_norm`; None leaves them. Defaults to `None`.
        batch_norm_steps: int. Batches for the re-estimation. Defaults to `20`.

    Returns:
        A Keras model.
    """
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is None:
        return model  # never built: nothing was trained, nothing pruned
    graph = ChannelGraph(model)
    keep = {}
    for group in graph.groups():
        kept = _kept_channels(group_weights(graph, group), group.size)
        if len(kept) == 0:
            kept = np.array([0])
        if len(kept) < group.size:
            keep[group.id] = kept
    if not keep:
        return model
    plans = {}
    for layer in _keras_graph.sublayers(model, recursive=False):
        in_layout, out_layout = graph.layer_io.get(layer.name, (None, None))
        plans[layer.name] = (graph.indices(in_layout, keep), graph.indices(out_layout, keep))
    pairs = []

    def clone(layer):
        config = layer.get_config()
        _, out_idx = plans.get(layer.name, (None, None))
        if out_idx is not None:
            if "filters" in config and not isinstance(layer, keras.layers.DepthwiseConv2D):
                config["filters"] = len(out_idx)
            elif "units" in config:
                config["units"] = len(out_idx)
        if isinstance(layer, keras.Model):
            copy = keras.models.clone_model(layer)
        else:
            copy = layer.__class__.from_config(config)
        pairs.append((copy, layer))
        return copy

    stripped = keras.models.clone_model(model, clone_function=clone)
    for copy, layer in pairs:
        in_idx, out_idx = plans.get(layer.name, (None, None))
        values = []
        for variable in layer.weights:
            value = np.asarray(variable.numpy())
            depthwise = isinstance(layer, _DEPTHWISE) or variable.name == "depthwise_kernel"
            if depthwise and value.ndim >= 3:
                if out_idx is not None:
                    value = np.take(value, out_idx, axis=-2)
            elif variable.name == "kernel" and value.ndim >= 2:
                if in_idx is not None:
                    value = np.take(value, in_idx, axis=-2)
                if out_idx is not None:
                    value = np.take(value, out_idx, axis=-1)
            elif out_idx is not None and value.ndim == 1:
                value = value[out_idx]  # bias, gamma, beta, moving mean and variance
            values.append(value)
        copy.set_weights(values)
    if batch_norm_data is not None:
        from tfslim.pruning.batch_norm_adaptation import reestimate_batch_norm

        reestimate_batch_norm(stripped, batch_norm_data, steps=batch_norm_steps)
    return stripped
