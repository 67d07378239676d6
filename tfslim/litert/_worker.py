"""Runs interpreters in a child process, so a bad model can never crash the caller.

Parent side: `run(task, model_bytes, **options)`. Child side: `python -m
tfslim.litert._worker REQUEST.json` runs one task and writes `result.json` next to the
request. TFLite Micro prints its allocation report on the C-level stderr, which the
parent captures and parses here.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tfslim.errors import InvalidModelError

_TIMEOUT_S = 600
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


def run(task: str, model_bytes: bytes, *, name: str = "<model>", data=None, **options) -> dict:
    """Runs `task` ("micro", "bench" or "predict") on a model in a child process.

    Raises:
        InvalidModelError: when the interpreter refuses the model or the child dies.
    """
    with tempfile.TemporaryDirectory(prefix="tfslim-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.tflite").write_bytes(model_bytes)
        if data is not None:
            np.save(tmp / "x.npy", np.asarray(data), allow_pickle=False)
        request = {"task": task, "options": options, "has_data": data is not None}
        (tmp / "request.json").write_text(json.dumps(request))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "tfslim.litert._worker", str(tmp / "request.json")],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise InvalidModelError(
                f"{name}: the {_RUNTIME[task]} did not finish within {_TIMEOUT_S} s"
            ) from None
        result_path = tmp / "result.json"
        if proc.returncode != 0 or not result_path.exists():
            detail = _last_error_line(proc.stderr) or f"exit code {proc.returncode}"
            raise InvalidModelError(f"{name}: the {_RUNTIME[task]} could not run it ({detail})")
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise InvalidModelError(f"{name}: the {_RUNTIME[task]} refused it ({result['error']})")
        if task == "predict":
            result["outputs"] = [np.load(tmp / f"y{i}.npy") for i in range(result["n_outputs"])]
        return result


_RUNTIME = {
    "micro": "TFLite Micro interpreter",
    "bench": "LiteRT interpreter",
    "predict": "LiteRT interpreter",
}


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "failed" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else ""


# ---------------------------------------------------------------------------- child side


def litert_interpreter(
    model_path: str | None = None,
    *,
    model_content: bytes | None = None,
    threads: int = 1,
    xnnpack: bool = True,
):
    """Returns (interpreter, note); falls back to builtin kernels if XNNPACK refuses."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # Fallback runtime for platforms without ai-edge-litert wheels.
        from tflite_runtime.interpreter import Interpreter, OpResolverType

    def make(resolver):
        interp = Interpreter(
            model_path=model_path,
            model_content=model_content,
            num_threads=threads,
            experimental_op_resolver_type=resolver,
        )
        interp.allocate_tensors()
        return interp

    if not xnnpack:
        return make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), None
    try:
        return make(OpResolverType.AUTO), None
    except RuntimeError as e:
        # XNNPACK cannot run some graphs (e.g. sparse int8 weights behind DENSIFY);
        # LiteRT itself would fall back the same way on a phone.
        note = f"XNNPACK refused the model, builtin kernels used ({_first_line(e)})"
        return make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), note


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def _quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    # Only quantized inputs are scaled; plain integer inputs (e.g. token ids) are cast.
    if np.issubdtype(dtype, np.integer) and scale and not np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    return x.astype(dtype)


def _dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime

model = open(sys.argv[1], "rb").read()
try:
    interp = runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
    i = 0
    while True:
        try:
            d = interp.get_input_details(i)
        except Exception:
            break
        interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), i)
        i += 1
    interp.invoke()
except RuntimeError:
    sys.exit(3)
sys.stderr.flush()
interp.print_allocations()
"""


def _micro_probe(model_path: str, arena: int) -> tuple[bool, str]:
    """Runs TFLM with one arena size in its own process: some too-small arenas make
    TFLM abort ("Failed to allocate tail memory") instead of raising."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, model_path, str(arena)],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    return proc.returncode == 0, proc.stderr


