"""Fake quantizers that reproduce TFLite's int8 arithmetic during training.

Weights are quantized symmetrically in the narrow range [-127, 127] (zero point 0), per
output channel for convolutions and per tensor for dense layers. Activations are quantized
asymmetrically in [-128, 127] with a range observed as an exponential moving average of the
batch minimum and maximum. Both lower to `tf.quantization.fake_quant_*` ops, which the TFLite
converter folds into int8 kernels.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from tfslim._checks import check_rate
from tfslim._deployment import in_deployed_graph

# Fixed output ranges that TFLite's int8 kernels impose (scale, zero point) expressed as the
# float (min, max) the fake-quant op needs: softmax/sigmoid scale 1/256 zero point -128,
# tanh scale 1/128 zero point 0.
FIXED_OUTPUT_RANGES = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}

_EPSILON = 1e-8


def _symmetric_fake_quant(weights, bound, per_channel):
    """`fake_quant_with_min_max_vars[_per_channel](weights, -bound, bound)`, narrow range,
    with an identity (straight-through) gradient.

    `bound` is the largest weight magnitude (per channel or per tensor), so no weight lies
    outside the quantization range and the straight-through estimator passes every gradient
    unchanged. TF's own gradient op would spend a pass over the weights on a mask that is all
    ones (except that it zeroes the largest weight whenever `127 * (2 * bound / 254)` rounds
    below `bound` in float32, a rounding artefact), plus reductions for `min` and `max`, which
    are stopped gradients here. On CPU that op costs more than the layer's matmul (about
    1 ms per step for a 55k-weight Dense kernel). The forward values are TF's kernel's.
    """
    op = (
        tf.quantization.fake_quant_with_min_max_vars_per_channel
        if per_channel
        else tf.quantization.fake_quant_with_min_max_vars
    )

    @tf.custom_gradient
    def quantize(w):
        return op(w, -bound, bound, num_bits=8, narrow_range=True), lambda dy: dy

    return quantize(weights)


def fake_quant_weights(weights, *, axis=None, training=False):
    """Fake-quantizes `weights` symmetrically to int8 in [-127, 127].

    The range is computed from the current weights on every call, so the deployed range
    always matches the trained weights (after the converter freezes them it folds to a
    constant).

    Args:
        weights: Tensor. The float weights.
        axis: int. Channel axis for per-channel quantization, or `None` for per-tensor.
            Defaults to `None`.
        training: bool. Whether gradients will be taken: the same values then come with a
            cheaper straight-through gradient; the inference graph (which the converter
            reads) keeps the bare fake-quant op. Defaults to `False`.

    Returns:
        The weights rounded to the int8 grid, as float.
    """
    weights = tf.convert_to_tensor(weights)
    if axis is None:
        # The range is not trained: gradients reach the weights only through the rounding
        # (straight-through estimator), as in tfmot, and the backward pass stays small.
        bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(weights)), _EPSILON))
        if training:
            return _symmetric_fake_quant(weights, bound, per_channel=False)
        return tf.quantization.fake_quant_with_min_max_vars(
            weights, -bound, bound, num_bits=8, narrow_range=True
        )
    rank = weights.shape.rank
    axis = axis % rank
    if axis != rank - 1:
        perm = [i for i in range(rank) if i != axis] + [axis]
        inverse = [perm.index(i) for i in range(rank)]
        quantized = fake_quant_weights(tf.transpose(weights, perm), axis=-1, training=training)
        return tf.transpose(quantized, inverse)
    bound = tf.stop_gradient(
        tf.maximum(tf.reduce_max(tf.abs(weights), axis=list(range(rank - 1))), _EPSILON)
    )
    if training:
        return _symmetric_fake_quant(weights, bound, per_channel=True)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        weights, -bound, bound, num_bits=8, narrow_range=True
    )


def constant_on_int8_grid(value):
    """A constant operand of an int8 ADD, SUB or MUL as the converter stores it: asymmetric
    per-tensor int8 on its own range widened to hold zero, so its values land on that grid
    (within half a step). A scalar is returned as it is (it sits at an end of its range,
    which the grid holds exactly), and so is anything not a float array."""
    if isinstance(value, keras.KerasTensor):
        return value
    try:
        array = np.asarray(value)
    except Exception:  # Not array-like (a name, None): not a constant operand.
        return value
    if array.dtype.kind != "f" or array.size <= 1 or not np.isfinite(array).all():
        return value
    low, high = min(0.0, float(array.min())), max(0.0, float(array.max()))
    if low == high:
        return value
    rounded = tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(array, "float32"), low, high, num_bits=8, narrow_range=False
    )
    return np.asarray(rounded).astype(array.dtype)


def check_ema_decay(ema_decay) -> float:
    """Returns `ema_decay` as a float if it is in [0, 1), else raises (see `check_rate`)."""
    return check_rate("ema_decay", ema_decay)


def attach_logits(outputs, logits):
    """Marks `outputs` (a softmax or sigmoid output, maybe fake-quantized) with its `logits`.

    Keras computes cross-entropy from the logits behind a probability output when the tensor
    carries `_keras_logits` (as Keras's own softmax and sigmoid set it): stable, and the
    softmax, the output rounding and their gradients drop out of the training step. The
    forward values (predictions, metrics, the converted model) are unchanged; the loss just
    does not see int8's 1/256 rounding of the read-out probabilities, whose
    straight-through gradient is zero for every probability above 255/256 anyway. A tensor
    type that takes no attributes is left unmarked.
    """
    if logits is None:
        return outputs
    with contextlib.suppress(AttributeError):
        outputs._keras_logits = logits
    return outputs


def attach_grid(outputs, low, high):
    """Marks `outputs`, fake-quantized on [`low`, `high`], with that range (`input_grid`
    reads it back), the way `attach_logits` marks a probability output with its logits.

    An op whose int8 kernel keeps its input's scale but computes values between the grid's
    steps (average pooling, bilinear resizing) must round its float output onto that same
    grid; this is how it finds the grid. A layer that returns a new tensor (a reshape, a
    padding) drops the mark, so the quantization rewrite hands the op the tensor that carries
    it; a tensor type that takes no attributes is left unmarked.
    """
    with contextlib.suppress(AttributeError):
        outputs._tfslim_grid = (low, high)
    return outputs


def input_grid(tensor):
    """The (low, high) range `attach_grid` put on `tensor`, or None."""
    return getattr(tensor, "_tfslim_grid", None)


def _ties_away_from_int8_zero(values, low, high, window=None):
    """Moves values that lie exactly halfway between two int8 steps a fraction of a step
    away from the int8 value 0, so that the fake-quant op after it rounds them as TFLite's
    int8 AVERAGE_POOL_2D does: half away from zero in the int8 domain, where the fake-quant
    op rounds half up in its 0..255 domain (they differ on every tie below the grid's
    middle, a quarter of all 2x2 averages). An average of N grid values lies at least 1/N
    of a step from the nearest rounding boundary unless it is a tie, so a move of 1/(4N)
    steps (1/1000 where N is not known or small) changes nothing else."""
    scale = tf.maximum((high - low) / 255.0, _EPSILON)  # An all-zero range: no ties.
    zero = tf.clip_by_value(tf.floor(-low / scale + 0.5), 0.0, 255.0)  # TF's nudging.
    raw = (values - (0.0 - zero) * scale) / scale - 128.0  # The int8 value, maybe x.5.
    fraction = 1e-3 if window is None else min(1e-3, 0.25 / window)
    return values + tf.stop_gradient(tf.sign(raw) * (fraction * scale))


@keras.saving.register_keras_serializable(package="tfslim")
class RoundToInputGrid(keras.layers.Layer):
    """Rounds `values` onto the int8 grid of `source`, the tensor they were computed from.

    Called as `RoundToInputGrid()([values, source])` after an average pooling or a bilinear
    resize of `source`: TFLite's int8 AVERAGE_POOL_2D and RESIZE_BILINEAR keep their input's
    scale and zero point and round their output onto them, so without this the QAT model
    passes on averages that the int8 file has rounded. The fake-quant op on the input's
    own range lets the converter keep the single int8 op (no QUANTIZE after it). Where
    `source` carries no grid (see `attach_grid`), `values` pass unchanged.

    Args:
        int8_ties: bool. Round ties half away from the int8 zero, as the int8 average
            pooling kernels do (LiteRT's XNNPACK, builtin and reference kernels, and so
            TFLite Micro's, alike); the graph traced for the converter leaves that step
            out (see `deployed_graph`). Defaults to `False`.
        window: int or `None`. How many input values each output averages (the pool's
            window), which bounds how far a tie may be moved without moving anything
            else; `None` (a window below 1,000 values) by default.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, *, int8_ties: bool = False, window=None, **kwargs):
        super().__init__(**kwargs)
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise ValueError(
                "Invalid value for argument `window`. Expected a positive int (the number "
                f"of values each output averages) or None. Received: window={window!r}"
            )
        self.int8_ties = bool(int8_ties)
        self.window = window

    def call(self, inputs):
        values, source = inputs
        grid = input_grid(source)
        if grid is None:
            return values
        low, high = grid
        x = tf.cast(values, "float32")
        if self.int8_ties and not in_deployed_graph():
            x = _ties_away_from_int8_zero(x, low, high, self.window)
        outputs = tf.quantization.fake_quant_with_min_max_vars(
            x, low, high, num_bits=8, narrow_range=False
        )
        return attach_grid(tf.cast(outputs, values.dtype), low, high)

    def get_config(self):
        config = super().get_config()
        config.update({"int8_ties": self.int8_ties, "window": self.window})
        return config

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _cross_replica_max(value):
    """Maximum of the scalar `value` over replicas; call it in a replica context.

    `ReplicaContext.all_reduce` only sums or averages, so the scalars are gathered.
    """
    gathered = tf.distribute.get_replica_context().all_gather(tf.reshape(value, [1]), axis=0)
    return tf.reduce_max(gathered)


@keras.saving.register_keras_serializable(package="tfslim")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor to asymmetric per-tensor int8 with an observed range.

    While training, the range follows an exponential moving average of the batch minimum and
    maximum (initialised from the first batch, reduced over replicas under a distribution
    strategy, always containing zero). Once frozen (see `FreezeQuantization`), the range
    stays fixed and training continues against the deployed quantization grid.

    Args:
        ema_decay: float. Decay of the moving average of the range. Defaults to `0.99`.
        fixed_range: tuple of two floats or `None`. A range imposed by the TFLite kernel that
            produces this tensor (softmax, sigmoid, tanh); no observer is used. Defaults to
            `None`.
        nonnegative: bool. The tensor is never negative (a ReLU or ReLU6 output), so the
            batch minimum is 0 without a reduction over it. Defaults to `False`.
        **kwargs: Base layer keyword arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> q = ActivationQuantizer()
    >>> _ = q(np.array([[0.0, 1.0, 2.0]], "float32"), training=True)
    >>> [round(float(v), 3) for v in q.get_range()]
    [0.0, 2.0]
    """

    def __init__(
        self, *, ema_decay: float = 0.99, fixed_range=None, nonnegative: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        self.ema_decay = check_ema_decay(ema_decay)
        self.fixed_range = None if fixed_range is None else tuple(float(v) for v in fixed_range)
        self.nonnegative = bool(nonnegative)
        self.supports_masking = True

    def build(self, input_shape):
        low, high = self.fixed_range or (-6.0, 6.0)
        # The observer state is written from every replica with identical (all-reduced)
        # values, so taking the first replica's write keeps mirrored copies in sync.
        common = dict(shape=(), trainable=False, aggregation="only_first_replica")
        self.range_min = self.add_weight(
            name="range_min", initializer=keras.initializers.Constant(low), **common
        )
        self.range_max = self.add_weight(
            name="range_max", initializer=keras.initializers.Constant(high), **common
        )
        self.observed = self.add_weight(name="observed", initializer="zeros", **common)
        self.frozen = self.add_weight(name="frozen", initializer="zeros", **common)

    def call(self, inputs, training=None):
        x = tf.cast(inputs, "float32")
        if training and self.fixed_range is None:
            x_stop = tf.stop_gradient(x)
            batch_max = tf.maximum(tf.reduce_max(x_stop), 0.0)
            if self.nonnegative:
                batch_min = tf.zeros_like(batch_max)
            else:
                batch_min = tf.minimum(tf.reduce_min(x_stop), 0.0)
            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                if not self.nonnegative:
                    batch_min = -_cross_replica_max(-batch_min)
                batch_max = _cross_replica_max(batch_max)
            # One blend weight covers the three cases: first batch (take it), moving
            # average (1 - decay) and frozen (keep the range).
            weight = (1.0 - tf.convert_to_tensor(self.frozen)) * (
                1.0 - self.ema_decay * tf.convert_to_tensor(self.observed)
            )
            old_min = tf.convert_to_tensor(self.range_min)
            old_max = tf.convert_to_tensor(self.range_max)
            low = old_min + weight * (batch_min - old_min)
            high = old_max + weight * (batch_max - old_max)
            self.range_min.assign(low)
            self.range_max.assign(high)
            self.observed.assign(1.0)
        else:
            low, high = tf.convert_to_tensor(self.range_min), tf.convert_to_tensor(self.range_max)
        outputs = tf.quantization.fake_quant_with_min_max_vars(
            x, low, high, num_bits=8, narrow_range=False
        )
        outputs = attach_grid(tf.cast(outputs, inputs.dtype), low, high)
        return attach_logits(outputs, getattr(inputs, "_keras_logits", None))

    def get_range(self) -> tuple[float, float]:
        """Returns the current (min, max) float range of the quantized tensor."""
        return float(self.range_min.numpy()), float(self.range_max.numpy())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ema_decay": self.ema_decay,
                "fixed_range": self.fixed_range,
                "nonnegative": self.nonnegative,
            }
        )
        return config
