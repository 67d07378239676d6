"""`tfslim.convert`: Keras (3 or tf_keras) model -> TFLite flatbuffer for a target."""

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from tfslim import _io, _model_facts
from tfslim._checks import check_bool, check_int
from tfslim._predict import keras_predict
from tfslim._quiet import native_stderr_captured
from tfslim.errors import TfslimWarning, UnsupportedOpError
from tfslim.litert import export, integer_islands, interpreter, isolation, micro, sparsity
from tfslim.litert.calibration import calibration_samples
from tfslim.litert.targets import Target, check_quantization, get_target

if TYPE_CHECKING:
    import keras

__all__ = ["ConversionResult", "convert"]

_IO_DTYPES = ("int8", "float32")


class ConversionResult:
    """A converted model: the flatbuffer and how it was made.

    Attributes:
        flatbuffer: bytes. The .tflite model.
        size_bytes: int. Its size.
        target: Target. The target it was converted for.
        quantization: str. The quantization mode used.
        io_dtype: str. Input/output dtype of the model.
        sparse: bool. Whether sparse weight encoding was requested.
        path: str or None. Where it was saved, if it was.
        fidelity: dict or None. Converted vs Keras outputs on calibration samples
            (`relative_error`, `agreement` for classifiers, `samples`), when verified.
    """

    def __init__(self, flatbuffer, *, target, quantization, io_dtype, sparse, path=None):
        self.flatbuffer = flatbuffer
        self.target = target
        self.quantization = quantization
        self.io_dtype = io_dtype
        self.sparse = sparse
        self.path = path
        self.fidelity = None

    @property
    def size_bytes(self) -> int:
        return len(self.flatbuffer)

    def save(self, path: "str | os.PathLike", *, overwrite: bool = False) -> str:
        """Writes the .tflite file atomically (temporary file, then rename).

        Args:
            path: str or path-like. Destination; its directory must exist.
            overwrite: bool. Replace an existing file. Defaults to `False`.

        Returns:
            The path written.
        """
        self.path = _io.atomic_write(path, self.flatbuffer, overwrite=overwrite)
        return self.path

    def inspect(self, **kwargs) -> dict:
        """Shortcut for `tfslim.inspect(result, target=result.target, ...)`."""
        from tfslim.litert.inspection import inspect

        kwargs.setdefault("target", self.target)
        return inspect(self.flatbuffer, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<ConversionResult target={self.target.name} quantization={self.quantization} "
            f"io={self.io_dtype} size_bytes={self.size_bytes}>"
        )


