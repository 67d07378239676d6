"""`tfslim.quantization_report`: where int8 hurts, layer by layer, in Keras names.

The float Keras model and its int8 (or int16x8) TFLite model run on the same samples, on the
kernels asked for: LiteRT's builtin kernels, its reference kernels (the arithmetic TFLite Micro
runs) or XNNPACK (what LiteRT runs by default on phones and desktops). Every compared tensor
is made a model output, so even XNNPACK's fused subgraphs hand it back as their own kernel
wrote it; each integer tensor is dequantized with its own scale and zero point and compared
with the output of the Keras layer it belongs to:

- **accumulated**: the int8 graph run end to end against the float model, so the error of a
  layer includes everything quantization did upstream of it;
- **alone**: the layer's own share. The layer's Keras computation is run on the int8 graph's
  own (dequantized) input to it, and the int8 op's output is compared with that: both sides
  see identical inputs, so the difference is what this layer's int8 kernel (weight rounding,
  accumulation, output requantization) adds. This is the float-op-on-quantized-inputs
  comparison TFLite's numeric-verify debugging makes, done with the Keras layer as the float
  op. A QAT layer whose int8 rounding is a quantizer layer of its own (`Multiply`, `Add`,
  pooling) is compared with that quantizer's output, so a QAT layer's alone figures are the
  int8 kernel's disagreement with what QAT trained, not the rounding both share; `flipped`
  says on how many of the outputs the integers differ at all.

Which tensor is which layer's output is decided in `layer_matching`; every layer without a
tensor of its own (fused, folded, identity at inference) is listed in `report.unmatched`
with the reason. The report object itself (ranking, table, JSON, plot) is in `error_report`.
"""

import math
import os
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from tfslim import _model_facts
from tfslim._checks import check_int, invalid_type, invalid_value
from tfslim.benchmarking.error_report import LayerRecord, QuantizationReport
from tfslim.benchmarking.layer_matching import (
    KerasGraph,
    TfliteGraph,
    boundaries,
    match,
    rounded,
)
from tfslim.errors import InvalidModelError, TfslimWarning
from tfslim.litert import flatbuffer, interpreter, isolation
from tfslim.litert.targets import Target, get_target

if TYPE_CHECKING:
    import keras

    from tfslim.litert.converter import ConversionResult

__all__ = ["LayerRecord", "QuantizationReport", "quantization_report", "tensors_task"]

_MODES = ("int8", "int16x8")
KERNELS = ("builtin", "xnnpack", "reference")
_BATCH = 32


