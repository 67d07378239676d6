"""The four MLPerf Tiny reference models, as Keras 3 functional models.

With their defaults the builders reproduce the reference configurations of the MLPerf
Tiny benchmark training code (github.com/mlcommons/tiny, `benchmark/training`), layer for
layer, with the published Keras parameter counts:

| builder            | task                    | input     | params  | reference int8 .tflite |
|--------------------|-------------------------|-----------|---------|------------------------|
| `ds_cnn`           | keyword spotting        | 49x10x1   | 24,908  | 53,936 bytes           |
| `mobilenet_v1`     | visual wake words       | 96x96x3   | 221,794 | 333,288 bytes          |
| `resnet8`          | image classification    | 32x32x3   | 78,666  | 98,496 bytes           |
| `fc_autoencoder`   | anomaly detection       | 640       | 269,992 | 276,976 bytes          |

`MLPERF_TINY_MODELS` holds these figures. Every builder also accepts small configurations
(fewer filters, blocks or units, smaller inputs) for quick experiments and tests.
"""

import dataclasses
from collections.abc import Callable

import keras
from keras import layers

from tfslim._checks import (
    check_positive_int,
    check_rate,
    check_shape,
)
from tfslim.architectures.blocks import _conv_bn, _l2, depthwise_separable_block, scale_filters

__all__ = [
    "ReferenceModel",
    "MLPERF_TINY_MODELS",
    "ds_cnn",
    "mobilenet_v1",
    "resnet8",
    "fc_autoencoder",
]


def _classifier_head(x, num_classes, *, dropout, classifier_activation):
    # Average over the whole feature map, as the references do; converts to AVERAGE_POOL_2D.
    x = layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="top_dropout")(x)
    return layers.Dense(
        num_classes,
        activation=classifier_activation,
        kernel_initializer="he_normal",
        name="predictions",
    )(x)


def ds_cnn(
    *,
    input_shape: tuple[int, int, int] = (49, 10, 1),
    num_classes: int = 12,
    filters: int = 64,
    num_blocks: int = 4,
    alpha: float = 1.0,
    first_kernel_size: tuple[int, int] = (10, 4),
    first_strides: tuple[int, int] = (2, 2),
    dropout: float = 0.2,
    top_dropout: float = 0.4,
    weight_decay: float = 1e-4,
    classifier_activation: str | None = "softmax",
    name: str = "ds_cnn",
) -> keras.Model:
    """DS-CNN, the MLPerf Tiny keyword-spotting reference model.

    A strided conv over the MFCC spectrogram, then `num_blocks` depthwise-separable blocks
    at constant width, global average pooling and a dense classifier. The defaults give
    the reference: 49x10x1 MFCC input, 12 keywords, 64 filters, 4 blocks, 24,908 params.

    Args:
        input_shape: tuple. (frames, coefficients, 1) input shape. Defaults to
            `(49, 10, 1)`.
        num_classes: int. Number of output classes. Defaults to `12`.
        filters: int. Channels of every conv at `alpha=1`. Defaults to `64`.
        num_blocks: int. Number of depthwise-separable blocks. Defaults to `4`.
        alpha: float. Width multiplier, > 0. Defaults to `1.0`.
        first_kernel_size: tuple. Kernel of the first conv. Defaults to `(10, 4)`.
        first_strides: tuple. Strides of the first conv. Defaults to `(2, 2)`.
        dropout: float. Dropout rate after the first conv, in [0, 1). Defaults to `0.2`.
        top_dropout: float. Dropout rate before the classifier, in [0, 1).
            Defaults to `0.4`.
        weight_decay: float. L2 penalty on conv kernels; 0 adds none. Defaults to `1e-4`.
        classifier_activation: str or None. Activation of the output layer; None returns
            logits. Defaults to `"softmax"`.
        name: str. Model name. Defaults to `"ds_cnn"`.

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: If an argument is out of range; the message names it.

    Example:

    >>> ds_cnn().count_params()
    24908
    >>> ds_cnn(input_shape=(8, 8, 1), num_classes=10, filters=8, num_blocks=1).output_shape
    (None, 10)
    """
    input_shape = check_shape("input_shape", input_shape, rank=3)
    num_classes = check_positive_int("num_classes", num_classes)
    channels = scale_filters(filters, alpha=alpha)
    num_blocks = check_positive_int("num_blocks", num_blocks)
    dropout = check_rate("dropout", dropout)
    top_dropout = check_rate("top_dropout", top_dropout)
    regularizer = _l2(weight_decay)

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn(
        inputs,
        channels,
        first_kernel_size,
        strides=first_strides,
        use_bias=True,
        activation="relu",
        regularizer=regularizer,
        name="stem",
    )
    if dropout > 0:
        x = layers.Dropout(dropout, name="stem_dropout")(x)
    for i in range(num_blocks):
        x = depthwise_separable_block(
            x, channels, use_bias=True, weight_decay=weight_decay, name=f"block{i + 1}"
        )
    outputs = _classifier_head(
        x, num_classes, dropout=top_dropout, classifier_activation=classifier_activation
    )
    return keras.Model(inputs, outputs, name=name)


