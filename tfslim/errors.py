"""Exceptions and warnings raised by tfslim.

Each exception also inherits the built-in type it refines, so callers that catch
`ValueError` keep working (KerasTuner's `FatalValueError` pattern).
"""


class TfslimError(Exception):
    """Base class of every error tfslim raises on purpose."""


class InvalidModelError(TfslimError, ValueError):
    """A file or object is not a model tfslim can read (e.g. a corrupted .tflite)."""


class UnsupportedOpError(TfslimError, ValueError):
    """A model uses an op or layer that the chosen target or technique cannot run."""


class TfslimWarning(UserWarning):
    """A recoverable problem found by tfslim."""
