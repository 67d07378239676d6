"""The `tfslim` command runs in a worker process that a native crash cannot take it down with.

`supervise(argv, command)` is the command as the shell starts it. The process has not
imported TensorFlow; it forks a worker that runs `command()` (the command itself, TensorFlow
and all), relays the worker's stderr as it comes (stdout is the worker's own) and returns
the worker's exit code. A fork costs about a millisecond, where a second Python would cost
a second interpreter start. Then:

- The worker killed by a signal (a crash in the TFLite converter or a native runtime): one
  line naming the stage, from the Python stack the worker's `faulthandler` dumped, and the
  signal; the worker's temporaries are removed; exit code 128 + the signal's number.
- Ctrl-C (SIGINT), SIGTERM or SIGHUP: the worker gets the signal once (a terminal's Ctrl-C
  also reaches it directly; it ignores the repeat), stops writing to stderr and unwinds,
  removing its temporaries; the command prints one line and exits 128 + the signal's
  number (130 for Ctrl-C), whenever the signal comes. A worker still busy `GRACE_S` seconds
  later, or at a second Ctrl-C, is killed and its temporaries removed.

Test-only: `TFSLIM_TEST_CRASH=SIGSEGV` (any signal name) makes the worker send itself that
signal just before the command runs, and `TFSLIM_TEST_CRASH=SIGSEGV@temporary` the moment
it has made its first temporary file, to test the crash report and the cleanup without a
real crash.
"""

import contextlib
import os
import signal
import sys

__all__ = ["GRACE_S", "TEST_CRASH_ENV", "crash_stage", "supervise"]

TEST_CRASH_ENV = "TFSLIM_TEST_CRASH"
GRACE_S = 5.0
_FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
# Where a crash happened, by the file of the innermost Python frame that names one.
_STAGES = (
    ("/tflite_micro/", "the TFLite Micro interpreter"),
    ("/ai_edge_litert/", "the LiteRT interpreter"),
    ("/tensorflow/lite/python/interpreter", "the LiteRT interpreter"),
    ("/ai_edge_quantizer/", "the AI Edge Quantizer"),
    ("/tensorflow/lite/", "the TFLite converter"),
    ("/tfslim/litert/converter.py", "the TFLite converter"),
    ("/keras/", "Keras"),
    ("/tf_keras/", "Keras"),
    ("/tensorflow/", "TensorFlow"),
)


