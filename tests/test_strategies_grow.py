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


def _build(width_multiplier=1.0, depth=1):
    """`depth` 3x3 convolutions of 16 filters (times the multiplier), pooling, a classifier."""
    import keras

    layers = [keras.Input((8, 8, 1))]
    for i in range(depth):
        filters = max(1, round(16 * width_multiplier))
        layers.append(
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")
        )
    layers += [
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ]
    return keras.Sequential(layers)


def _no_depth(width_multiplier=1.0):
    return _build(width_multiplier)


def _depth_without_default(width_multiplier=1.0, *, depth):
    return _build(width_multiplier, depth)


def _no_multiplier(depth=1):
    return _build(1.0, depth)


@pytest.mark.parametrize(
    "build, growth, error, match",
    [
        (None, [{"depth": 2}], ValueError, r"`growth\[0\]`.*a keras.Model can only be widened"),
        (_no_depth, [1.5, {"depth": 2}], ValueError, r"`growth\[1\]`.*takes no `depth`"),
        (_depth_without_default, [{"depth": 2}], ValueError, "no int default"),
        (_build, [{"depth": 0}], ValueError, r"`growth\[0\]\['depth'\]`.*>= 1.*=0"),
        (_build, [{"depth": 2.0}], TypeError, r"`growth\[0\]\['depth'\]`.*2.0"),
        (_build, [{"depth": 1}], ValueError, r"`growth\[0\]`.*grows the model.*'depth': 1"),
        (_build, [{"width_multiplier": 1.0}], ValueError, "grows the model"),
        (_build, [{"width_multiplier": 0.5}], ValueError, r"\['width_multiplier'\].*>= 1"),
        (_build, [{"layers": 3}], ValueError, r"`growth\[0\]`.*keys from.*'layers': 3"),
        (_build, [{}], ValueError, r"`growth\[0\]`.*keys from"),
        (_build, ["wide"], TypeError, r"`growth\[0\]`"),
        (_build, [2.0, {"width_multiplier": 2.0, "depth": 1}], ValueError, "distinct entries"),
        (_build, [{"depth": 3}, {"width_multiplier": 1, "depth": 3}], ValueError, "distinct"),
        (_no_multiplier, [{"depth": 2}], TypeError, r"`build_model`.*`width_multiplier`"),
    ],
)
def test_growth_in_depth_is_checked_before_any_training(tmp_path, build, growth, error, match):
    data = (np.zeros((4, 8, 8, 1)), np.zeros(4))
    build = _model() if build is None else build
    with pytest.raises(error, match=match):
        grow_improve_shrink(build, data, data, growth=growth, directory=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_grow_improve_shrink_grows_depth_and_prunes_channels_back_to_the_footprint(
    tmp_path, digits
):
    x_train, y_train, x_test, y_test = digits
    train, val = (x_train[:300], y_train[:300]), (x_test[:150], y_test[:150])
    kwargs = dict(
        target="nano33ble",
        epochs=1,
        shrink_epochs=1,
        directory=tmp_path,
        latency_runs=0,
        calibration_samples=50,
    )
    lines = []
    result = grow_improve_shrink(
        _build, train, val, growth=[{"depth": 2}], log=lines.append, **kwargs
    )
    names = [c.name for c in result.candidates]
    assert names[:3] == ["original", "original_qat", "grow100_depth2"]
    base, grown = result["original"], result["grow100_depth2"]
    assert grown.spec["depth"] == 2 and "depth" not in base.spec
    assert grown.description.startswith("grown to depth 2, trained from scratch")
    assert grown.footprint.params > 1.5 * base.footprint.params and not grown.feasible
    shrunk = result[names[3]]
    assert names[3].startswith("grow100_depth2_width") and shrunk.spec["width"] < 1
    assert "grown to depth 2 and trained, channels pruned to" in shrunk.description
    # The shrunk model keeps both convolutions, with fewer channels.
    assert shrunk.footprint.ops["CONV_2D"] == grown.footprint.ops["CONV_2D"] == 2
    assert shrunk.footprint.params < grown.footprint.params
    last = result.candidates[-1]
    assert last.feasible == (
        last.footprint.flash_bytes <= base.footprint.flash_bytes
        and last.footprint.arena_bytes <= base.footprint.arena_bytes
    )
    assert last.feasible, [(c.name, c.violations) for c in result.candidates]
    note = next(n for n in result.notes if n.startswith(last.name))
    assert "points" in note
    # A rerun resumes everything, the depth-grown candidates included.
    again = grow_improve_shrink(
        _build, train, val, growth=[{"depth": 2}], log=lines.append, **kwargs
    )
    assert [c.name for c in again.candidates] == names
    assert all("(resumed)" in line for line in lines[len(names) :])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(growth=(1.0,)), ValueError, r"argument `growth\[0\]`.*> 1.*growth\[0\]=1.0"),
        (dict(growth=(2.0, 2.0)), ValueError, "distinct entries"),
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


