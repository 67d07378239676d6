"""`tfslim.benchmark`: LiteRT latency, memory and converted-model accuracy.

Every figure is measured by running the LiteRT interpreter in a child process; the
only estimate, microcontroller latency from MACs, is labelled as such.
"""

import os
from typing import TYPE_CHECKING

import numpy as np

from tfslim._checks import check_int
from tfslim._predict import keras_predict
from tfslim.benchmarking import timing
from tfslim.litert import flatbuffer, interpreter, isolation
from tfslim.litert.targets import Target, get_target

if TYPE_CHECKING:
    import keras

    from tfslim.litert.converter import ConversionResult

__all__ = ["benchmark", "evaluate", "predict"]


def predict(model: "bytes | str | os.PathLike | ConversionResult", x: np.ndarray) -> np.ndarray:
    """Runs a .tflite model on a batch of float inputs; returns float outputs.

    Integer inputs are quantized and integer outputs dequantized with the model's own
    scale and zero point, so results compare directly with the Keras model.

    Args:
        model: bytes, str, path-like or ConversionResult. The .tflite model.
        x: np.ndarray. Inputs of shape (N, ...) matching the model input.

    Returns:
        The first output, shape (N, ...), float32.
    """
    data, name = flatbuffer.read_model_bytes(model)
    isolation.start()
    flatbuffer.parse(data, name)
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise ValueError(
            f"Invalid value for argument `x`. Expected numeric inputs. Received: dtype={x.dtype}"
        )
    result = isolation.run(interpreter.predict_task, data, name=name, data=x.astype(np.float32))
    return result["outputs"][0]


def _check_data(data):
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise ValueError(
                "Invalid value for argument `data`. Expected (x, y) with as many labels as "
                f"samples. Received: {len(x)} samples and {len(y)} labels"
            )
        return x, y
    raise ValueError(
        "Invalid value for argument `data`. Expected a tuple (x, y) of NumPy arrays. "
        f"Received: data of type {type(data).__name__}"
    )


def _score(outputs: np.ndarray, y: np.ndarray) -> tuple[str, float]:
    if y.dtype.kind in "iu" and outputs.ndim == 2 and outputs.shape[1] > 1:
        return "accuracy", float(np.mean(outputs.argmax(axis=1) == y.reshape(-1)))
    return "mse", float(np.mean((outputs.reshape(y.shape) - y) ** 2))


def evaluate(
    model: "bytes | str | os.PathLike | ConversionResult",
    data: tuple,
    *,
    keras_model: "keras.Model | None" = None,
) -> dict:
    """Scores a converted model on labelled data, optionally beside its Keras model.

    Args:
        model: bytes, str, path-like or ConversionResult. The .tflite model.
        data: tuple. `(x, y)`; integer labels give accuracy, float targets give MSE.
        keras_model: Keras model or None. Adds its metric, the delta and, for
            classifiers, the fraction of samples with the same predicted class.
            Defaults to `None`.

    Returns:
        Dict with `metric`, `tflite`, `n` and, with a Keras model, `keras`, `delta`,
        `agreement`.
    """
    x, y = _check_data(data)
    outputs = predict(model, x)
    metric, value = _score(outputs, y)
    result = {"metric": metric, "tflite": round(value, 6), "n": int(len(x))}
    if keras_model is not None:
        k_out = keras_predict(keras_model, x)
        k_out = k_out[0] if isinstance(k_out, list) else k_out
        _, k_value = _score(k_out, y)
        result["keras"] = round(k_value, 6)
        result["delta"] = round(value - k_value, 6)
        if metric == "accuracy":
            agree = np.mean(k_out.argmax(axis=1) == outputs.argmax(axis=1))
            result["agreement"] = round(float(agree), 6)
    return result


def benchmark(
    model: "bytes | str | os.PathLike | ConversionResult",
    *,
    data: tuple | None = None,
    keras_model: "keras.Model | None" = None,
    target: "str | Target | None" = None,
    threads: int = 1,
    runs: int = 100,
    warmup: int = 10,
    xnnpack: "bool | None" = None,
    max_seconds: float = 20.0,
) -> dict:
    """Measures a .tflite model with the LiteRT interpreter.

    Args:
        model: bytes, str, path-like or ConversionResult. The .tflite model.
        data: tuple or None. `(x, y)` to measure the converted model's accuracy.
            Defaults to `None`.
        keras_model: Keras model or None. With `data`, reports the Keras model's
            metric beside the converted one. Defaults to `None`.
        target: str, Target or None. A microcontroller target adds the MAC-based
            latency estimate (labelled `estimate`). Defaults to `None`.
        threads: int. Interpreter threads. Defaults to `1`.
        runs: int. Timed invocations. Defaults to `100`.
        warmup: int. Untimed invocations first. Defaults to `10`.
        xnnpack: bool or None. Only with (True) or without (False) the XNNPACK
            delegate; None measures both. Defaults to `None`.
        max_seconds: float. Stop timing a configuration after this long.
            Defaults to `20.0`.

    Returns:
        Dict with `size_bytes`, `threads`, `macs`, `latency`, `accuracy` with data, and
        `mcu_latency_estimate` for a microcontroller target. `latency` holds `xnnpack`
        and/or `builtin`, each measured in its own child process that imports only NumPy
        and LiteRT: `init_ms`, `runs`, `latency_ms` (median, p90, min, mean), `delegate`,
        `note` and the model's runtime memory from the child's anonymous resident
        memory: `model_memory_bytes` (what creating and allocating the interpreter
        added: arena, tensors, delegate state; the memory-mapped model file and the
        runtime's code are not in it), `invoke_peak_memory_bytes` (the most above the
        same baseline after any invocation) and `process_peak_rss_bytes` (the whole
        child, Python included, for context); see `timing.time_invokes`.

    Raises:
        InvalidModelError: for a corrupted, truncated or non-TFLite model.
    """
    check_int("threads", threads)
    check_int("runs", runs)
    check_int("warmup", warmup, minimum=0)
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float)
        or not (max_seconds > 0)
    ):
        raise ValueError(
            "Invalid value for argument `max_seconds`. Expected a number > 0. "
            f"Received: max_seconds={max_seconds!r}"
        )
    data_bytes, name = flatbuffer.read_model_bytes(model)
    isolation.start()  # The runtime host starts while the flatbuffer is analysed.
    facts = flatbuffer.analyze(data_bytes, name)
    if data is not None:  # Check before spending time on latency runs.
        x, _ = _check_data(data)
        expected = tuple(facts["inputs"][0]["shape"][1:]) if facts["inputs"] else None
        if expected is not None and tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"Invalid value for argument `data`. Expected inputs of shape (N, *{expected}) "
                f"for {name}. Received: shape {tuple(x.shape)}"
            )
    target = get_target(target) if target is not None else None
    configs = [True, False] if xnnpack is None else [bool(xnnpack)]
    result = {"size_bytes": len(data_bytes), "threads": threads, "macs": facts["macs"]}
    result["latency"] = {
        ("xnnpack" if on else "builtin"): isolation.run(
            timing.time_invokes,
            data_bytes,
            name=name,
            threads=threads,
            xnnpack=on,
            runs=runs,
            warmup=warmup,
            max_seconds=max_seconds,
        )
        for on in configs
    }
    if data is not None:
        result["accuracy"] = evaluate(model, data, keras_model=keras_model)
    if target is not None and target.is_micro:
        estimate = target.estimate_latency_ms(facts["macs"], ops=facts["op_list"])
        result["mcu_latency_estimate"] = {target.name: estimate}
    return result
