"""`.keras` files with tfslim layers load with plain `keras.saving.load_model` after
`import tfslim`, in a fresh process and in either import order."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest


def _save_qat_and_pruned(out):
    """Saves a QAT and a pruned model, their predictions and inputs, in this process."""
    import keras

    import tfslim
    from tfslim import pruning

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).random((8, 6, 6, 1)).astype("float32")
    qat = tfslim.quantize_model(model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, frequency=1)
    )
    for name, m in (("qat", qat), ("pruned", pruned)):
        m.save(out / f"{name}.keras")
        np.save(out / f"{name}.npy", m.predict(x, verbose=0))
    np.save(out / "x.npy", x)


_LOAD = textwrap.dedent(
    """
    import sys
    {imports}
    import numpy as np

    out = sys.argv[1]
    {before}
    x = np.load(f"{{out}}/x.npy")
    for name in ("qat", "pruned"):
        model = keras.saving.load_model(f"{{out}}/{{name}}.keras")
        np.save(f"{{out}}/{{name}}-{{sys.argv[2]}}.npy", model.predict(x, verbose=0))
        print(name, sorted({{type(layer).__name__ for layer in model.layers}}))
    """
)


def _run(code, *args):
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True
    )


# The control, in the keras-first process before tfslim is imported: without `import tfslim`
# Keras cannot find the classes.
_PLAIN_FIRST = textwrap.dedent(
    """
    try:
        keras.saving.load_model(f"{out}/qat.keras")
    except Exception as error:
        print("PLAIN FAILED", str(error).replace(chr(10), " "))
    else:
        print("PLAIN LOADED")
    import tfslim
    """
)


@pytest.mark.slow
def test_saved_qat_and_pruned_models_load_in_a_fresh_process(tmp_path):
    _save_qat_and_pruned(tmp_path)
    orders = (
        ("keras_first", "import keras", _PLAIN_FIRST),
        ("tfslim_first", "import tfslim, keras", ""),
        # TensorFlow probes for Keras with importlib.util.find_spec before importing it.
        ("tensorflow_after_tfslim", "import tfslim, tensorflow; import keras", ""),
        # Keras imported by the first use of a lazy attribute, inside a tfslim module.
        (
            "attribute_first",
            "import tfslim; tfslim.cluster_weights; tfslim.prune_low_magnitude; import keras",
            "",
        ),
    )
    # The fresh processes (mostly importing TensorFlow) run side by side.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD.format(imports=imports, before=before), tmp_path, tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag, imports, before in orders
    ]
    for (tag, imports, before), proc in zip(orders, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{imports}: {stderr[-2000:]}"
        assert "could not register" not in stderr, f"{imports}: {stderr[-2000:]}"
        assert "QuantizeWrapper" in stdout and "PruneLowMagnitude" in stdout
        for name in ("qat", "pruned"):
            expected = np.load(tmp_path / f"{name}.npy")
            got = np.load(tmp_path / f"{name}-{tag}.npy")
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=imports)
        if before:
            (plain,) = [line for line in stdout.splitlines() if line.startswith("PLAIN")]
            assert plain.startswith("PLAIN FAILED"), plain
            assert "tfslim>" in plain or "Could not locate class" in plain, plain


def test_import_tfslim_defers_registration_until_keras_is_imported():
    code = textwrap.dedent(
        """
        import sys
        import tfslim
        from tfslim import _registration
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules
        assert type(sys.meta_path[0]).__name__ == "_KerasFinder", sys.meta_path
        import json  # an unrelated import leaves the hook in place
        assert type(sys.meta_path[0]).__name__ == "_KerasFinder"
        print(_registration.REGISTERING_MODULES)
        """
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "tfslim.quantization" in result.stdout and "tfslim.pruning" in result.stdout


def test_registration_skips_missing_modules_and_warns_on_broken_ones(monkeypatch, tmp_path):
    from tfslim import _registration
    from tfslim.errors import TfslimWarning

    (tmp_path / "tfslim_broken_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        _registration,
        "REGISTERING_MODULES",
        ("json", "tfslim.no_such_package", "tfslim_broken_mod"),
    )
    with pytest.warns(TfslimWarning, match=r"tfslim_broken_mod with Keras \(RuntimeError: boom\)"):
        imported = _registration.register_serializables()
    assert imported == ["json"]


@pytest.mark.slow  # A fresh process imports Keras: 20-50 s here.
def test_deferred_callbacks_run_once_right_after_keras_imports():
    code = textwrap.dedent(
        """
        import sys
        from tfslim import _registration
        seen = []
        ran_now = _registration.call_after_keras_import(
            lambda: seen.append(hasattr(sys.modules["keras"], "saving"))
        )
        dropped = lambda: seen.append("cancelled")
        _registration.call_after_keras_import(dropped)
        _registration.cancel(dropped)
        assert ran_now is False and seen == []
        import keras
        assert seen == [True], seen
        import keras.saving
        assert seen == [True], seen
        assert _registration.call_after_keras_import(lambda: seen.append(2)) is True
        assert seen == [True, 2], seen
        assert not any(type(f).__name__ == "_KerasFinder" for f in sys.meta_path)
        print("ok")
        """
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_every_module_that_registers_classes_is_covered():
    """A module with `@register_keras_serializable` is imported by a registering package."""
    from pathlib import Path

    from tfslim import _registration

    root = Path(_registration.__file__).parent
    registering = {
        ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for path in root.glob("*/*.py")  # Sub-package modules; this module names it too.
        if "@keras.saving.register_keras_serializable" in path.read_text()
    }
    assert registering, "no registering module found"
    imported = _registration.register_serializables()
    for module in sorted(registering):
        assert any(module.startswith(p + ".") for p in imported), module
        assert module in sys.modules, f"{module} is not imported by its package"
