"""Mixed precision: float or int16x8 islands in an int8 model, by layer name or by accuracy.

`tfslim.convert(..., keep_float=[...], int16=[...])` and `max_accuracy_drop=` land here.
The path: the Keras model is converted once to a float .tflite; ai-edge-quantizer
calibrates it once and then quantizes it op by op from a recipe of regex scopes (int8
everywhere, float or int16 activations in the islands). The TFLite converter's own
switches cannot do this: its full-integer mode is one precision for the whole graph, and
the QuantizationDebugger's denylists give float islands only, each denylist costing a
fresh calibration. Here one calibration serves every candidate, which is what makes
sensitivity analysis and the accuracy-aware search affordable.

Layers are told by the output tensor names of their ops (the converter writes Keras layer
names into them, `model/conv2d_1/BiasAdd`), mapped back as `tfslim.convert`'s TFLite Micro
check maps them. ai-edge-quantizer imports TensorFlow, so it is imported where used; it
runs on the float model tfslim itself just converted, while every produced model runs in
a child process (LiteRT, and TFLite Micro for boards), as `tfslim.predict` does.
"""

import contextlib
import io
import re
import warnings

import numpy as np

from tfslim import _keras_graph
from tfslim.errors import TfslimWarning, UnsupportedOpError
from tfslim.litert import flatbuffer, interpreter, isolation, micro

__all__ = ["MICRO_INT16_OPS", "MixedPrecisionPlan", "convert_mixed"]

# TFLite Micro ops with an int16-activation, int8-weight kernel, each checked by running
# a one-op int16x8 model in TFLite Micro's interpreter (tests/test_mixed_precision.py).
# ops such as HARD_SWISH, LEAKY_RELU, ELU, EXP, MINIMUM or REDUCE_MAX are int8-only there
# (or ai-edge-quantizer leaves them float), so an int16 island holding one is refused.
MICRO_INT16_OPS = frozenset(
    (
        "ADD",
        "AVERAGE_POOL_2D",
        "BATCH_MATMUL",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "LOGISTIC",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MUL",
        "PAD",
        "QUANTIZE",
        "RESHAPE",
        "RSQRT",
        "SOFTMAX",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    )
)

_ACT8 = {"num_bits": 8, "symmetric": False, "granularity": "TENSORWISE", "dtype": "INT"}
_ACT16 = {"num_bits": 16, "symmetric": True, "granularity": "TENSORWISE", "dtype": "INT"}


def _weights(granularity):
    return {"num_bits": 8, "symmetric": True, "granularity": granularity, "dtype": "INT"}


def _static(regex, activations, operation="*", granularity="CHANNELWISE"):
    return {
        "regex": regex,
        "operation": operation,
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "activation_tensor_config": activations,
            "weight_tensor_config": _weights(granularity),
            "compute_precision": "INTEGER",
            "explicit_dequantize": False,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }


def _aeq_error(step: str, error: Exception) -> UnsupportedOpError:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    reason = lines[-1].strip() if lines else type(error).__name__
    return UnsupportedOpError(f"ai-edge-quantizer could not {step} the model: {reason}")