def _command(argv: list[str]) -> str:
    """`tfslim convert` for `convert ...`: the first word that is not an option."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return f"tfslim {word}" if word else "tfslim"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def crash_stage(dump: str) -> "str | None":
    """The stage that crashed, from a `faulthandler` dump; None when no frame names one.

    The crashing thread's frames count first (the block under "Current thread"), innermost
    first; a native thread has none, and then the other threads' frames (the main thread
    waiting in the converter, say) name the stage.
    """
    current: list[str] = []
    others: list[str] = []
    frames = others
    for line in dump.splitlines():
        line = line.strip()
        if line.startswith("Current thread"):
            frames = current
        elif line.startswith("Thread "):
            frames = others
        elif line.startswith('File "'):
            frames.append(line[6:].split('"', 1)[0].replace("\\", "/"))
    for path in [*current, *others]:
        for fragment, stage in _STAGES:
            if fragment in path:
                return stage
    return None


class _State:
    def __init__(self):
        self.pid = None  # The worker's, until it is reaped.
        self.signals: list[int] = []
        self.forwarded = False

    def on_signal(self, number, frame) -> None:
        self.signals.append(number)
        if len(self.signals) > 1:
            self.kill()
        else:
            self.forward()

    def on_alarm(self, number, frame) -> None:
        self.kill()

    def forward(self) -> None:
        if self.pid is None or self.forwarded or not self.signals:
            return
        self.forwarded = True
        with contextlib.suppress(OSError):
            os.kill(self.pid, self.signals[0])
        signal.setitimer(signal.ITIMER_REAL, GRACE_S)

    def kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


def supervise(argv: list[str], command) -> int:
    """Runs `command()` (returning an exit code) in a forked worker; returns its exit code,
    or a signal's 128 + number (see the module docstring). The worker never returns from
    this call: it exits with the command's code.

    Args:
        argv: list of str. The command line, for naming the command in messages.
        command: callable. Runs the command in the worker; returns its exit code.
    """
    state = _State()
    # A signal the shell started the command ignoring (a background job's SIGINT, nohup's
    # SIGHUP) stays ignored, here and in the worker.
    previous = {
        n: signal.signal(n, state.on_signal)
        for n in _FORWARDED
        if signal.getsignal(n) is not signal.SIG_IGN
    }
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, state.on_alarm)
    supervisor = os.getpid()
    try:
        return _run(argv, command, state, previous)
    finally:
        if os.getpid() == supervisor:  # The worker keeps its own handlers to its exit.
            signal.setitimer(signal.ITIMER_REAL, 0)
            for number, handler in previous.items():
                signal.signal(number, handler)


def _run(argv: list[str], command, state: _State, previous: dict) -> int:
    # Imported once the handlers are in place: a Ctrl-C this early is still one line.
    import tempfile
    import threading

    from tfslim import _cleanup

    name = _command(argv)
    if state.signals:  # Before the worker even started.
        return _report_signal(name, state.signals[0])
    with tempfile.TemporaryFile() as fault, tempfile.TemporaryFile() as record:
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _work(command, write_end, fault.fileno(), record.fileno(), previous)
        state.pid = pid
        os.close(write_end)
        state.forward()  # A signal that came while forking.
        # The relay thread blocks the forwarded signals, so they reach the main thread,
        # which waits on the worker and runs the handlers.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {*_FORWARDED, signal.SIGALRM})
        try:
            relay = threading.Thread(target=_relay, args=(read_end, state), daemon=True)
            relay.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _, status = os.waitpid(pid, 0)
        state.pid = None
        code = os.waitstatus_to_exitcode(status)
        # Grandchildren may hold the pipe open; what the worker wrote is read by now.
        relay.join(timeout=0.5 if code >= 0 else 0.1)
        if code < 0 or state.signals:  # Else the worker unwound and removed its own.
            _cleanup.remove_recorded(record, pid)
            _cleanup.remove_exports_of(pid)
        if state.signals:
            return _report_signal(name, state.signals[0])
        number = _recorded_signal(record)  # The worker signalled, but not this process.
        if number is not None:
            return _report_signal(name, number)
        if code < 0:
            fault.seek(0)
            dump = fault.read().decode(errors="replace")
            stage = crash_stage(dump)
            if stage:
                what = f"{stage} crashed"
            elif dump:
                what = "the command crashed in native code"
            else:  # No dump: SIGKILL (the kernel out of memory, say) or a foreign signal.
                what = "the command's process was killed"
            _print(
                f"{name}: error: {what} ({_signal_name(-code)}); "
                "rerun with --verbose to see its own log"
            )
            return 128 - code
        return code


def _relay(read_end: int, state: _State) -> None:
    out = getattr(sys.stderr, "buffer", None)
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            if state.signals:
                continue  # After Ctrl-C, only the one line.
            try:
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    sys.stderr.write(chunk.decode(errors="replace"))
                    sys.stderr.flush()
            except (OSError, ValueError):
                pass


def _silence_stderr() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    fds = {2}
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fds.add(stream.fileno())
    for fd in fds:
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def _recorded_signal(record) -> "int | None":
    """The signal the worker's handler noted in `record`, if one reached it."""
    record.seek(0)
    for line in record.read().splitlines():
        if line.startswith(b"signal "):
            return int(line.split()[1])
    return None


def _report_signal(command: str, number: int) -> int:
    how = "interrupted" if number == signal.SIGINT else f"stopped by {_signal_name(number)}"
    _print(f"{command}: {how}")
    return 128 + number


def _print(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _work(command, stderr_fd: int, fault_fd: int, record_fd: int, previous: dict) -> None:
    """The worker: runs `command()` and exits with its code; never returns."""
    code = 1
    try:
        import faulthandler

        from tfslim import _cleanup

        os.dup2(stderr_fd, 2)
        os.close(stderr_fd)
        faulthandler.enable(file=fault_fd, all_threads=True)
        crash, _, when = os.environ.pop(TEST_CRASH_ENV, "").partition("@")
        crash = getattr(signal, crash) if crash else None
        _cleanup.record_to(
            record_fd,
            after=(lambda: os.kill(os.getpid(), crash)) if crash and when == "temporary" else None,
        )

        def interrupted(number, frame):
            # The first signal unwinds (temporaries are removed on the way out); a repeat,
            # such as the supervisor's copy of a terminal's Ctrl-C, must not break that.
            for n in _FORWARDED:
                signal.signal(n, signal.SIG_IGN)
            # The supervisor prints the one line, whichever process the signal reached
            # first: nothing the worker writes to stderr from now on (a traceback from an
            # interrupted import, a library's message) reaches the terminal.
            with contextlib.suppress(OSError):
                os.write(record_fd, f"signal {number}\n".encode())
            _silence_stderr()
            raise KeyboardInterrupt

        signal.signal(signal.SIGALRM, previous[signal.SIGALRM])
        for number in _FORWARDED:
            if number in previous:
                signal.signal(number, interrupted)
        if crash and not when:
            os.kill(os.getpid(), crash)
        code = command()
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:  # argparse's --help, --version and usage errors.
        if isinstance(e.code, str):
            _print(e.code)
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # A bug: its traceback, as Python itself would print it.
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        # Leaves by the normal exit (atexit handlers, buffered output flushed), never back
        # into the caller's code, which the supervisor runs.
        raise SystemExit(code)
