"""LiteRT interpreter helpers: build an interpreter, (de)quantize I/O, run batches.

These run a model in the current process. A model from a user can crash native code, so
tfslim calls them only inside a child (`isolation.run(interpreter.predict_task, ...)`);
`predict_task` and `verify_task` are such child tasks. The module imports NumPy, and
ai-edge-litert when an interpreter is made; never TensorFlow.
"""

import numpy as np

from tfslim.errors import InvalidModelError

__all__ = [
    "padded_batches",
    "check_verified",
    "corrupt_error",
    "dequantize_output",
    "make_interpreter",
    "predict_task",
    "quantize_input",
    "run_batches",
    "verify",
    "verify_task",
]

# The op TFLite Micro's LUT compression inserts before each compressed tensor's consumer.
TFLM_DECODE = "CUSTOM:TFLM_DECODE"


def make_interpreter(
    model_path: str | None = None,
    *,
    model_content: bytes | None = None,
    threads: int = 1,
    xnnpack: bool = True,
):
    """Returns (allocated LiteRT interpreter, note); falls back to builtin kernels if
    XNNPACK refuses the model, and says so in the note (else None)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def make(resolver):
        interp = Interpreter(
            model_path=model_path,
            model_content=model_content,
            num_threads=threads,
            experimental_op_resolver_type=resolver,
        )
        interp.allocate_tensors()
        return interp

    try:
        if not xnnpack:
            return make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), None
        try:
            return make(OpResolverType.AUTO), None
        except RuntimeError as e:
            # XNNPACK cannot run some graphs (e.g. sparse int8 weights behind DENSIFY);
            # LiteRT itself would fall back the same way on a phone.
            note = f"XNNPACK refused the model, builtin kernels used ({_first_line(e)})"
            return make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), note
    except (RuntimeError, ValueError) as e:
        _raise_if_micro_compressed(model_path, model_content, e)
        raise


def _raise_if_micro_compressed(model_path, model_content, error) -> None:
    """Names the cause when LiteRT refused a file with TFLite Micro's LUT compression.

    LiteRT has no DECODE kernel and reads the compressed tensors' quantization as invalid
    ("num_scales must be 1 ..."), which does not say why. Checked only once LiteRT has
    refused the file, so building a model costs nothing more.
    """
    from tfslim.litert import flatbuffer

    try:
        if model_content is None:
            with open(model_path, "rb") as f:
                model_content = f.read()
        ops = flatbuffer.analyze(model_content)["ops"]
    except (OSError, InvalidModelError):
        return  # LiteRT's own error says more.
    if TFLM_DECODE in ops:
        raise ValueError(
            "the file is LUT-compressed for TFLite Micro (DECODE ops), which only TFLite Micro "
            "runs: LiteRT has no DECODE kernel; convert without `compress=True` for LiteRT "
            f"(LiteRT said: {_first_line(error)})"
        ) from error


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs to a quantized input's integer type with its scale and zero point."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    # Only quantized inputs are scaled; plain integer inputs (e.g. token ids) are cast.
    if np.issubdtype(dtype, np.integer) and scale and not np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    return x.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """A quantized output back to float32 (other outputs are cast)."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def padded_batches(x: np.ndarray, batch: int):
    """Yields (`batch` samples of `x`, how many of them are real): a model with a fixed batch
    runs a short last batch padded by repeating its last sample."""
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        yield chunk, n


def run_batches(interp, x: np.ndarray) -> list[np.ndarray]:
    """Runs float inputs through an allocated interpreter; returns float outputs.

    Models converted with a fixed batch (static shapes, as microcontrollers need) run one
    batch at a time; resizing them could break constant Reshape operands.
    """
    if len(interp.get_input_details()) != 1:
        raise ValueError(
            f"the model has {len(interp.get_input_details())} inputs; predict and evaluate "
            "take single-input models"
        )
    in_d = interp.get_input_details()[0]
    out_ds = interp.get_output_details()
    expected = tuple(int(d) for d in in_d["shape"][1:])
    if tuple(x.shape[1:]) != expected:
        raise ValueError(f"data shape {tuple(x.shape)} does not match the input (N, *{expected})")
    batch = int(in_d["shape"][0])
    outputs = [[] for _ in out_ds]
    for chunk, n in padded_batches(x, batch):
        interp.set_tensor(in_d["index"], quantize_input(chunk, in_d))
        interp.invoke()
        for i, d in enumerate(out_ds):
            outputs[i].append(dequantize_output(interp.get_tensor(d["index"]), d)[:n])
    return [np.concatenate(chunks) for chunks in outputs]


def predict_task(model_path: str, *, data: np.ndarray) -> dict:
    """Child task: float outputs of the model (XNNPACK on) for float inputs `data`."""
    interp, note = make_interpreter(model_path)
    return {"outputs": run_batches(interp, data), "note": note}


# LiteRT builds a model only after the flatbuffers verifier accepted the file ("not a
# valid Flatbuffer") and its tables made sense (tensor buffers matching their shapes,
# signatures naming their method, ...). A build error that names an op this LiteRT cannot
# resolve (a custom op, a newer builtin) is a fact about the runtime, not damage.
_OP_RESOLUTION_MARKS = (
    "didn't find op",
    "unresolved custom op",
    "builtin_code out of range",
    "registration failed",
)


def verify(model_content: bytes) -> str | None:
    """Checks a flatbuffer as LiteRT builds it, in this process; returns why it is
    corrupt, or None when LiteRT accepts its structure.

    The flatbuffers verifier and LiteRT's table checks judge; ops this LiteRT cannot
    resolve (custom or newer ops) do not make a file corrupt.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tfslim.litert import flatbuffer

    try:
        ops = flatbuffer.analyze(model_content)["ops"]
    except InvalidModelError as e:
        return str(e)[:300]
    if TFLM_DECODE in ops:
        # TFLite Micro's compressed tensors (value tables, DECODE ops) are outside LiteRT's
        # schema checks ("num_scales must be 1"): LiteRT refuses every such file, TFLite
        # Micro runs it. tfslim's own reader has checked its tables and indices above, and
        # TFLite Micro runs it only in a fork, so a damaged one is still contained.
        return None
    try:
        Interpreter(
            model_content=model_content,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except (RuntimeError, ValueError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        if not any(mark in text.lower() for mark in _OP_RESOLUTION_MARKS):
            return text[:300]
    return None


def verify_task(model_path: str) -> dict:
    """Child task: `{"corrupt": reason or None}` from LiteRT's flatbuffer verifier."""
    with open(model_path, "rb") as f:
        return {"corrupt": verify(f.read())}


def corrupt_error(reason: str, name: str) -> InvalidModelError:
    """The one-line error for a file LiteRT's verifier refused."""
    return InvalidModelError(
        f"{name}: corrupted TFLite model (LiteRT's flatbuffer verifier refused it: {reason})"
    )


def check_verified(model: bytes, *, name: str = "<model>") -> None:
    """Runs LiteRT's flatbuffer verifier on `model` in a child process.

    Raises:
        InvalidModelError: naming `name`, when the verifier refuses the file or the
            child dies on it.
    """
    from tfslim.litert import isolation

    reason = isolation.run(verify_task, model, name=name)["corrupt"]
    if reason is not None:
        raise corrupt_error(reason, name)