def quantization_report(
    model: "keras.Model | str | os.PathLike",
    data: "np.ndarray | tuple",
    *,
    converted: "ConversionResult | bytes | str | os.PathLike | None" = None,
    target: "str | Target" = "mobile",
    quantization: str | None = None,
    calibration_data: "np.ndarray | tuple | None" = None,
    max_samples: int = 64,
    kernels: str | None = None,
) -> QuantizationReport:
    """Per-layer error of the int8 model against the float Keras model, worst first.

    Args:
        model: keras.Model or str. A Sequential or Functional Keras 3 model (plain float or
            from `tfslim.quantize_model`), or a `.keras` path.
        data: np.ndarray or tuple. Input samples (N, ...), or `(x, y)` (labels unused).
        converted: ConversionResult, bytes, str, path-like or None. The TFLite model of
            `model` to examine; None converts it with `tfslim.convert`. Defaults to `None`.
        target: str or Target. Target of the conversion. Defaults to `"mobile"`.
        quantization: str or None. `"int8"` or `"int16x8"` for the conversion; None means
            int8. Only without `converted`. Defaults to `None`.
        calibration_data: array, tuple or None. Calibration samples for a float model;
            None calibrates on `data` (said in `report.notes`). Only without `converted`.
            Defaults to `None`.
        max_samples: int. Samples of `data` compared. Defaults to `64`.
        kernels: str or None. The LiteRT kernels that run the int8 model: `"xnnpack"` (its
            default delegate on phones and desktops), `"reference"` (what TFLite Micro's
            reference kernels compute) or `"builtin"` (LiteRT's optimized kernels without
            a delegate). They round differently inside some ops (the builtin MEAN
            truncates), so a layer can be off on one and exact on another. None runs what
            the target runs: XNNPACK for a `mobile` target, the reference kernels for an
            `mcu` one. Defaults to `None`.

    Returns:
        A `QuantizationReport`.

    Raises:
        TypeError: for a model that is not a Sequential or Functional Keras 3 model.
        ValueError: for invalid options or data.
        InvalidModelError: when LiteRT cannot run the converted model.

    Example:

    >>> import keras, numpy as np, tfslim
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> report = tfslim.quantization_report(model, np.random.rand(16, 4).astype("float32"))
    >>> [r.name for r in report.layers if r.class_name == "Dense"]
    ['fc']
    """
    start = time.perf_counter()
    max_samples = check_int("max_samples", max_samples)
    target = get_target(target)
    if kernels is not None and kernels not in KERNELS:
        raise invalid_value("kernels", f"one of {list(KERNELS)} or None", kernels)
    if quantization is not None and quantization not in _MODES:
        raise invalid_value("quantization", f"one of {list(_MODES)} or None", quantization)
    if converted is not None and (quantization is not None or calibration_data is not None):
        given = "quantization" if quantization is not None else "calibration_data"
        raise ValueError(
            f"Invalid value for argument `{given}`. It applies to the conversion, and "
            f"`converted` gives a model already converted; expected None. Received: "
            f"{given}={quantization if given == 'quantization' else 'an array'!r}"
        )
    keras_model = _load_model(model)
    graph = KerasGraph(keras_model)
    x = _check_data(data, graph.input_shape, max_samples)
    notes = []
    timings = {"convert_s": 0.0}
    if converted is None:
        from tfslim.litert.converter import convert

        qat = _model_facts.is_qat_model(keras_model)
        if calibration_data is None and not qat:
            calibration_data = x
            notes.append("calibrated on the report's own samples (no calibration_data given)")
        result = convert(
            keras_model,
            target=target,
            quantization=quantization or "int8",
            calibration_data=calibration_data,
            verify=False,
        )
        model_bytes, name, mode = result.flatbuffer, "<converted model>", result.quantization
        timings["convert_s"] = round(time.perf_counter() - start, 2)
    else:
        model_bytes, name = flatbuffer.read_model_bytes(converted, argument="converted")
        mode = getattr(converted, "quantization", None)
        target = getattr(converted, "target", target)
    if kernels is None:
        kernels = "reference" if target.is_micro else "xnnpack"
    isolation.start()
    tfl = TfliteGraph(flatbuffer.parse(model_bytes, name))
    mode = mode or tfl.mode()
    if tfl.n_inputs != 1:
        raise ValueError(
            f"Invalid value for argument `converted`. Expected a single-input TFLite model. "
            f"Received: {name} with {tfl.n_inputs} inputs"
        )
    rows, unmatched = match(graph, tfl)
    indices = sorted({row.tensor for row in rows.values()})
    clock = time.perf_counter()
    run = isolation.run(
        tensors_task, model_bytes, name=name, data=x, indices=indices, kernels=kernels
    )
    values = {i: tfl.dequantize(i, v) for i, v in zip(indices, run["tensors"], strict=True)}
    timings["tflite_s"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    records = _measure(graph, tfl, rows, values, x)
    timings["keras_s"] = round(time.perf_counter() - clock, 2)
    return QuantizationReport(
        records,
        unmatched=unmatched,
        model=keras_model.name,
        quantization=mode,
        target=target.name,
        kernels=kernels,
        samples=len(x),
        seconds=round(time.perf_counter() - start, 2),
        timings=timings,
        notes=notes,
    )


def tensors_task(model_path: str, *, data: np.ndarray, indices: list, kernels: str) -> dict:
    """Child task: the listed tensors (raw, as stored) for every sample of `data`, computed by
    `kernels` (one of `KERNELS`).

    Each tensor is made a model output first: XNNPACK runs fused subgraphs whose inner
    tensors LiteRT cannot show otherwise, and an output is still written by the kernel that
    computes it.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {
        "xnnpack": OpResolverType.AUTO,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": OpResolverType.BUILTIN_REF,
    }[kernels]
    with open(model_path, "rb") as f:
        content = flatbuffer.expose_tensors(f.read(), indices, os.path.basename(model_path))
    interp = Interpreter(model_content=content, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    batch = int(detail["shape"][0]) if len(detail["shape"]) else 1
    chunks = [[] for _ in indices]
    for chunk, n in interpreter.padded_batches(data, batch):
        interp.set_tensor(detail["index"], interpreter.quantize_input(chunk, detail))
        interp.invoke()
        for i, index in enumerate(indices):
            value = np.array(interp.get_tensor(index))
            chunks[i].append(value[:n] if batch > 1 or value.shape[:1] == (1,) else value[None])
    return {"tensors": [np.concatenate(c) for c in chunks]}


def _load_model(model):
    import keras

    if isinstance(model, str | os.PathLike):
        path = os.fspath(model)
        if not os.path.isfile(path) or not path.endswith(".keras"):
            raise FileNotFoundError(
                "Invalid value for argument `model`. Expected an existing .keras file or a "
                f"Keras model. Received: model={path!r}"
                + ("" if os.path.isfile(path) else " (no such file)")
            )
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise InvalidModelError(
                f"Invalid value for argument `model`. Expected a loadable .keras file. "
                f"Received: model={path!r}, which Keras could not load ({e})"
            ) from None
    if not isinstance(model, keras.Model):
        raise invalid_type("model", "a Keras 3 model or a .keras path", model)
    if not isinstance(model, keras.Sequential) and not hasattr(model, "operations"):
        raise TypeError(
            "Invalid type for argument `model`. Expected a Sequential or Functional model "
            "(a per-layer report reads the layers' outputs off the model's graph). Received: "
            f"model of type {type(model).__name__}, a subclassed model"
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "Invalid value for argument `model`. Expected a built model with a known input "
            f"(e.g. one starting with keras.Input). Received: model {model.name!r} without inputs"
        )
    if len(inputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with one input. Received: "
            f"model {model.name!r} with {len(inputs)} inputs"
        )
    return model


def _check_data(data, input_shape, max_samples) -> np.ndarray:
    if isinstance(data, tuple | list) and len(data) == 2 and not np.isscalar(data[0]):
        data = data[0]
    if not isinstance(data, np.ndarray):
        raise invalid_type("data", "a NumPy array of samples or an (x, y) tuple", data)
    if data.dtype.kind not in "fiub" or tuple(data.shape[1:]) != input_shape or not len(data):
        raise ValueError(
            f"Invalid value for argument `data`. Expected numeric samples of shape (N, "
            f"*{input_shape}) with N >= 1. Received: data of shape {data.shape}, dtype "
            f"{data.dtype}"
        )
    x = data[:max_samples].astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(
            "Invalid value for argument `data`. Expected finite numbers. Received: "
            f"{int(x.size - np.isfinite(x).sum())} non-finite values"
        )
    return x


def _run(fn, inputs: list, n: int) -> np.ndarray:
    import keras

    parts = []
    for start in range(0, n, _BATCH):
        batch = [v[start : start + _BATCH].astype(np.float32) for v in inputs]
        out = fn(batch)
        out = out[0] if isinstance(out, list | tuple) and len(out) == 1 else out
        parts.append(keras.ops.convert_to_numpy(out).astype(np.float64))
    return np.concatenate(parts)


def _measure(graph, tfl, rows, values, x) -> list:
    import keras

    ordered = sorted(rows.values(), key=lambda r: graph.position[id(r.op)])
    fn = keras.Function([graph.input], [graph.tensor[id(rounded(graph, r.op))] for r in ordered])
    outputs = [[] for _ in ordered]
    for start in range(0, len(x), _BATCH):
        for i, out in enumerate(fn([x[start : start + _BATCH]])):
            outputs[i].append(keras.ops.convert_to_numpy(out).astype(np.float64))
    records = []
    for row, parts in zip(ordered, outputs, strict=True):
        reference = np.concatenate(parts).reshape(len(x), -1)
        quantized = values[row.tensor].reshape(len(x), -1)
        channels = int(graph.sample_shape(row.op)[-1]) if graph.sample_shape(row.op) else 1
        grid = _grid(tfl, row.tensor)
        stats = _errors(quantized, reference, channels, grid)
        alone = stats
        if not graph.is_input(row.op):
            alone = _alone(graph, rows, values, row, len(x), grid)
        scale, _ = tfl.quantization(row.tensor)
        records.append(
            LayerRecord(
                name=row.op.name,
                class_name=type(row.op).__name__,
                index=graph.position[id(row.op)],
                tensor=tfl.name(row.tensor),
                op=_op_type(tfl, row.tensor),
                match=row.match,
                fused=list(row.fused),
                shape=[int(d) for d in graph.sample_shape(row.op)],
                scale=None if scale is None else float(scale[0]),
                float_range=float(np.abs(reference).max()),
                **stats,
                **{f"alone_{k}": v for k, v in (alone or {}).items()},
            )
        )
    return records


def _op_type(tfl, tensor) -> str:
    k = tfl.producer.get(tensor)
    return "input" if k is None else tfl.ops[k][0]


def _grid(tfl, tensor) -> "tuple | None":
    """(scale, zero point, lowest, highest integer) of a per-tensor quantized integer tensor."""
    scale, zero = tfl.quantization(tensor)
    kind = tfl.dtype(tensor)
    if scale is None or len(scale) != 1 or kind not in ("int8", "int16"):
        return None
    info = np.iinfo(kind)
    return float(scale[0]), float(zero[0]), info.min, info.max


def _alone(graph, rows, values, row, n, grid) -> "dict | None":
    """The error the row's op adds to its own (int8) inputs."""
    import keras

    sources = boundaries(graph, rows, row.op)
    end = rounded(graph, row.op)
    for p in graph.producers[id(end)][1:] if end is not row.op else []:
        # A grid-rounding quantizer's second input: the tensor whose grid it rounds onto.
        for source in [p] if id(p) in rows else boundaries(graph, rows, p):
            if source not in sources:
                sources.append(source)
    sources.sort(key=lambda p: graph.position[id(p)])
    try:
        fn = keras.Function([graph.tensor[id(s)] for s in sources], graph.tensor[id(end)])
        inputs = [values[rows[id(s)].tensor].reshape((n, *graph.sample_shape(s))) for s in sources]
        reference = _run(fn, inputs, n).reshape(n, -1)
    except Exception as e:  # A segment Keras cannot run on its own: say so, keep the rest.
        warnings.warn(
            f"quantization_report: the error of {row.op.name} alone could not be isolated "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})",
            TfslimWarning,
            stacklevel=4,
        )
        return None
    shape = graph.sample_shape(row.op)
    channels = int(shape[-1]) if shape else 1
    return _errors(values[row.tensor].reshape(n, -1), reference, channels, grid)


