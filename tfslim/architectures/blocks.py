"""Efficient convolution blocks for the Keras functional API.

Each block is a function that takes a KerasTensor and returns one, built only from standard
Keras layers (Conv2D, DepthwiseConv2D, BatchNormalization, Activation, Add, Multiply,
GlobalAveragePooling2D), so a model made of them saves and loads with plain
`keras.saving.load_model`, can be QAT-wrapped by `tfslim.quantize_model` and converts to
int8 ops that TensorFlow Lite Micro runs.

The width multiplier `alpha` scales a block's output channels the way MobileNets do: the
scaled count is rounded to a multiple of `divisor` (see `make_divisible`) so that int8
kernels with SIMD lanes stay efficient. At `alpha=1` the channel counts are used as given.
"""

import keras
from keras import layers

from tfslim._checks import (
    check_float,
    check_image_tensor,
    check_positive_float,
    check_positive_int,
)

__all__ = [
    "make_divisible",
    "scale_filters",
    "depthwise_separable_block",
    "inverted_residual_block",
    "squeeze_excite_block",
]


def make_divisible(value: float, *, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to the nearest multiple of `divisor`.

    The rule of the MobileNet papers: round to the nearest multiple, never below
    `min_value`, and never more than 10% below `value` (round up one step instead).

    Args:
        value: float. The unrounded channel count, e.g. `filters * alpha`.
        divisor: int. The multiple to round to. Defaults to `8`.
        min_value: int or None. The smallest count returned; None means `divisor`.
            Defaults to `None`.

    Returns:
        The rounded count, an int.

    Raises:
        ValueError: If `value` is not > 0 or `divisor` is not an int >= 1.

    Example:

    >>> make_divisible(32 * 0.25)
    8
    >>> make_divisible(24 * 0.35)
    8
    >>> make_divisible(96 * 0.35)
    32
    """
    value = check_positive_float("value", value)
    divisor = check_positive_int("divisor", divisor)
    min_value = divisor if min_value is None else check_positive_int("min_value", min_value)
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_filters(filters: int, *, alpha: float = 1.0, divisor: int = 8) -> int:
    """Applies a width multiplier to a channel count.

    Args:
        filters: int. The channel count at `alpha=1`.
        alpha: float. The width multiplier, > 0. Defaults to `1.0`.
        divisor: int. Scaled counts are rounded to a multiple of it with
            `make_divisible`. Defaults to `8`.

    Returns:
        `filters` unchanged when `alpha == 1`, else `make_divisible(filters * alpha)`.

    Raises:
        ValueError: If `filters`, `alpha` or `divisor` is not positive.

    Example:

    >>> scale_filters(64, alpha=0.5)
    32
    >>> scale_filters(12)
    12
    """
    filters = check_positive_int("filters", filters)
    alpha = check_positive_float("alpha", alpha)
    divisor = check_positive_int("divisor", divisor)
    if alpha == 1.0:
        return filters
    return make_divisible(filters * alpha, divisor=divisor)


def _name(prefix: str | None, suffix: str) -> str | None:
    return None if prefix is None else f"{prefix}_{suffix}"


def _conv_bn(x, filters, kernel_size, *, strides, use_bias, activation, regularizer, name):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=_name(name, "conv"),
    )(x)
    x = layers.BatchNormalization(name=_name(name, "bn"))(x)
    if activation is not None:
        x = layers.Activation(activation, name=_name(name, activation))(x)
    return x


def _depthwise_bn(x, kernel_size, *, strides, use_bias, activation, regularizer, name):
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        depthwise_initializer="he_normal",
        depthwise_regularizer=regularizer,
        name=_name(name, "dw"),
    )(x)
    x = layers.BatchNormalization(name=_name(name, "dw_bn"))(x)
    return layers.Activation(activation, name=_name(name, f"dw_{activation}"))(x)


def depthwise_separable_block(
    inputs: keras.KerasTensor,
    filters: int,
    *,
    alpha: float = 1.0,
    kernel_size: int | tuple[int, int] = 3,
    strides: int | tuple[int, int] = 1,
    use_bias: bool = False,
    activation: str = "relu",
    weight_decay: float = 0.0,
    divisor: int = 8,
    name: str | None = None,
) -> keras.KerasTensor:
    """A depthwise-separable convolution: depthwise conv, BN, act, pointwise conv, BN, act.

    The block of MobileNetV1 and DS-CNN. It costs about `1/filters + 1/kernel_area` of a
    full convolution's multiply-accumulates.

    Args:
        inputs: KerasTensor. A (batch, height, width, channels) tensor.
        filters: int. Output channels at `alpha=1`.
        alpha: float. Width multiplier applied to `filters`, > 0. Defaults to `1.0`.
        kernel_size: int or tuple. Depthwise kernel size. Defaults to `3`.
        strides: int or tuple. Depthwise strides. Defaults to `1`.
        use_bias: bool. Whether the convolutions have a bias. The batch norm that follows
            makes it redundant, but the MLPerf Tiny references keep it. Defaults to `False`.
        activation: str. Activation after each batch norm, e.g. `"relu"` or `"relu6"`.
            Defaults to `"relu"`.
        weight_decay: float. L2 penalty on the kernels; 0 adds none. Defaults to `0.0`.
        divisor: int. Scaled channels are rounded to a multiple of it. Defaults to `8`.
        name: str or None. Prefix of the layer names; None lets Keras name them.
            Defaults to `None`.

    Returns:
        A KerasTensor with `scale_filters(filters, alpha=alpha)` channels.

    Raises:
        TypeError: If `inputs` is not a KerasTensor.
        ValueError: If `inputs` is not rank 4, or `filters`/`alpha` is not positive.

    Example:

    >>> x = keras.Input(shape=(32, 32, 16))
    >>> depthwise_separable_block(x, 64, alpha=0.5, strides=2).shape
    (None, 16, 16, 32)
    """
    check_image_tensor("inputs", inputs)
    out_channels = scale_filters(filters, alpha=alpha, divisor=divisor)
    regularizer = _l2(weight_decay)
    x = _depthwise_bn(
        inputs,
        kernel_size,
        strides=strides,
        use_bias=use_bias,
        activation=activation,
        regularizer=regularizer,
        name=name,
    )
    return _conv_bn(
        x,
        out_channels,
        1,
        strides=1,
        use_bias=use_bias,
        activation=activation,
        regularizer=regularizer,
        name=_name(name, "pw"),
    )


def squeeze_excite_block(
    inputs: keras.KerasTensor,
    *,
    ratio: float = 0.25,
    activation: str = "relu",
    gate_activation: str = "sigmoid",
    divisor: int = 8,
    name: str | None = None,
) -> keras.KerasTensor:
    """Squeeze-and-excitation: rescales each channel by a gate computed from the global mean.

    Global average pool, 1x1 conv down to `ratio` of the channels, activation, 1x1 conv
    back up, gate activation, then channel-wise multiply with `inputs`.

    Args:
        inputs: KerasTensor. A (batch, height, width, channels) tensor.
        ratio: float. Squeezed channels as a fraction of the input channels, in (0, 1].
            Defaults to `0.25`.
        activation: str. Activation of the squeeze conv. Defaults to `"relu"`.
        gate_activation: str. Activation of the gate, e.g. `"sigmoid"` or
            `"hard_sigmoid"`. Defaults to `"sigmoid"`.
        divisor: int. The squeezed channels are rounded to a multiple of it.
            Defaults to `8`.
        name: str or None. Prefix of the layer names. Defaults to `None`.

    Returns:
        A KerasTensor with the shape of `inputs`.

    Raises:
        TypeError: If `inputs` is not a KerasTensor.
        ValueError: If `inputs` is not rank 4 or `ratio` is not in (0, 1].

    Example:

    >>> x = keras.Input(shape=(8, 8, 32))
    >>> squeeze_excite_block(x, ratio=0.25).shape
    (None, 8, 8, 32)
    """
    channels = check_image_tensor("inputs", inputs)
    ratio = check_float("ratio", ratio, minimum=0, maximum=1, min_inclusive=False)
    squeezed = make_divisible(channels * ratio, divisor=divisor)
    s = layers.GlobalAveragePooling2D(keepdims=True, name=_name(name, "squeeze"))(inputs)
    s = layers.Conv2D(squeezed, 1, name=_name(name, "reduce"))(s)
    s = layers.Activation(activation, name=_name(name, f"reduce_{activation}"))(s)
    s = layers.Conv2D(channels, 1, name=_name(name, "expand"))(s)
    s = layers.Activation(gate_activation, name=_name(name, "gate"))(s)
    return layers.Multiply(name=_name(name, "excite"))([inputs, s])


def inverted_residual_block(
    inputs: keras.KerasTensor,
    filters: int,
    *,
    expansion: float = 6,
    alpha: float = 1.0,
    kernel_size: int | tuple[int, int] = 3,
    strides: int | tuple[int, int] = 1,
    se_ratio: float | None = None,
    activation: str = "relu6",
    weight_decay: float = 0.0,
    divisor: int = 8,
    name: str | None = None,
) -> keras.KerasTensor:
    """The MobileNetV2 inverted residual: expand, depthwise, (squeeze-excite), project.

    A 1x1 conv expands the channels `expansion` times, a depthwise conv filters them, a
    linear 1x1 conv projects to the output channels, and the input is added back when the
    shapes match (stride 1, same channels). Convolutions have no bias (batch norm follows).

    Args:
        inputs: KerasTensor. A (batch, height, width, channels) tensor.
        filters: int. Output channels at `alpha=1`.
        expansion: float. Expansion factor of the first 1x1 conv, >= 1; 1 skips that conv.
            Defaults to `6`.
        alpha: float. Width multiplier applied to `filters`, > 0. Defaults to `1.0`.
        kernel_size: int or tuple. Depthwise kernel size. Defaults to `3`.
        strides: int or tuple. Depthwise strides. Defaults to `1`.
        se_ratio: float or None. If set, a `squeeze_excite_block` with this ratio (of the
            expanded channels) follows the depthwise conv. Defaults to `None`.
        activation: str. Activation after the expansion and depthwise convs.
            Defaults to `"relu6"`.
        weight_decay: float. L2 penalty on the kernels; 0 adds none. Defaults to `0.0`.
        divisor: int. Scaled channels are rounded to a multiple of it. Defaults to `8`.
        name: str or None. Prefix of the layer names. Defaults to `None`.

    Returns:
        A KerasTensor with `scale_filters(filters, alpha=alpha)` channels.

    Raises:
        TypeError: If `inputs` is not a KerasTensor.
        ValueError: If `inputs` is not rank 4, or `filters`, `alpha` or `expansion` is out
            of range.

    Example:

    >>> x = keras.Input(shape=(16, 16, 24))
    >>> inverted_residual_block(x, 24, expansion=6).shape
    (None, 16, 16, 24)
    """
    in_channels = check_image_tensor("inputs", inputs)
    expansion = check_float("expansion", expansion, minimum=1)
    out_channels = scale_filters(filters, alpha=alpha, divisor=divisor)
    regularizer = _l2(weight_decay)
    x = inputs
    if expansion != 1:
        expanded = make_divisible(in_channels * expansion, divisor=divisor)
        x = _conv_bn(
            x,
            expanded,
            1,
            strides=1,
            use_bias=False,
            activation=activation,
            regularizer=regularizer,
            name=_name(name, "expand"),
        )
    x = _depthwise_bn(
        x,
        kernel_size,
        strides=strides,
        use_bias=False,
        activation=activation,
        regularizer=regularizer,
        name=name,
    )
    if se_ratio is not None:
        x = squeeze_excite_block(x, ratio=se_ratio, divisor=divisor, name=_name(name, "se"))
    x = _conv_bn(
        x,
        out_channels,
        1,
        strides=1,
        use_bias=False,
        activation=None,
        regularizer=regularizer,
        name=_name(name, "project"),
    )
    if _is_unit(strides) and in_channels == out_channels:
        x = layers.Add(name=_name(name, "add"))([inputs, x])
    return x


def _is_unit(strides: int | tuple[int, int]) -> bool:
    if isinstance(strides, int):
        return strides == 1
    return all(s == 1 for s in strides)


def _l2(weight_decay: float):
    weight_decay = check_float("weight_decay", weight_decay, minimum=0)
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