class MixedPrecisionPlan:
    """A float .tflite calibrated once, quantizable with any choice of islands.

    Args:
        float_model: bytes. The float .tflite (as `convert(..., quantization="none")`).
        samples: list of arrays. Calibration batches for the model's single input.
        output_layers: list of str. Keras names of the layers producing the outputs.
        known_layers: set of str. Every Keras layer name of the model.

    Attributes:
        layers: dict. Keras layer name -> output tensor names of its ops, graph order.
        ops: dict. Keras layer name -> TFLite op names of its ops.
    """

    def __init__(self, float_model: bytes, samples, output_layers=(), known_layers=()):
        self.float_model = float_model
        self.samples = list(samples)
        facts = flatbuffer.analyze(float_model)
        graph_outputs = {o["name"]: i for i, o in enumerate(facts["outputs"])}
        self.layers: dict[str, list[str]] = {}
        self.ops: dict[str, list[str]] = {}
        for op in facts["op_list"]:
            i = graph_outputs.get(op["output"])
            if i is not None and i < len(output_layers) and output_layers[i]:
                layer = output_layers[i]
            else:
                layer = micro._layer_of(op["output"], known_layers)
            self.layers.setdefault(layer, []).append(op["output"])
            self.ops.setdefault(layer, []).append(op["op"])
        self._input = facts["inputs"][0]["name"]
        self._calibrate(samples)

    def _calibrate(self, samples):
        try:
            from ai_edge_quantizer import quantizer
        except ImportError as e:  # pragma: no cover - a pinned dependency
            raise ImportError(
                "Mixed precision needs ai-edge-quantizer: pip install ai-edge-quantizer==0.10.0"
            ) from e
        signature, key = _signature(self.float_model)
        self._signature = signature
        q = quantizer.Quantizer(bytearray(self.float_model), [_static(".*", _ACT8)])
        data = {signature: [{key: np.asarray(s, np.float32)} for s in samples]}
        try:
            # Its progress bar writes to stderr; a library call stays quiet.
            # Its calibrator asks LiteRT to keep every tensor, which LiteRT warns about.
            with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._qsvs = q.calibrate(data)
        except Exception as e:
            raise _aeq_error("calibrate", e) from None

    def regex(self, layers) -> str:
        """One regex matching exactly the output tensors of the ops of `layers`."""
        # ai-edge-quantizer's scope of an op is its output tensor names, each followed by ";".
        names = [re.escape(t + ";") for layer in layers for t in self.layers[layer]]
        return "^(?:" + "|".join(names) + ")"

    def quantize(self, *, keep_float=(), int16=(), only=None) -> bytes:
        """The model with int8 everywhere but the islands.

        Args:
            keep_float: Layer names whose ops stay float.
            int16: Layer names whose ops get int16 activations (int8 weights).
            only: Layer names, or None. When given, only these layers are quantized
                (int8) and the rest stays float (sensitivity's "quantize alone").
        """
        from ai_edge_quantizer import quantizer

        if only is not None:
            recipe = [{"regex": ".*", "operation": "*", "algorithm_key": "no_quantize"}]
            if only:
                recipe += self._int8(self.regex(only))
        else:
            recipe = self._int8(".*")
            if int16:
                recipe.append(_static(self.regex(int16), _ACT16))
            if keep_float:
                recipe.append(
                    {
                        "regex": self.regex(keep_float),
                        "operation": "*",
                        "algorithm_key": "no_quantize",
                    }
                )
        try:
            q = quantizer.Quantizer(bytearray(self.float_model), recipe)
            with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result = q.quantize(self._qsvs, enable_progress_report=False)
        except Exception as e:
            raise _aeq_error("quantize", e) from None
        return bytes(result.quantized_model)

    @staticmethod
    def _int8(regex):
        # Dense weights per tensor, as tfslim's int8 converter and QAT have them.
        return [
            _static(regex, _ACT8),
            _static(regex, _ACT8, "FULLY_CONNECTED", "TENSORWISE"),
        ]


