"""TensorFlow Lite Micro checks: op support and the measured tensor arena.

The supported-op set is the builtin kernels registered by the tflite-micro build this
package is tested with (its all-ops resolver). The arena is measured, not estimated:
the smallest arena (16-byte steps) in which the TFLM interpreter allocates and runs the
model, next to TFLM's own allocation report. One child process (`isolation.run`) verifies
the file with LiteRT, imports tflite-micro once and forks one short-lived process per
probed arena: a too-small arena can make TFLM abort or crash instead of raising, and a
fork contains that. The search starts from TFLM's recorded allocation, then confirms the
figure 16 bytes below, so a model takes a handful of probes.
"""

import os
import re
import signal

from tfslim import _keras_graph
from tfslim.errors import UnsupportedOpError
from tfslim.litert import interpreter, isolation
from tfslim.litert.flatbuffer import analyze

__all__ = ["MICRO_OPS", "check_micro", "check_target_ops", "output_layer_names"]

# fmt: off
MICRO_OPS = frozenset((
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D",
    "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST",
    "CEIL", "CONCATENATION", "CONV_2D", "COS", "CUMSUM", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP",
    "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER",
    "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF", "L2_NORMALIZATION",
    "L2_POOL_2D", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGICAL_NOT",
    "LOGICAL_OR", "LOGISTIC", "LOG_SOFTMAX", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE",
    "READ_VARIABLE", "REDUCE_ALL", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND", "RSQRT", "SELECT_V2",
    "SHAPE", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT",
    "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SVDF", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK",
    "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
    interpreter.TFLM_DECODE,  # Expands LUT-compressed tensors (`convert(compress=True)`).
))
# fmt: on


def unsupported_ops(facts: dict) -> list[dict]:
    """Ops TFLM cannot run, each with the tensor (layer) it produces and the reason.

    Args:
        facts: dict. The output of `flatbuffer.analyze`.
    """
    problems = []
    for op in facts["op_list"]:
        if op["op"] not in MICRO_OPS:
            problems.append({**op, "reason": "no TFLite Micro kernel"})
        elif op["hybrid"]:
            problems.append({**op, "reason": "hybrid (float activations, int8 weights)"})
    if facts.get("sparse_tensors"):
        problems.append(
            {
                "op": "SPARSE_WEIGHTS",
                "output": "",
                "reason": "TFLite Micro reads dense tensors only",
            }
        )
    return problems


def check_micro(
    model_bytes: bytes, facts: dict, *, name: str = "<model>", max_arena: int | None = None
) -> dict:
    """Returns the `micro` section of an inspection report, after LiteRT's verifier.

    Keys: `supported` (bool), `unsupported_ops` (op names), `problems` (op, producing
    tensor, reason), `arena_bytes` (measured minimum, None when unsupported),
    `arena_reported_bytes` (TFLM's RecordingMicroAllocator total at that arena) and,
    when TFLite Micro could not run a model our static check allowed, `error`.

    Args:
        model_bytes: bytes. The .tflite model.
        facts: dict. The output of `flatbuffer.analyze`.
        name: str. How errors name the model. Defaults to `"<model>"`.
        max_arena: int or None. The largest arena probed. Defaults to `MAX_ARENA_BYTES`.

    Raises:
        InvalidModelError: when LiteRT's flatbuffer verifier refuses the file.
    """
    problems = unsupported_ops(facts)
    section = {
        "supported": not problems,
        "unsupported_ops": sorted({p["op"] for p in problems}),
        "problems": problems,
        "arena_bytes": None,
        "arena_reported_bytes": None,
    }
    if problems:
        interpreter.check_verified(model_bytes, name=name)
        return section
    result = isolation.run(
        measure_arena_task,
        model_bytes,
        name=name,
        runtime="TFLite Micro interpreter",
        max_arena=MAX_ARENA_BYTES if max_arena is None else max_arena,
    )
    if result["corrupt"] is not None:
        raise interpreter.corrupt_error(result["corrupt"], name)
    if result.get("micro_error"):
        section.update(supported=False, error=result["micro_error"])
        return section
    section["arena_bytes"] = result["arena_bytes"]
    section["arena_reported_bytes"] = result["arena_reported_bytes"]
    return section


