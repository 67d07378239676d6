"""From a Keras model (or SavedModel) to a configured `tf.lite.TFLiteConverter`.

Loading a model argument, telling its input shapes, tracing it at batch one with its
variables folded, and setting the converter's options for a quantization mode.
"""

import contextlib
import os
import zipfile
from pathlib import Path

import numpy as np

from tfslim._checks import check_shape
from tfslim._compat import is_tf_keras
from tfslim.errors import InvalidModelError

__all__ = ["configure", "input_shapes", "load_model", "make_converter"]


def load_model(model):
    """Resolves a path to a model; returns (keras model or None, saved model dir or None)."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise ValueError(
                    "Invalid value for argument `model`. Expected a .keras file or a "
                    f"SavedModel directory (with saved_model.pb). Received: model={str(path)!r}"
                )
            return None, str(path)
        if not path.is_file():
            raise FileNotFoundError(
                "Invalid value for argument `model`. Expected an existing .keras file or "
                f"SavedModel directory. Received: model={str(path)!r} (no such file)"
            )
        if path.suffix != ".keras":
            raise ValueError(
                "Invalid value for argument `model`. Expected a .keras file or a SavedModel "
                f"directory. Received: model={str(path)!r}"
            )
        if not zipfile.is_zipfile(path):
            # Keras answers "File not found" for a file that exists but is no archive.
            raise InvalidModelError(
                "Invalid value for argument `model`. Expected a .keras file (the zip archive "
                f"`model.save` writes). Received: model={str(path)!r}, which is not a valid "
                ".keras file (not a zip archive)"
            )
        # `import tfslim` registered tfslim's layers with Keras (see tfslim._registration),
        # so files holding QAT or pruning layers load without importing those packages here.
        import keras

        try:
            return keras.saving.load_model(path, compile=False), None
        except Exception as e:
            raise InvalidModelError(
                f"Invalid value for argument `model`. Expected a loadable .keras file. "
                f"Received: model={str(path)!r}, which Keras could not load ({e})"
            ) from None
    import keras

    if isinstance(model, keras.Model) or is_tf_keras(model) and hasattr(model, "predict"):
        return model, None
    raise TypeError(
        "Invalid type for argument `model`. Expected a Keras model, a tf_keras model, a "
        f".keras path or a SavedModel directory. Received: model of type {type(model).__name__}"
    )


def input_shapes(model, input_shape, calibration_data):
    """(shapes, dtypes) of the model's inputs, without the batch axis.

    A subclassed model has no `inputs`: its shape comes from `input_shape` (or the
    calibration array), and a model that was never called is built by calling it once.
    """
    if input_shape is not None:
        input_shape = check_shape("input_shape", input_shape)
    inputs = None
    with contextlib.suppress(Exception):  # Subclassed models raise on `.inputs`.
        inputs = model.inputs
    if inputs:
        return [tuple(t.shape[1:]) for t in inputs], [t.dtype for t in inputs]
    if input_shape is not None:
        shape, argument = input_shape, "input_shape"
    elif isinstance(calibration_data, np.ndarray) and calibration_data.ndim >= 2:
        shape, argument = tuple(calibration_data.shape[1:]), "calibration_data"
    else:
        raise ValueError(
            f"Cannot tell the input shape of {type(model).__name__} (a subclassed model that "
            "has no `inputs`). Pass `input_shape` (without the batch dimension). Received: "
            "input_shape=None"
        )
    if not model.built:
        try:
            model(np.zeros((1, *shape), np.float32), training=False)
        except Exception as e:
            raise ValueError(
                f"Invalid value for argument `{argument}`: building {type(model).__name__} "
                f"on inputs of shape {(None, *shape)} failed ({type(e).__name__}: {e}). "
                "Expected the shape of one sample, without the batch axis."
            ) from None
    return [shape], ["float32"]


def make_converter(keras_model, saved_model_dir, shapes, dtypes):
    import tensorflow as tf

    if saved_model_dir is not None:
        return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    # A fixed batch of one gives static shapes: no SHAPE/PACK ops, and TFLite Micro
    # needs static shapes anyway. LiteRT can still resize the batch at run time.
    specs = [
        tf.TensorSpec((1, *s), dtype=getattr(d, "name", d) or "float32", name=f"input_{i}")
        for i, (s, d) in enumerate(zip(shapes, dtypes, strict=True))
    ]

    def serve(*args):
        x = args[0] if len(args) == 1 else list(args)
        return keras_model(x, training=False)

    # The traced signature with its variables folded into constants is what the
    # SavedModel path would hand the converter after writing the model to disk and
    # reading it back; folding in memory skips that round trip (about 40% of a small
    # model's conversion). Control flow stays functional (If/While), as TFLite wants.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from tfslim._deployment import deployed_graph

    with deployed_graph():
        function = tf.function(serve, input_signature=specs).get_concrete_function()
    frozen = convert_variables_to_constants_v2(
        function, lower_control_flow=False, aggressive_inlining=True
    )
    # With the model as its trackable the file keeps a `serving_default` signature.
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen], keras_model)


def configure(converter, quantization, io_dtype, sparse, qat):
    import tensorflow as tf

    optimizations = []
    if quantization != "none" or qat:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    # Dense weights per tensor, as TFLite's int8 spec and tfslim's QAT have them:
    # per-channel Dense adds a scale and zero point per unit (+15% on the MLPerf Tiny
    # autoencoder). The converter exposes this switch only as a private attribute.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if not qat:
            # For a QAT model this op set would demand a representative dataset; its
            # learned ranges already make every op integer (checked after conversion).
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif quantization == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        if io_dtype == "int8":  # Integer I/O for 16x8 models is int16.
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
