"""The LiteRT timing loop and the model's runtime memory, run inside a child process.

`time_invokes` is an `isolation.run` task: the child that runs it has imported NumPy and
ai-edge-litert only, so its memory figures describe the interpreter, not TensorFlow.
"""

import ctypes
import sys
import time

import numpy as np

from tfslim.litert import interpreter

__all__ = ["time_invokes"]


def time_invokes(
    model_path: str,
    *,
    threads: int,
    xnnpack: bool,
    runs: int,
    warmup: int,
    max_seconds: float,
) -> dict:
    """Times `runs` invocations on random inputs after `warmup` untimed ones.

    Returns:
        Dict with `delegate` ("xnnpack" or "builtin"), `note`, `init_ms` (interpreter
        creation and allocation), `runs`, `latency_ms` (median, p90, min, mean) and the
        model's runtime memory in the LiteRT-only child: `model_memory_bytes`, the bytes
        creating and allocating the interpreter took (tensor arena, tensors, kernel and
        delegate state such as XNNPACK's repacked weights; not the read-only,
        memory-mapped model file, whose size is `size_bytes`, nor the runtime's code);
        `invoke_peak_memory_bytes`, the most the interpreter held above the same
        baseline after any invocation, warm-up and timed (kernels allocate scratch
        buffers on their first run); `memory_source`, how both were read (the C heap's
        bytes in use, else anonymous resident memory, else None with both None); and
        `process_peak_rss_bytes`, the whole child's peak resident set (Python, NumPy,
        LiteRT, model), for context.
    """
    from ai_edge_litert import interpreter as _litert  # noqa: F401  Loaded before the baseline.

    memory, source = _memory_reader()
    times = np.empty(runs)
    rng = np.random.default_rng(0)  # NumPy's first generator allocates ~0.5 MB for good.
    baseline = memory()
    t0 = time.perf_counter()
    interp, note = interpreter.make_interpreter(model_path, threads=threads, xnnpack=xnnpack)
    init_ms = (time.perf_counter() - t0) * 1000
    allocated = memory()
    _set_random_inputs(interp, rng)  # Its arrays are freed again: not counted as the model's.
    peak = _max(allocated, memory())
    for _ in range(warmup):
        interp.invoke()
        peak = _max(peak, memory())
    n = 0
    deadline = time.perf_counter() + max_seconds
    for n in range(1, runs + 1):
        t = time.perf_counter_ns()
        interp.invoke()
        times[n - 1] = (time.perf_counter_ns() - t) / 1e6
        if time.perf_counter() > deadline:
            break
    peak = _max(peak, memory())
    times = times[:n]
    return {
        "delegate": "builtin" if note or not xnnpack else "xnnpack",
        "note": note,
        "init_ms": round(init_ms, 3),
        "runs": int(times.size),
        "latency_ms": {
            "median": round(float(np.median(times)), 4),
            "p90": round(float(np.percentile(times, 90)), 4),
            "min": round(float(times.min()), 4),
            "mean": round(float(times.mean()), 4),
        },
        "model_memory_bytes": _delta(allocated, baseline),
        "invoke_peak_memory_bytes": _delta(peak, baseline),
        "memory_source": source,
        "process_peak_rss_bytes": _process_peak(),
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _set_random_inputs(interp, rng) -> None:
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, info.max, size=d["shape"], endpoint=True)
        else:
            x = rng.random(d["shape"])
        interp.set_tensor(d["index"], x.astype(d["dtype"]))


def _memory_reader():
    """(function returning bytes in use, its description); glibc's heap counters when
    available: resident memory misses an arena malloc'ed but not yet touched, and
    counts freed pages that malloc reuses."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2  # glibc 2.33+
        mallinfo2.restype = _MallInfo2
    except (AttributeError, OSError):
        pass
    else:

        def heap_in_use() -> int:
            info = mallinfo2()
            return int(info.uordblks + info.hblkhd)  # Small blocks + mmapped large ones.

        return heap_in_use, "C heap bytes in use (glibc mallinfo2)"
    if _anonymous_rss() is not None:
        return _anonymous_rss, "anonymous resident memory (/proc/self/status RssAnon)"
    return (lambda: None), None


def _status_bytes(field: str) -> int | None:
    """A size field of /proc/self/status (Linux) in bytes, else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _anonymous_rss() -> int | None:
    return _status_bytes("RssAnon")


def _max(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


def _delta(value: int | None, baseline: int | None) -> int | None:
    return None if value is None or baseline is None else max(0, value - baseline)


def _process_peak() -> int:
    """This process's peak resident set in bytes.

    The kernel's high-water mark of this address space where it is readable: Linux
    carries `ru_maxrss` across exec, so a child of a big (TensorFlow) process would
    report its parent's peak.
    """
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes.
