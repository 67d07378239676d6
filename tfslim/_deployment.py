"""Whether the graph being traced is the one the converter reads (tfslim-wide, so that the
converter stage and the techniques share it without importing each other)."""

import contextlib
import contextvars

_DEPLOYED_GRAPH = contextvars.ContextVar("tfslim_deployed_graph", default=False)


@contextlib.contextmanager
def deployed_graph():
    """Traces a QAT model as the converter must read it.

    `tfslim.convert` traces the model inside this context. Layers that emulate an int8
    kernel's own rounding (`RoundToInputGrid` after average pooling) then trace the plain
    op the converter maps onto that kernel, without the emulation's extra arithmetic,
    which would otherwise stay in the file as float ops. Enter it yourself only to export
    a QAT model for the plain `tf.lite.TFLiteConverter` (a SavedModel, `model.export`).

    Example:

    >>> import tfslim
    >>> with tfslim.quantization.deployed_graph():
    ...     pass  # e.g. model.export(path) for the plain TFLiteConverter
    """
    token = _DEPLOYED_GRAPH.set(True)
    try:
        yield
    finally:
        _DEPLOYED_GRAPH.reset(token)


def in_deployed_graph() -> bool:
    """Whether `deployed_graph` is active."""
    return _DEPLOYED_GRAPH.get()
