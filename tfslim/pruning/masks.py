"""Magnitude masks: unstructured, block (e.g. 1x16) and m-by-n (e.g. 2:4) patterns.

Patterns are laid out on the weight as TFLite stores it: output channels first, then the
flattened inputs (`kernel.reshape(-1, out).T` for a Keras `Dense` or `Conv2D` kernel). So
`block_size=(1, 16)` keeps or drops 16 consecutive inputs of one output channel, which is the
block the TFLite converter sparse-encodes with `Optimize.EXPERIMENTAL_SPARSITY` (measured: an 80%
1x16-pruned int8 model shrinks to ~0.27x, while tfmot's `block_size=(1, 16)`, laid out on the
Keras `(in, out)` kernel, gets no block encoding at all). `sparsity_m_by_n=(2, 4)` means two
zeros in every four consecutive input channels, tfmot's definition.
All functions build graph ops; they run inside the compiled train step on mask-update steps.
"""

from __future__ import annotations

import dataclasses
import numbers

import tensorflow as tf

from tfslim._checks import invalid_type, invalid_value

_POOLING_TYPES = ("AVG", "MAX")


def _pair(name: str, value, *, minimum: int, example: str) -> tuple[int, int]:
    expected = f"a pair of ints >= {minimum}, e.g. {example}"
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        raise invalid_type(name, expected, value)
    if len(value) != 2 or any(v < minimum for v in value):
        raise invalid_value(name, expected, value)
    return int(value[0]), int(value[1])


