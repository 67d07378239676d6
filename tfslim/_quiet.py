"""Keeps native libraries' chatter off the caller's terminal."""

import contextlib
import os
import sys
import tempfile

__all__ = ["native_stderr_captured"]


@contextlib.contextmanager
def native_stderr_captured():
    """Points the C-level stderr (file descriptor 2) at a temporary file for the block.

    The TFLite converter prints its settings there (`fully_quantize: 0, inference_type:
    6, ...`) on every call, past `TF_CPP_MIN_LOG_LEVEL`. Yields a callable that returns
    what was written, so a caller can still quote it when the block fails.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:

            def captured() -> str:
                sink.flush()
                sink.seek(0)
                return sink.read().decode(errors="replace")

            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