def convert(
    model: "keras.Model | str | os.PathLike",
    *,
    target: "str | Target" = "mobile",
    quantization: str | None = None,
    calibration_data: "np.ndarray | tuple | list | Iterable | Callable | None" = None,
    calibration_steps: int = 200,
    io_dtype: str | None = None,
    sparse: bool | None = None,
    input_shape: tuple | None = None,
    output_path: "str | os.PathLike | None" = None,
    overwrite: bool = False,
    verify: bool = True,
    compress: bool = False,
    equalize: bool = False,
    bias_correction: bool = False,
    keep_float: "list[str] | None" = None,
    int16: "list[str] | None" = None,
    max_accuracy_drop: float | None = None,
    validation_data: tuple | None = None,
) -> ConversionResult:
    """Converts a Keras model to a TFLite flatbuffer suited to a target.

    Args:
        model: A Keras 3 model (Sequential, Functional or subclassed), a `tf_keras`
            model, a path to a `.keras` file, or a SavedModel directory.
        target: str or Target. Where the model runs: `"mobile"`, `"mcu"` or a board name
            (see `tfslim.list_targets()`). Microcontroller targets default to full int8
            with int8 I/O and refuse ops TFLite Micro cannot run. Defaults to `"mobile"`.
        quantization: str or None. `"none"` (float32), `"float16"`, `"dynamic"` (int8
            weights, float activations), `"int8"` (full integer) or `"int16x8"`
            (int16 activations, int8 weights). None takes the target's default.
        calibration_data: Representative inputs for full-integer modes: a NumPy array
            of samples (N, ...), an `(x, y)` tuple, a `tf.data.Dataset` of batches, or
            an iterable / generator function yielding batches. Not needed for models
            trained with `tfslim.quantize_model` (their ranges are learned).
            Defaults to `None`.
        calibration_steps: int. Maximum number of calibration samples. Defaults to `200`.
        io_dtype: str or None. `"int8"` or `"float32"` inputs/outputs for full-integer
            models. None takes the target's default. Defaults to `None`.
        sparse: bool or None. Encode zero-heavy (pruned) weights sparsely. None takes
            the target's default: on for mobile float models (`"none"`, `"float16"`)
            when at least 60% of the kernel weights are zero (below that the index
            overhead makes files larger); off for integer modes, whose sparse files
            LiteRT's default Interpreter (XNNPACK) cannot allocate (`True` then warns);
            off for microcontrollers, whose runtime reads dense tensors only.
            `result.xnnpack_sparse` says whether XNNPACK runs the sparse weights with
            sparse kernels (see `tfslim.litert.sparsity`). Defaults to `None`.
        input_shape: tuple or None. Input shape without the batch dimension, needed
            only for a subclassed model that has never been called. Defaults to `None`.
        output_path: str, path-like or None. Also write the .tflite file here
            (atomically). Defaults to `None`.
        overwrite: bool. Allow `output_path` to replace an existing file.
            Defaults to `False`.
        verify: bool. After a calibrated conversion, run the .tflite model on up to 32
            calibration samples beside the Keras model and store the comparison in
            `result.fidelity`; warn (`TfslimWarning`) when they disagree so much that
            the converter, not quantization noise, is to blame. Defaults to `True`.
        compress: bool. Microcontroller targets only: store kernels with few distinct
            values (clustered) as bit-packed indices plus value tables, expanded by
            TFLite Micro's DECODE operator (`tfslim.litert.compression`); tensors whose
            expanded copy would push the arena over the board's RAM stay dense, with a
            warning. The details land in `result.compression`. Defaults to `False`.
        equalize: bool. Calibrated conversion of a float Keras model only: fold batch
            norms and run cross-layer equalization (`tfslim.equalize_model`) before export,
            which leaves the float outputs unchanged and evens out per-channel ranges.
            Defaults to `False`.
        bias_correction: bool. Calibrated conversion of a float Keras model only: shift each
            layer's bias by the mean output error its int8 weights cause on the calibration
            data (batch norms folded first). Defaults to `False`.
        keep_float: list of str or None. Layers (Keras names, or regex patterns matched
            against whole names) whose ops stay float in an otherwise int8 model; `mobile`
            only, since TFLite Micro needs a fully integer graph. The model is converted to
            float, calibrated once and quantized op by op with ai-edge-quantizer
            (`tfslim.litert.mixed_precision`); its I/O takes the integer type of the first
            and last ops. `result.mixed_precision` lists the islands. Defaults to `None`.
        int16: list of str or None. Layers (names or patterns) with int16 activations and
            int8 weights. On boards every op of such a layer needs a TFLite Micro int16x8
            kernel (`tfslim.litert.MICRO_INT16_OPS`), else it is refused by layer and op.
            Defaults to `None`.
        max_accuracy_drop: float or None. Accuracy-aware mode: keep the fewest, most
            sensitive layers at higher precision (float for `mobile`, int16 on boards)
            until the accuracy on `validation_data` is at most this far below the float
            model's. `result.mixed_precision` records the layers kept and why, the accuracy
            reached and the size cost vs all-int8; an unmet target warns
            (`TfslimWarning`) and returns the best model found. Defaults to `None`.
        validation_data: tuple or None. `(x, y)` labelled samples for
            `max_accuracy_drop` (also the calibration data when `calibration_data` is
            None). Defaults to `None`.

    Returns:
        A `ConversionResult`.

    Raises:
        ValueError: for an invalid option, missing or malformed calibration data.
        TypeError: when `model` is not a model.
        UnsupportedOpError: when the converted model uses an op the target cannot run.

    Example:

    >>> import keras, numpy as np, tfslim
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> result = tfslim.convert(model, target="mcu", calibration_data=np.ones((8, 4)))
    >>> result.quantization, result.io_dtype
    ('int8', 'int8')
    """
    target = get_target(target)
    if not isinstance(compress, bool):
        raise TypeError(
            "Invalid value for argument `compress`. Expected a bool. "
            f"Received: compress={compress!r}"
        )
    if compress and not target.is_micro:
        raise ValueError(
            f"Invalid value for argument `compress` with target={target.name!r}. TFLite Micro "
            "compression needs a microcontroller target; expected False. Received: compress=True"
        )
    keras_model, saved_model_dir = export.load_model(model)
    qat = keras_model is not None and _is_qat_model(keras_model)
    if keep_float is not None or int16 is not None or max_accuracy_drop is not None:
        from tfslim.litert import mixed_precision

        return mixed_precision.convert_mixed(
            keras_model if keras_model is not None else saved_model_dir,
            target=target,
            quantization=quantization,
            calibration_data=calibration_data,
            calibration_steps=calibration_steps,
            input_shape=input_shape,
            keep_float=keep_float,
            int16=int16,
            max_accuracy_drop=max_accuracy_drop,
            validation_data=validation_data,
            output_path=output_path,
            overwrite=overwrite,
            compress=compress,
            qat=qat,
            equalize=equalize or bias_correction,
        )
    # A QAT model carries learned int8 ranges: full integer is what it was trained for.
    quantization = check_quantization(quantization or ("int8" if qat else target.quantization))
    if io_dtype is not None and io_dtype != "float32" and quantization not in ("int8", "int16x8"):
        raise ValueError(
            f"Invalid value for argument `io_dtype` with quantization={quantization!r}. Integer "
            "inputs and outputs need a full-integer mode ('int8' or 'int16x8'); expected "
            f"'float32' or None. Received: io_dtype={io_dtype!r}"
        )
    io_dtype = _check_choice("io_dtype", io_dtype or target.io_dtype, _IO_DTYPES)
    if quantization not in ("int8", "int16x8"):
        io_dtype = "float32"
    sparse = check_bool("sparse", sparse, allow_none=True)
    verify = check_bool("verify", verify)
    overwrite = check_bool("overwrite", overwrite)
    sparse_arg = sparse
    sparse = target.sparse_weights if sparse is None else bool(sparse)
    if target.is_micro:
        if quantization in ("dynamic", "float16"):
            raise ValueError(
                f"Invalid value for argument `quantization` with target={target.name!r}. "
                "TFLite Micro has no hybrid or float16 kernels; expected 'int8', 'int16x8' or "
                f"'none'. Received: quantization={quantization!r}"
            )
        if sparse:
            raise ValueError(
                f"Invalid value for argument `sparse` with target={target.name!r}. TFLite "
                "Micro reads dense tensors only; expected False. Received: sparse=True"
            )
    check_int("calibration_steps", calibration_steps)
    if output_path is not None:
        _io.check_output_path(output_path, overwrite=overwrite)

    if sparse and not target.is_micro:
        # Sparse-encoded integer weights do not load in LiteRT's default (XNNPACK)
        # Interpreter; the automatic choice encodes only float models with >= 60% zeros.
        sparse = sparsity.choose_sparse(
            sparse_arg,
            quantization,
            None if keras_model is None else lambda: _zero_fraction(keras_model),
        )
        sparsity.warn_if_costly(sparse_arg, quantization)
    needs_calibration = quantization in ("int8", "int16x8") and not qat
    if needs_calibration and calibration_data is None:
        raise ValueError(
            f"Full-integer quantization (quantization={quantization!r}) needs "
            "`calibration_data` to measure activation ranges, or a model trained with "
            "tfslim.quantize_model. Received: calibration_data=None"
        )
    shapes = dtypes = None
    if keras_model is not None:
        shapes, dtypes = export.input_shapes(keras_model, input_shape, calibration_data)
    samples = None
    if calibration_data is not None:  # Validate before the (slow) export.
        samples = calibration_samples(calibration_data, shapes, calibration_steps)
    export_model = keras_model  # Fidelity is still checked against the user's model.
    if equalize is not False or bias_correction is not False:
        from tfslim.litert.equalization import prepare_for_conversion

        export_model = prepare_for_conversion(
            keras_model,
            samples,
            equalize=equalize,
            bias_correction=bias_correction,
            quantization=quantization,
            qat=qat,
        )
    converter = export.make_converter(export_model, saved_model_dir, shapes, dtypes)
    export.configure(converter, quantization, io_dtype, sparse, qat)
    if needs_calibration:
        converter.representative_dataset = lambda: (
            s if isinstance(s, list) else [s] for s in samples
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()), native_stderr_captured():
            flatbuffer = converter.convert()
    except Exception as e:  # ConverterError and friends: surface the reason.
        message = str(e).strip().splitlines()
        raise UnsupportedOpError(
            f"TFLite conversion failed for quantization={quantization!r}, "
            f"target={target.name!r}: {message[-1] if message else type(e).__name__}"
        ) from e
    if quantization == "int8":
        # DEQUANTIZE -> ELU -> QUANTIZE becomes one int8 ELU (TFLite's kernels have it).
        flatbuffer, _ = integer_islands.close_float_islands(flatbuffer)
    if target.is_micro:
        micro.check_target_ops(
            flatbuffer,
            target,
            micro.output_layer_names(keras_model),
            micro.layer_names(keras_model),
            quantization=quantization,
        )
    if quantization == "int16x8" and io_dtype == "int8":
        io_dtype = "int16"  # 16x8 models take and return int16 when I/O is integer.
    result = ConversionResult(
        flatbuffer, target=target, quantization=quantization, io_dtype=io_dtype, sparse=sparse
    )
    result.xnnpack_sparse = sparse and sparsity.xnnpack_sparse(flatbuffer)["xnnpack_sparse"]
    if verify and keras_model is not None and samples and not isinstance(samples[0], list):
        result.fidelity = _fidelity(flatbuffer, keras_model, samples)
    # After the fidelity check: LiteRT has no DECODE kernel, and LUT compression is
    # lossless, so the dense model's outputs are the compressed model's.
    return finish(result, compress=compress, output_path=output_path, overwrite=overwrite)