# (pointwise filters at alpha=1, depthwise stride) of MobileNetV1's 13 separable blocks.
_MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def mobilenet_v1(
    *,
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = 2,
    alpha: float = 0.25,
    dropout: float = 0.0,
    weight_decay: float = 1e-4,
    classifier_activation: str | None = "softmax",
    name: str = "mobilenet_v1",
) -> keras.Model:
    """MobileNetV1, the MLPerf Tiny visual-wake-words reference model.

    A strided 3x3 conv then 13 depthwise-separable blocks (32 to 1024 channels at
    `alpha=1`, five stride-2 stages), global average pooling and a dense classifier.
    The defaults give the reference: 96x96x3 input, person / no person, `alpha=0.25`,
    221,794 params. Like the reference, the convolutions keep their biases.

    Args:
        input_shape: tuple. (height, width, channels) input shape. Defaults to
            `(96, 96, 3)`.
        num_classes: int. Number of output classes. Defaults to `2`.
        alpha: float. Width multiplier, > 0; channel counts are rounded to multiples
            of 8. Defaults to `0.25`.
        dropout: float. Dropout rate before the classifier, in [0, 1). Defaults to `0.0`.
        weight_decay: float. L2 penalty on conv kernels; 0 adds none. Defaults to `1e-4`.
        classifier_activation: str or None. Activation of the output layer; None returns
            logits. Defaults to `"softmax"`.
        name: str. Model name. Defaults to `"mobilenet_v1"`.

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: If an argument is out of range; the message names it.

    Example:

    >>> mobilenet_v1().count_params()
    221794
    """
    input_shape = check_shape("input_shape", input_shape, rank=3)
    num_classes = check_positive_int("num_classes", num_classes)
    stem_channels = scale_filters(32, alpha=alpha)
    dropout = check_rate("dropout", dropout)
    regularizer = _l2(weight_decay)

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn(
        inputs,
        stem_channels,
        3,
        strides=2,
        use_bias=True,
        activation="relu",
        regularizer=regularizer,
        name="stem",
    )
    for i, (filters, strides) in enumerate(_MOBILENET_V1_BLOCKS):
        x = depthwise_separable_block(
            x,
            filters,
            alpha=alpha,
            strides=strides,
            use_bias=True,
            weight_decay=weight_decay,
            name=f"block{i + 1}",
        )
    outputs = _classifier_head(
        x, num_classes, dropout=dropout, classifier_activation=classifier_activation
    )
    return keras.Model(inputs, outputs, name=name)


def resnet8(
    *,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    filters: int = 16,
    num_stacks: int = 3,
    alpha: float = 1.0,
    weight_decay: float = 1e-4,
    classifier_activation: str | None = "softmax",
    name: str = "resnet8",
) -> keras.Model:
    """ResNet-8, the MLPerf Tiny image-classification reference model.

    A 3x3 conv, then `num_stacks` residual stacks of two 3x3 convs each; every stack
    after the first halves the resolution and doubles the channels, with a strided 1x1
    conv on the shortcut. The defaults give the reference: 32x32x3 CIFAR-10 input,
    10 classes, 16 filters, 3 stacks, 78,666 params.

    Args:
        input_shape: tuple. (height, width, channels) input shape. Defaults to
            `(32, 32, 3)`.
        num_classes: int. Number of output classes. Defaults to `10`.
        filters: int. Channels of the first stack at `alpha=1`. Defaults to `16`.
        num_stacks: int. Number of residual stacks. Defaults to `3`.
        alpha: float. Width multiplier, > 0. Defaults to `1.0`.
        weight_decay: float. L2 penalty on conv kernels; 0 adds none. Defaults to `1e-4`.
        classifier_activation: str or None. Activation of the output layer; None returns
            logits. Defaults to `"softmax"`.
        name: str. Model name. Defaults to `"resnet8"`.

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: If an argument is out of range; the message names it.

    Example:

    >>> resnet8().count_params()
    78666
    """
    input_shape = check_shape("input_shape", input_shape, rank=3)
    num_classes = check_positive_int("num_classes", num_classes)
    channels = scale_filters(filters, alpha=alpha)
    num_stacks = check_positive_int("num_stacks", num_stacks)
    regularizer = _l2(weight_decay)
    conv = dict(use_bias=True, regularizer=regularizer)

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn(inputs, channels, 3, strides=1, activation="relu", name="stem", **conv)
    for stack in range(num_stacks):
        prefix = f"stack{stack + 1}"
        strides = 1 if stack == 0 else 2
        width = channels * 2**stack
        y = _conv_bn(x, width, 3, strides=strides, activation="relu", name=f"{prefix}_a", **conv)
        y = _conv_bn(y, width, 3, strides=1, activation=None, name=f"{prefix}_b", **conv)
        if strides != 1:
            x = layers.Conv2D(
                width,
                1,
                strides=strides,
                padding="same",
                kernel_initializer="he_normal",
                kernel_regularizer=regularizer,
                name=f"{prefix}_shortcut",
            )(x)
        x = layers.Add(name=f"{prefix}_add")([x, y])
        x = layers.Activation("relu", name=f"{prefix}_relu")(x)
    outputs = _classifier_head(
        x, num_classes, dropout=0.0, classifier_activation=classifier_activation
    )
    return keras.Model(inputs, outputs, name=name)