# The largest tensor arena probed: 16 MiB is beyond the RAM of every board tfslim knows
# (the largest budget is a few MiB), so a model needing more fits none of them.
MAX_ARENA_BYTES = 16 * 1024 * 1024
_FIRST_PROBE = 1024 * 1024
_PROBE_TIMEOUT_S = 120
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
# What TFLM prints when the arena, not the model, is the problem.
_TOO_SMALL = ("failed to allocate", "failed to resize buffer", "missing:", "arena size is too")


def measure_arena_task(model_path: str, *, max_arena: int) -> dict:
    """Child task: LiteRT's verifier, then the smallest TFLM arena (16-byte steps).

    Returns `corrupt` (the verifier's reason or None) and either `arena_bytes`,
    `arena_reported_bytes` and `probes`, or `micro_error` when no arena up to
    `max_arena` lets TFLM allocate and invoke the model.
    """
    with open(model_path, "rb") as f:
        model = f.read()
    corrupt = interpreter.verify(model)
    if corrupt is not None:
        return {"corrupt": corrupt}
    from tflite_micro.python.tflite_micro import runtime

    probes = []

    def probe(arena: int) -> tuple[bool, str]:
        ok, log = _forked_probe(runtime, model, arena)
        probes.append((arena, ok))
        return ok, log

    hi = min(_FIRST_PROBE, max_arena)
    ok, log = probe(hi)
    while not ok:
        if not _arena_too_small(log) or hi >= max_arena:
            bound = " (the search bound)" if hi >= max_arena else ""
            detail = isolation.last_error_line(log) or "no error message"
            return {
                "corrupt": None,
                "micro_error": f"TFLite Micro could not run it in a {hi}-byte arena{bound}: "
                f"{detail}",
            }
        hi = min(hi * 8, max_arena)
        ok, log = probe(hi)
    best_log, lo = log, 0  # Works at `hi`; `lo` is the largest arena known to fail.
    reported = _reported(log)
    if reported:
        start = min(-(-reported // 16) * 16, hi)
        ok, log = probe(start) if start < hi else (True, best_log)
        if ok:  # Confirm 16 bytes below; if that works too, bisect below it.
            hi, best_log = start, log
            ok, log = probe(hi - 16) if hi > 16 else (False, "")
            if ok:
                hi, best_log = hi - 16, log
            else:
                lo = hi - 16
        else:
            lo, step = start, 256
            while lo + step < hi:  # Gallop up from the recorded figure.
                ok, log = probe(lo + step)
                if ok:
                    hi, best_log = lo + step, log
                    break
                lo += step
                step *= 4
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            mid = lo + 16
        ok, log = probe(mid)
        if ok:
            hi, best_log = mid, log
        else:
            lo = mid
    return {
        "corrupt": None,
        "arena_bytes": hi,
        "arena_reported_bytes": _reported(best_log) or None,
        "probes": len(probes),
    }


def _reported(log: str) -> int:
    totals = _ARENA_TOTAL.findall(log)
    return int(totals[-1]) if totals else 0


def _arena_too_small(log: str) -> bool:
    text = log.lower()
    return any(mark in text for mark in _TOO_SMALL)


def _forked_probe(runtime, model: bytes, arena: int) -> tuple[bool, str]:
    """Allocates and invokes the model in TFLM with one arena size, in a fork.

    Returns (success, what TFLM printed, including its allocation report on success).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # The probe: never returns, never runs the parent's exit handlers.
        code = 3
        try:
            os.close(read_end)
            os.dup2(write_end, 2)  # TFLM reports on the C-level stderr.
            signal.alarm(_PROBE_TIMEOUT_S)
            _allocate_and_invoke(runtime, model, arena)
            code = 0
        except BaseException as e:  # Any failure is this probe's answer, never a traceback.
            os.write(2, f"\n{type(e).__name__}: {e}\n".encode(errors="replace"))
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    log = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = f"signal {os.WTERMSIG(status)}"
        return False, f"{log}\nTFLite Micro was killed by {name}"
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, log


def _allocate_and_invoke(runtime, model: bytes, arena: int) -> None:
    import numpy as np

    interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
    i = 0
    while True:
        try:
            detail = interp.get_input_details(i)
        except IndexError:  # No input with this index.
            break
        interp.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), i)
        i += 1
    interp.invoke()
    interp.print_allocations()


def output_layer_names(keras_model) -> list[str]:
    """Names of the layers producing a Keras model's outputs, in output order."""
    names = []
    for tensor in getattr(keras_model, "outputs", None) or []:
        names.append(getattr(_keras_graph.producer(tensor), "name", None))
    return names


def layer_names(keras_model) -> set[str]:
    """Every layer name in a model, nested sub-models included."""
    if keras_model is None or not _keras_graph.tracks_layers(keras_model):
        return set()
    return {layer.name for layer in _keras_graph.sublayers(keras_model)}


def check_target_ops(
    flatbuffer: bytes, target, output_layers=(), known_layers=(), *, quantization=None
) -> None:
    """Raises UnsupportedOpError naming each op (and its layer) TFLite Micro can't run.

    Identical refusals (the same op from the same layer for the same reason) are listed
    once with their count. The hint suggests full-integer quantization only when the
    model was converted in another mode (`quantization`, when the caller knows it).
    """
    facts = analyze(flatbuffer)
    problems = unsupported_ops(facts)
    edge_ops = ("QUANTIZE", "DEQUANTIZE")  # float <-> int at the model's edges is fine.
    problems += [
        {**o, "reason": "float kernel"}
        for o in facts["op_list"]
        if o["float"] and o["op"] not in edge_ops and not o["hybrid"] and o["op"] in MICRO_OPS
    ]
    if problems:
        # The op producing a model output carries a signature name, not the layer's.
        graph_outputs = {o["name"]: i for i, o in enumerate(facts["outputs"])}

        def layer(p):
            i = graph_outputs.get(p["output"])
            if i is not None and i < len(output_layers) and output_layers[i]:
                return output_layers[i]
            return _layer_of(p["output"], known_layers)

        counts: dict[str, int] = {}
        for p in problems:
            entry = f"{p['op']} from layer '{layer(p)}' ({p['reason']})"
            counts[entry] = counts.get(entry, 0) + 1
        listed = "; ".join(f"{e} x{n}" if n > 1 else e for e, n in counts.items())
        if quantization in (None, "int8", "int16x8"):
            hint = (
                "Use only layers with integer TFLite Micro kernels (for a QAT model, check "
                "its `skip` list: skipped layers stay float)."
            )
        else:
            hint = "Convert with quantization='int8' (full integer) for TFLite Micro."
        raise UnsupportedOpError(
            f"The model cannot run on target {target.name!r} (TFLite Micro, full integer): "
            f"{len(problems)} op(s) refused: {listed}. {hint}"
        )


def _layer_of(tensor_name: str, known_layers=()) -> str:
    """The Keras layer behind a TFLite tensor name like 'model/conv2d_1/Relu'.

    Export uniquifies name scopes ('my_gelu' becomes 'my_gelu_1'), so each path part is
    matched against the model's layer names, with and without such a suffix. The last part
    names the TF op, not a layer: an op 'add_1' inside one layer must not be blamed on a
    layer that happens to be called 'add_1'.
    """
    parts = [p for p in tensor_name.split(";")[0].split("/") if p]
    for part in reversed(parts[:-1] if len(parts) > 1 else parts):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in known_layers:
                return candidate
    return parts[1] if len(parts) > 2 else parts[0] if parts else tensor_name