def _micro(model_path: str, options: dict) -> dict:
    size = Path(model_path).stat().st_size
    limit = options.get("max_arena", 64 * 1024 * 1024)
    hi = max(16 * 1024, size * 4)
    ok, log = _micro_probe(model_path, hi)
    while not ok:
        hi *= 4
        if hi > limit:
            return {"error": f"no tensor arena up to {limit} bytes was enough"}
        ok, log = _micro_probe(model_path, hi)
    hi_log = log  # TFLM's allocation report from the last successful probe, at `hi`.
    totals = _ARENA_TOTAL.findall(log)
    reported = int(totals[-1]) if totals else 0
    # The minimum lies at or just above TFLM's own report: probe a small margin first.
    lo = max(0, reported - 16)
    margin = 512
    while reported and reported + margin < hi:
        ok, log = _micro_probe(model_path, reported + margin)
        if ok:
            hi, hi_log = reported + margin, log
            break
        lo = reported + margin
        margin *= 4
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        ok, log = _micro_probe(model_path, mid)
        if ok:
            hi, hi_log = mid, log
        else:
            lo = mid
    totals = _ARENA_TOTAL.findall(hi_log)
    return {"arena_bytes": hi, "arena_reported_bytes": int(totals[-1]) if totals else None}


def _bench(model_path: str, options: dict) -> dict:
    import resource

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    interp, note = litert_interpreter(
        model_path, threads=options["threads"], xnnpack=options["xnnpack"]
    )
    init_ms = (time.perf_counter() - t0) * 1000
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, info.max, size=d["shape"], endpoint=True)
        else:
            x = rng.random(d["shape"])
        interp.set_tensor(d["index"], x.astype(d["dtype"]))
    for _ in range(options["warmup"]):
        interp.invoke()
    times = []
    deadline = time.perf_counter() + options["max_seconds"]
    for _ in range(options["runs"]):
        t = time.perf_counter_ns()
        interp.invoke()
        times.append((time.perf_counter_ns() - t) / 1e6)
        if time.perf_counter() > deadline:
            break
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = np.asarray(times)
    return {
        "delegate": "builtin" if note or not options["xnnpack"] else "xnnpack",
        "note": note,
        "init_ms": round(init_ms, 3),
        "runs": int(times.size),
        "latency_ms": {
            "median": round(float(np.median(times)), 4),
            "p90": round(float(np.percentile(times, 90)), 4),
            "min": round(float(times.min()), 4),
            "mean": round(float(times.mean()), 4),
        },
        "peak_rss_bytes": int(rss_after),
        "peak_memory_delta_bytes": int(max(0, rss_after - rss_before)),
    }


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
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        interp.set_tensor(in_d["index"], _quantize_input(chunk, in_d))
        interp.invoke()
        for i, d in enumerate(out_ds):
            outputs[i].append(_dequantize_output(interp.get_tensor(d["index"]), d)[:n])
    return [np.concatenate(chunks) for chunks in outputs]


def _predict(model_path: str, x: np.ndarray, out_dir: Path) -> dict:
    interp, note = litert_interpreter(model_path, threads=1, xnnpack=True)
    outputs = run_batches(interp, x)
    for i, y in enumerate(outputs):
        np.save(out_dir / f"y{i}.npy", y)
    return {"n_outputs": len(outputs), "note": note}


def _main(request_path: str) -> None:
    request_path = Path(request_path)
    tmp = request_path.parent
    request = json.loads(request_path.read_text())
    model_path = str(tmp / "model.tflite")
    try:
        if request["task"] == "micro":
            result = _micro(model_path, request["options"])
        elif request["task"] == "bench":
            result = _bench(model_path, request["options"])
        else:
            result = _predict(model_path, np.load(tmp / "x.npy"), tmp)
    except (RuntimeError, ValueError) as e:
        result = {"error": str(e).strip().splitlines()[-1][:300] if str(e).strip() else repr(e)}
    (tmp / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1])