def fc_autoencoder(
    *,
    input_shape: tuple[int] = (640,),
    units: int = 128,
    bottleneck_units: int = 8,
    num_layers: int = 4,
    name: str = "fc_autoencoder",
) -> keras.Model:
    """The fully-connected autoencoder, the MLPerf Tiny anomaly-detection reference model.

    `num_layers` dense-BN-ReLU layers encode the input (5 stacked 128-bin log-mel frames
    in the reference) down to a `bottleneck_units` code, `num_layers` more decode it, and
    a linear dense layer reconstructs the input; the reconstruction error is the anomaly
    score. The defaults give the reference: 640 inputs, 128 units, 8-unit bottleneck,
    269,992 params.

    Args:
        input_shape: tuple. `(features,)` input shape. Defaults to `(640,)`.
        units: int. Width of the hidden dense layers. Defaults to `128`.
        bottleneck_units: int. Width of the code layer. Defaults to `8`.
        num_layers: int. Hidden layers on each side of the bottleneck. Defaults to `4`.
        name: str. Model name. Defaults to `"fc_autoencoder"`.

    Returns:
        An uncompiled `keras.Model` whose output has the input's shape.

    Raises:
        ValueError: If an argument is out of range; the message names it.

    Example:

    >>> fc_autoencoder().count_params()
    269992
    """
    input_shape = check_shape("input_shape", input_shape, rank=1)
    units = check_positive_int("units", units)
    bottleneck_units = check_positive_int("bottleneck_units", bottleneck_units)
    num_layers = check_positive_int("num_layers", num_layers)

    def dense_bn_relu(x, width, prefix):
        x = layers.Dense(width, name=f"{prefix}_dense")(x)
        x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
        return layers.Activation("relu", name=f"{prefix}_relu")(x)

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for i in range(num_layers):
        x = dense_bn_relu(x, units, f"encoder{i + 1}")
    x = dense_bn_relu(x, bottleneck_units, "bottleneck")
    for i in range(num_layers):
        x = dense_bn_relu(x, units, f"decoder{i + 1}")
    outputs = layers.Dense(input_shape[0], name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=name)


@dataclasses.dataclass(frozen=True)
class ReferenceModel:
    """An MLPerf Tiny reference model and its published figures.

    Args:
        name: str. Builder name, e.g. `"ds_cnn"`.
        task: str. The benchmark task, e.g. `"keyword spotting"`.
        build: callable. The builder; called with no arguments it returns the reference.
        input_shape: tuple. Input shape without the batch axis.
        params: int. Published Keras parameter count.
        int8_bytes: int. Size of the published fully-int8 .tflite file.
    """

    name: str
    task: str
    build: Callable[..., keras.Model]
    input_shape: tuple[int, ...]
    params: int
    int8_bytes: int


MLPERF_TINY_MODELS: dict[str, ReferenceModel] = {
    spec.name: spec
    for spec in (
        ReferenceModel("ds_cnn", "keyword spotting", ds_cnn, (49, 10, 1), 24_908, 53_936),
        ReferenceModel(
            "mobilenet_v1", "visual wake words", mobilenet_v1, (96, 96, 3), 221_794, 333_288
        ),
        ReferenceModel("resnet8", "image classification", resnet8, (32, 32, 3), 78_666, 98_496),
        ReferenceModel(
            "fc_autoencoder", "anomaly detection", fc_autoencoder, (640,), 269_992, 276_976
        ),
    )
}
