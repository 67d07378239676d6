import numpy as np
import pytest

from tfslim.strategies import grow_improve_shrink, widen


def _model():
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def test_widen_grows_every_layer_but_the_outputs():
    model = _model()
    grown = widen(model, 2.0)
    assert grown.get_layer("conv").filters == 8 and grown.get_layer("hidden").units == 12
    assert grown.get_layer("out").units == 10
    assert grown.output_shape == model.output_shape
    assert model.get_layer("conv").filters == 4  # the original is untouched
    with pytest.raises(ValueError, match=r"argument `factor`.*>= 1.*factor=0.5"):
        widen(model, 0.5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(growth=(1.0,)), ValueError, r"argument `growth`.*> 1"),
        (dict(growth=(2.0, 2.0)), ValueError, "distinct width multipliers"),
        (dict(growth=2.0), TypeError, "argument `growth`"),
        (dict(build_model="cnn"), TypeError, "argument `build_model`"),
        (dict(shrink_epochs=0), ValueError, "argument `shrink_epochs`"),
        (dict(footprint_of="base.keras"), TypeError, "argument `footprint_of`"),
    ],
)
def test_arguments_are_checked_before_any_training(tmp_path, kwargs, error, match):
    data = (np.zeros((4, 8, 8, 1)), np.zeros(4))
    args = dict(build_model=_model(), directory=tmp_path / "run")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        grow_improve_shrink(args.pop("build_model"), data, data, **args)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_grow_improve_shrink_on_digits_meets_the_baseline_footprint(tmp_path, small_cnn, digits):
    import tfslim

    x_train, y_train, x_test, y_test = digits
    train, val = (x_train[:600], y_train[:600]), (x_test[:200], y_test[:200])
    result = grow_improve_shrink(
        small_cnn,
        train,
        val,
        target="nano33ble",
        growth=(2.0,),
        epochs=2,
        shrink_epochs=1,
        directory=tmp_path,
        latency_runs=5,
        max_candidates=4,
    )
    names = [c.name for c in result.candidates]
    assert names[:3] == ["original", "original_qat", "grow200"]
    assert names[3].startswith("grow200_width")
    base = result.baseline_candidate.footprint
    assert result.budget.max_flash_bytes == base.flash_bytes
    assert result.budget.max_arena_bytes == base.arena_bytes
    grown = result["grow200"]
    assert grown.footprint.params > 1.5 * base.params and not grown.feasible
    shrunk = result.candidates[-1]
    assert shrunk.footprint.fully_integer
    assert shrunk.feasible == (
        shrunk.footprint.flash_bytes <= base.flash_bytes
        and shrunk.footprint.arena_bytes <= base.arena_bytes
    )
    for front in result.front.values():
        for candidate in front:
            report = tfslim.inspect(candidate.tflite_path, target=["nano33ble"])
            assert report["size_bytes"] <= result.budget.max_flash_bytes
            assert report["micro"]["arena_bytes"] <= result.budget.max_arena_bytes
    note = next(n for n in result.notes if n.startswith(shrunk.name))
    assert ("points" in note) if shrunk.feasible else ("still over" in note)
    assert (tmp_path / "front.png").exists() and (tmp_path / "report.md").exists()