# Per-channel SNRs are capped here (float32 rounding sits near 140 dB): one exact channel
# must not make a layer's mean infinite while its other channels are off.
_CHANNEL_CAP_DB = 120.0


def _errors(quantized: np.ndarray, reference: np.ndarray, channels: int, grid=None) -> dict:
    """SNR (dB) and relative L2 error pooled over samples; cosine averaged per sample; the
    mean of per-channel SNRs (last axis), which one dominant channel cannot hide; the share
    of integers that differ from the reference rounded onto the tensor's `grid` (None for
    a tensor without one)."""
    noise = float(np.sum((quantized - reference) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0:
        snr = math.inf
    elif signal == 0:
        snr = -math.inf
    else:
        snr = 10 * math.log10(signal / noise)
    rel = 0.0 if noise == 0 else (math.inf if signal == 0 else math.sqrt(noise / signal))
    norms = np.linalg.norm(quantized, axis=1) * np.linalg.norm(reference, axis=1)
    dots = np.sum(quantized * reference, axis=1)
    same = np.all(quantized == reference, axis=1)
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(same, 1.0, 0.0))
    q, r = quantized.reshape(-1, channels), reference.reshape(-1, channels)
    channel_signal = np.sum(r**2, axis=0)
    channel_noise = np.sum((q - r) ** 2, axis=0)
    live = channel_signal > 0
    if noise == 0:
        channel_snr = math.inf
    elif not live.any():
        channel_snr = -math.inf
    else:
        ratio = np.maximum(
            channel_noise[live] / channel_signal[live], 10 ** (-_CHANNEL_CAP_DB / 10)
        )
        channel_snr = round(float(np.mean(-10 * np.log10(ratio))), 3)
    flipped = None
    if grid is not None:
        scale, zero, low, high = grid
        expected = np.clip(np.round(reference / scale + zero), low, high)
        flipped = round(float(np.mean(np.round(quantized / scale + zero) != expected)), 6)
    return {
        "snr_db": round(snr, 3) if math.isfinite(snr) else snr,
        "channel_snr_db": channel_snr,
        "rel_error": round(rel, 6) if math.isfinite(rel) else rel,
        "cosine": round(float(np.mean(cosine)), 6),
        "flipped": flipped,
    }