@dataclasses.dataclass(frozen=True)
class Granularity:
    """Which groups of weights are pruned together.

    Args:
        block_size: (rows, cols) of the blocks pruned together on the TFLite `(out, in)`
            layout. `(1, 1)` is unstructured pruning.
        block_pooling_type: "AVG" or "MAX", how a block's magnitude is computed.
        sparsity_m_by_n: (m, n) for "m zeros in every n consecutive input channels", or None.
    """

    block_size: tuple[int, int] = (1, 1)
    block_pooling_type: str = "AVG"
    sparsity_m_by_n: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(
            self, "block_size", _pair("block_size", self.block_size, minimum=1, example="(1, 16)")
        )
        if self.block_pooling_type not in _POOLING_TYPES:
            raise ValueError(
                "Invalid value for argument `block_pooling_type`. Expected one of "
                f"{_POOLING_TYPES}. Received: block_pooling_type={self.block_pooling_type!r}"
            )
        if self.sparsity_m_by_n is not None:
            m, n = _pair("sparsity_m_by_n", self.sparsity_m_by_n, minimum=1, example="(2, 4)")
            if m >= n:
                raise ValueError(
                    "Invalid value for argument `sparsity_m_by_n`. Expected (m, n) with "
                    f"0 < m < n (m zeros in every n weights). Received: sparsity_m_by_n={(m, n)}"
                )
            if self.block_size != (1, 1):
                raise ValueError(
                    "Arguments `block_size` and `sparsity_m_by_n` cannot be combined. "
                    f"Received: block_size={self.block_size}, sparsity_m_by_n={(m, n)}"
                )
            object.__setattr__(self, "sparsity_m_by_n", (m, n))

    def get_config(self) -> dict:
        return {
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "sparsity_m_by_n": None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n),
        }

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity an m-by-n pattern imposes regardless of the schedule, else None."""
        if self.sparsity_m_by_n is None:
            return None
        m, n = self.sparsity_m_by_n
        return m / n

    def check_weight(self, shape, where: str) -> None:
        """Raises ValueError if a weight of `shape` cannot take this pattern.

        Args:
            shape: the weight's static shape.
            where: names the weight in the message, e.g. "layer 'dense' (Dense), weight 'kernel'".
        """
        shape = tuple(shape)
        if self.sparsity_m_by_n is not None:
            m, n = self.sparsity_m_by_n
            if len(shape) < 2 or shape[-2] % n:
                channels = shape[-2] if len(shape) >= 2 else None
                raise ValueError(
                    f"Invalid value for argument `sparsity_m_by_n`. m-by-n sparsity {m}:{n} "
                    f"needs the input channels of {where} to be a multiple of {n}. Received: "
                    f"weight shape {shape} with {channels} input channels. Skip this layer "
                    "(`skip_layers`) or choose an n that divides it."
                )
        elif self.block_size != (1, 1) and len(shape) < 2:
            raise ValueError(
                f"Invalid value for argument `block_size`. Block sparsity needs a weight of rank "
                f">= 2, {where} has shape {shape}. Received: block_size={self.block_size}"
            )

    def compute_mask(self, weight, sparsity):
        """Returns a 0/1 mask (weight's dtype) keeping the largest-magnitude groups.

        Args:
            weight: the weight tensor, Keras layout (output channels last).
            sparsity: scalar float tensor, fraction of weights to zero (ignored for m-by-n).
        """
        if self.sparsity_m_by_n is not None:
            mask = _m_by_n_mask(weight, *self.sparsity_m_by_n)
        elif self.block_size == (1, 1):
            mask = _unstructured_mask(tf.abs(weight), sparsity)
        else:
            mask = _block_mask(weight, sparsity, self.block_size, self.block_pooling_type)
        return tf.cast(mask, weight.dtype)


def _unstructured_mask(scores, sparsity):
    """Drops exactly round(sparsity * size) lowest scores (ties broken by position)."""
    flat = tf.reshape(scores, [-1])
    size = tf.size(flat)
    num_pruned = tf.cast(tf.round(tf.cast(size, tf.float32) * sparsity), tf.int32)
    ranks = tf.math.invert_permutation(tf.argsort(flat, stable=True))
    return tf.reshape(ranks >= num_pruned, tf.shape(scores))


def _to_matrix(weight):
    """Keras kernel (..., out) -> TFLite layout (out, prod(...))."""
    out = weight.shape[-1]
    return tf.transpose(tf.reshape(weight, [-1, out]))


def _from_matrix(matrix, shape):
    return tf.reshape(tf.transpose(matrix), shape)


def _block_mask(weight, sparsity, block_size, pooling):
    rows, cols = block_size
    matrix = tf.abs(_to_matrix(weight))
    height, width = matrix.shape
    pad_h, pad_w = -height % rows, -width % cols
    padded = tf.pad(matrix, [[0, pad_h], [0, pad_w]])
    blocks = tf.reshape(padded, [(height + pad_h) // rows, rows, (width + pad_w) // cols, cols])
    if pooling == "MAX":
        scores = tf.reduce_max(blocks, axis=[1, 3])
    else:
        # Average over the real weights only, so edge blocks are not penalised by padding.
        ones = tf.pad(tf.ones_like(matrix), [[0, pad_h], [0, pad_w]])
        counts = tf.reduce_sum(tf.reshape(ones, blocks.shape), axis=[1, 3])
        scores = tf.reduce_sum(blocks, axis=[1, 3]) / counts
    keep = tf.cast(_unstructured_mask(scores, sparsity), weight.dtype)
    keep = tf.repeat(tf.repeat(keep, rows, axis=0), cols, axis=1)[:height, :width]
    return _from_matrix(keep, weight.shape)


def _m_by_n_mask(weight, m, n):
    """Keeps the n - m largest of every n consecutive input channels."""
    rank = len(weight.shape)
    perm = [*range(rank - 2), rank - 1, rank - 2]  # input channels last
    moved = tf.transpose(weight, perm)
    groups = tf.reshape(tf.abs(moved), [-1, n])
    _, keep_idx = tf.math.top_k(groups, k=n - m, sorted=False)
    keep = tf.reduce_sum(tf.one_hot(keep_idx, n, dtype=weight.dtype), axis=1)
    return tf.transpose(tf.reshape(keep, tf.shape(moved)), perm)