def compressed_copy(result: ConversionResult) -> ConversionResult:
    """A copy of `result` with its kernels LUT-compressed for its board.

    What `convert(..., compress=True)` returns; `result` itself stays the uncompressed file,
    the one LiteRT can run (it has no DECODE op) with the same outputs.
    """
    from tfslim.litert import compression

    packed = copy.copy(result)
    ram = packed.target.ram_bytes
    packed.flatbuffer, packed.compression = compression.compress_micro(
        packed.flatbuffer,
        ram_budget=ram,
        measure_arena=compression.measure_arena if ram else None,
    )
    return packed


def finish(result: ConversionResult, *, compress: bool, output_path, overwrite: bool):
    """Compresses `result` for its board (if asked) and saves it (if a path is given)."""
    if compress:
        result = compressed_copy(result)
    if output_path is not None:
        result.save(output_path, overwrite=overwrite)
    return result


# Int8 quantization noise on a healthy model stays far below this; crossing it means
# the flatbuffer computes something else. Class agreement is reported, not judged: an
# untrained model's near-uniform outputs flip classes under ordinary rounding.
_MAX_RELATIVE_ERROR = 0.5


def _fidelity(flatbuffer: bytes, keras_model, samples) -> dict:
    """Compares converted and Keras outputs on calibration samples.

    The converted model runs in a child process, as `tfslim.predict` does: a flatbuffer
    that crashes LiteRT ends in an InvalidModelError, not in the caller's death.
    """
    x = np.concatenate(samples[:32])
    reference = keras_predict(keras_model, x)
    reference = reference[0] if isinstance(reference, list) else reference
    outputs = isolation.run(
        interpreter.predict_task, flatbuffer, name="<converted model>", data=x.astype(np.float32)
    )["outputs"]
    got = outputs[0].reshape(reference.shape)
    error = float(np.linalg.norm(got - reference) / (np.linalg.norm(reference) + 1e-12))
    fidelity = {"samples": len(x), "relative_error": round(error, 6), "agreement": None}
    if reference.ndim == 2 and reference.shape[1] > 1:
        agreement = float(np.mean(got.argmax(1) == reference.argmax(1)))
        fidelity["agreement"] = round(agreement, 6)
    if error > _MAX_RELATIVE_ERROR:
        warnings.warn(
            "The converted model disagrees with the Keras model on calibration samples "
            f"(relative error {error:.3f}, class agreement {fidelity['agreement']}); that is "
            "beyond quantization noise and points to a converter defect. Try another "
            "quantization mode and check it with tfslim.evaluate.",
            TfslimWarning,
            stacklevel=3,
        )
    return fidelity


def _zero_fraction(model) -> float:
    """Fraction of exact zeros in the model's kernels (weights of rank >= 2)."""
    return _model_facts.kernel_zero_fraction(model)


def _check_choice(argument, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of {list(choices)}. "
            f"Received: {argument}={value!r}"
        )
    return value


def _is_qat_model(model) -> bool:
    """A tfslim or tfmot QAT model, told by its layers' registered names (no import of either)."""
    return _model_facts.is_qat_model(model)