def _signature(model: bytes) -> tuple[str, str]:
    """(signature key, its single input's name) of a .tflite model."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=model).get_signature_list()
    key = next(iter(signatures))
    inputs = signatures[key]["inputs"]
    if len(inputs) != 1:
        raise ValueError(
            "Mixed precision takes single-input models. Received: a model with "
            f"{len(inputs)} inputs ({inputs})"
        )
    return key, inputs[0]


def resolve_layers(argument: str, patterns, plan: MixedPrecisionPlan) -> list[str]:
    """Layer names (in graph order) selected by names or regex patterns.

    A pattern equal to a layer name selects it; otherwise it is a regex matched against
    whole names. A pattern selecting no layer that has ops in the model is refused with
    the list of valid names.
    """
    if patterns is None:
        return []
    patterns = _check_patterns(argument, patterns)
    selected = set()
    for pattern in patterns:
        if pattern in plan.layers:
            selected.add(pattern)
            continue
        try:
            matched = {name for name in plan.layers if re.fullmatch(pattern, name)}
        except re.error as e:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected layer names or valid "
                f"regex patterns. Received: {argument}={list(patterns)!r} ({pattern!r}: {e})"
            ) from None
        if not matched:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected names or patterns of "
                f"layers that have ops in the converted model: {sorted(plan.layers)}. "
                f"Received: {argument}={list(patterns)!r} ({pattern!r} matches none)"
            )
        selected |= matched
    return [name for name in plan.layers if name in selected]


def _check_patterns(argument: str, patterns):
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list | tuple | set | frozenset) or not all(
        isinstance(p, str) for p in patterns
    ):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected a list of layer names or "
            f"regex patterns (str). Received: {argument}={patterns!r}"
        )
    return list(patterns)


def _check_known(argument: str, patterns, known) -> None:
    if not known:
        return
    for pattern in patterns:
        try:
            matched = pattern in known or any(re.fullmatch(pattern, name) for name in known)
        except re.error:
            return  # resolve_layers names the bad pattern.
        if not matched:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected names or patterns of "
                f"the model's layers: {sorted(known)}. Received: {argument}={patterns!r} "
                f"({pattern!r} matches none)"
            )


def check_micro_int16(layers, plan: MixedPrecisionPlan, target) -> None:
    """Refuses int16 islands holding an op TFLite Micro has no int16x8 kernel for."""
    missing = [
        f"{op} from layer '{layer}'"
        for layer in layers
        for op in dict.fromkeys(plan.ops[layer])
        if op not in MICRO_INT16_OPS
    ]
    if missing:
        raise UnsupportedOpError(
            f"Invalid value for argument `int16` with target={target.name!r}: TFLite Micro "
            f"has no int16x8 kernel for {'; '.join(missing)}. Expected layers whose ops are "
            f"all in {sorted(MICRO_INT16_OPS)}. Received: int16={list(layers)!r}"
        )


def evaluate(model: bytes, x: np.ndarray) -> np.ndarray:
    """First output of `model` on `x`, run in a child process (LiteRT, XNNPACK on)."""
    outputs = isolation.run(
        interpreter.predict_task, model, name="<mixed-precision model>", data=x
    )["outputs"]
    return outputs[0]


def check_runs_on_micro(model: bytes, target) -> dict:
    """TFLite Micro checks of a board model: op support, then a real run in its interpreter."""
    micro.check_target_ops(model, target, quantization="int8")
    section = micro.check_micro(model, flatbuffer.analyze(model), name="<mixed-precision model>")
    if not section["supported"]:
        raise UnsupportedOpError(
            f"The mixed-precision model does not run in TFLite Micro on target "
            f"{target.name!r}: {section.get('error') or section['unsupported_ops']}"
        )
    return section


def convert_mixed(
    model,
    *,
    target,
    quantization,
    calibration_data,
    calibration_steps,
    input_shape=None,
    keep_float=None,
    int16=None,
    max_accuracy_drop=None,
    validation_data=None,
    output_path=None,
    overwrite=False,
    compress=False,
    qat=False,
    equalize=False,
):
    """The mixed-precision path of `tfslim.convert` (see its `keep_float`, `int16` and
    `max_accuracy_drop` arguments); returns a ConversionResult whose `mixed_precision`
    dict says which layers stayed at higher precision and why."""
    # `tfslim.litert.sensitivity` is also the function the package exports: import names.
    from tfslim.litert.converter import ConversionResult, finish
    from tfslim.litert.sensitivity import accuracy_aware, check_drop, check_validation, make_plan

    if qat:
        raise ValueError(
            "Invalid value for argument `model`. Float and int16 islands are chosen at "
            "post-training calibration; a QAT model carries learned int8 ranges. Expected a "
            "float model (for QAT, leave layers float with quantize_model's `skip`). "
            "Received: a quantization-aware model"
        )
    if equalize:
        raise ValueError(
            "Invalid value for argument `equalize`/`bias_correction` with keep_float/int16/"
            "max_accuracy_drop. Expected False: mixed precision calibrates the plain float "
            "model. Received: True"
        )
    if quantization not in (None, "int8"):
        raise ValueError(
            "Invalid value for argument `quantization` with keep_float/int16/"
            "max_accuracy_drop. Islands live in a full-integer int8 model; expected 'int8' "
            f"or None. Received: quantization={quantization!r}"
        )
    if keep_float and target.is_micro:
        raise ValueError(
            f"Invalid value for argument `keep_float` with target={target.name!r}. TFLite "
            "Micro needs a fully integer graph; expected None (keep layers at higher "
            f"precision with `int16=` instead). Received: keep_float={keep_float!r}"
        )
    if max_accuracy_drop is not None:
        check_drop(max_accuracy_drop)
        if validation_data is None:
            raise ValueError(
                "Accuracy-aware conversion (max_accuracy_drop="
                f"{max_accuracy_drop}) measures the drop on labelled data; expected "
                "`validation_data=(x, y)`. Received: validation_data=None"
            )
    elif validation_data is not None:
        raise ValueError(
            "Invalid value for argument `validation_data`. It is used by the accuracy-aware "
            "mode only; expected None without `max_accuracy_drop`. Received: "
            f"validation_data of type {type(validation_data).__name__}"
        )
    known = None
    if not isinstance(model, str) and _keras_graph.tracks_layers(model):
        known = {
            layer.name
            for layer in _keras_graph.sublayers(model)
            if type(layer).__name__ != "InputLayer"
        }
    for argument, value in (("keep_float", keep_float), ("int16", int16)):
        # Before the (slow) export: a pattern matching no Keras layer at all.
        _check_known(argument, _check_patterns(argument, value), known)
    if calibration_data is None and validation_data is not None:
        calibration_data = check_validation(validation_data)[0]
    if calibration_data is None:
        raise ValueError(
            "Mixed precision (keep_float/int16) calibrates a float model; expected "
            "`calibration_data` (or `validation_data`). Received: calibration_data=None"
        )
    keras_model = None if isinstance(model, str) else model
    plan = make_plan(
        keras_model if keras_model is not None else model,
        calibration_data,
        calibration_steps=calibration_steps,
        input_shape=input_shape,
    )
    floats = resolve_layers("keep_float", keep_float, plan)
    int16s = resolve_layers("int16", int16, plan)
    both = sorted(set(floats) & set(int16s))
    if both:
        raise ValueError(
            "Invalid value for arguments `keep_float` and `int16`. Expected each layer in one "
            f"of them. Received: {both} in both"
        )
    if target.is_micro:
        check_micro_int16(int16s, plan, target)
    info = {"keep_float": floats, "int16": int16s, "kept": [], "max_accuracy_drop": None}
    if max_accuracy_drop is not None:
        search = accuracy_aware(
            plan,
            validation_data,
            target=target,
            max_accuracy_drop=max_accuracy_drop,
            keep_float=floats,
            int16=int16s,
        )
        model_bytes = search.pop("model")
        info.update(search)
        if not info["met"]:
            warn_unmet(info)
    else:
        model_bytes = plan.quantize(keep_float=floats, int16=int16s)
    if target.is_micro:
        info["micro"] = check_runs_on_micro(model_bytes, target)
    else:
        # A real run in LiteRT's default Interpreter (XNNPACK on), not only a parse.
        evaluate(model_bytes, np.asarray(plan.samples[0], np.float32))
    facts = flatbuffer.analyze(model_bytes)
    io_dtype = facts["inputs"][0]["dtype"].lower()
    result = ConversionResult(
        model_bytes, target=target, quantization="int8", io_dtype=io_dtype, sparse=False
    )
    result.xnnpack_sparse = False
    result.mixed_precision = info
    return finish(result, compress=compress, output_path=output_path, overwrite=overwrite)


def warn_unmet(info: dict) -> None:
    warnings.warn(
        f"Accuracy-aware conversion could not meet max_accuracy_drop="
        f"{info['max_accuracy_drop']}: the best model found keeps {info['kept_layers']} at "
        f"higher precision and drops {info['accuracy_drop']:.4f} (float "
        f"{info['float_accuracy']:.4f}, reached {info['accuracy']:.4f}); it is returned.",
        TfslimWarning,
        stacklevel=4,
    )