def _tiny(width_multiplier=1.0):
    """One convolution of 2 filters (3 when grown 1.5x), small enough that widths round alike."""
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(round(2 * width_multiplier), 3, padding="same", name="conv"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )


def test_kept_channels_counts_what_narrowing_keeps(digits):
    from tfslim.strategies import candidates
    from tfslim.strategies.grow import kept_channels

    grown = _tiny(1.5)
    # 3 channels: 1/1.5 and 0.8 of it both prune one, 0.64 of it prunes two.
    assert [kept_channels(grown, w) for w in (1 / 1.5, 0.8 / 1.5, 0.64 / 1.5)] == [(2,), (2,), (1,)]
    assert kept_channels(grown, 1.0) == (3,)
    narrowed = candidates.narrow(grown, grown, digits[0][:32], 1 - 0.8 / 1.5, 32, 1e-3)
    assert narrowed.get_layer("conv").filters == 2


def test_next_width_narrows_by_the_measured_excess():
    from tfslim.strategies.grow import kept_channels, next_width

    grown = _tiny(4.0)  # 8 channels: each step of 1/8 keeps one channel fewer.
    # At least 5% narrower, and on to the first width that keeps a channel fewer: 0.95
    # of 8 channels still rounds to 8, 0.93 keeps 7...
    assert next_width(grown, 1.0, 0.03) == 0.93
    assert kept_channels(grown, 0.93) == (7,)
    assert next_width(grown, 1.0, 0.6) == 0.62  # ...by the excess: 1 / 1.6 ...
    assert next_width(grown, 1.0, 3.0) == 0.5  # ... and at most half.
    # From 7 of 8 channels, 5% narrower still keeps 7: on to the first width that keeps 6.
    assert kept_channels(grown, next_width(grown, 7 / 8, 0.01)) == (6,)
    assert next_width(_tiny(1.0), 0.3, 0.5) == 0.01  # Nothing narrower keeps fewer.


def test_a_shrink_step_keeping_the_same_channels_is_not_made_again(tmp_path, monkeypatch):
    from tfslim.benchmarking.footprint import Footprint
    from tfslim.strategies import grow
    from tfslim.strategies import run as run_module

    class Converted:
        flatbuffer = b"tflite"

    def convert(model, target, train, validation, settings, *, compress):
        # Flash follows the parameters; a shrunk model here is never narrowed, so over budget.
        params = model.count_params()
        footprint = Footprint(
            flash_bytes=params,
            gzip_bytes=params,
            params=params,
            macs=params,
            fully_integer=True,
            arena_bytes=1000,
            quality=0.5,
        )
        return Converted(), footprint, None

    improved = []

    def improve(spec, model, teacher, x, y, settings):
        improved.append(spec.name)
        return model

    monkeypatch.setattr(run_module, "convert_and_measure", convert)
    monkeypatch.setattr(grow, "_fit", lambda model, x, y, settings: model)
    monkeypatch.setattr(grow, "_improve", improve)
    data = (np.zeros((8, 8, 8, 1), "float32"), np.zeros(8, "int64"))
    lines = []
    result = grow.grow_improve_shrink(
        _tiny, data, data, growth=[1.5], directory=tmp_path, latency_runs=0, log=lines.append
    )
    # 520 parameters against 350: 49% over, so the next step is 1 / 1.49 as wide (45%,
    # one channel); the last one narrower still keeps that one channel and is not made.
    names = ["original", "original_qat", "grow150", "grow150_width67", "grow150_width45"]
    assert [c.name for c in result.candidates] == names
    assert improved == ["original_qat", "grow150_width67", "grow150_width45"]
    skipped = (
        "grow150_width1: not made, it keeps the same channels as grow150_width45 (1 per group)"
    )
    assert skipped in lines and skipped in result.notes
    assert not (tmp_path / "grow150_width53.keras").exists()
