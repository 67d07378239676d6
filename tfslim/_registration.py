"""Registering tfslim's serializable classes with Keras as soon as Keras exists.

A `.keras` file names its custom classes (`tfslim>ActivationQuantizer`,
`tfslim>PruneLowMagnitude`, ...); `keras.saving.load_model` finds them only once the module
defining each class has run its `@keras.saving.register_keras_serializable` decorator. So that
plain `keras.saving.load_model` works after `import tfslim` in a fresh process, in either import
order, `install()` (called by `import tfslim`):

- imports the modules of `REGISTERING_MODULES` right away when Keras is already imported;
- otherwise puts a one-shot finder at the front of `sys.meta_path` that wraps the loader of the
  top-level `keras` module and imports them the moment Keras has finished importing.

`import tfslim` itself therefore never imports TensorFlow or Keras. This module imports only the
standard library.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable

# Every tfslim module that registers a class which can end up in a saved model. A package that
# adds serializable classes (e.g. a future `tfslim.clustering`) appends itself here; entries
# that do not exist in this installation are skipped.
REGISTERING_MODULES: tuple[str, ...] = (
    "tfslim.quantization",
    "tfslim.pruning",
    "tfslim.distillation",
    "tfslim.clustering",
    # Not imported by tfslim.clustering itself (it needs tfslim.quantization).
    "tfslim.clustering.cluster_preserve",
)

_callbacks: list[Callable[[], None]] = []


def register_serializables() -> list[str]:
    """Imports every existing module of `REGISTERING_MODULES`; returns the names imported.

    A module that fails to import is reported with a `TfslimWarning` instead of breaking the
    user's `import keras`; loading a file that needs its classes then fails in Keras with the
    class name.
    """
    imported = []
    for name in REGISTERING_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                continue
            importlib.import_module(name)
        except Exception as e:  # Never let tfslim break the user's `import keras`.
            from tfslim.errors import TfslimWarning

            warnings.warn(
                f"tfslim could not register the classes of {name} with Keras "
                f"({type(e).__name__}: {e}); .keras files using them will not load.",
                TfslimWarning,
                stacklevel=2,
            )
            continue
        imported.append(name)
    return imported


def call_after_keras_import(callback: Callable[[], None]) -> bool:
    """Runs `callback` now if Keras is imported, else right after Keras finishes importing.

    Returns:
        True when `callback` ran now, False when it was deferred.
    """
    module = sys.modules.get("keras")
    if module is not None and not _initializing(module):
        callback()
        return True
    _callbacks.append(callback)
    if not any(isinstance(f, _KerasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasFinder())
    return False


def cancel(callback: Callable[[], None]) -> None:
    """Drops a deferred `callback` that has not run yet (no error if it is not pending)."""
    while callback in _callbacks:
        _callbacks.remove(callback)


def install() -> None:
    """Registers tfslim's serializable classes now or right after `import keras`."""
    if register_serializables not in _callbacks:
        call_after_keras_import(register_serializables)


def _initializing(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run_callbacks() -> None:
    while _callbacks:
        _callbacks.pop(0)()


class _KerasFinder(importlib.abc.MetaPathFinder):
    """Finds `keras` through the other finders and wraps its loader.

    It stays in `sys.meta_path` until Keras is actually executed: TensorFlow probes
    `importlib.util.find_spec("keras")` before importing it, and a finder that left on the
    probe would miss the import.
    """

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._searching:
            return None
        self._searching = True
        try:
            spec = importlib.util.find_spec("keras")
        finally:
            self._searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _LoaderWrapper(spec.loader)
        return spec


def _remove_finders() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _KerasFinder)]


class _LoaderWrapper(importlib.abc.Loader):
    """Delegates to Keras's own loader, then runs the pending callbacks."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Later code (importlib.resources, reload) sees Keras's own loader, not this one.
        module.__loader__ = self._loader
        module.__spec__.loader = self._loader
        _remove_finders()
        try:
            self._loader.exec_module(module)
        except BaseException:
            # Keras failed to import: wait for the next attempt.
            sys.meta_path.insert(0, _KerasFinder())
            raise
        _run_callbacks()

    def __getattr__(self, name):
        return getattr(self._loader, name)
