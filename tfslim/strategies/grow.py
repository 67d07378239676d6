"""`tfslim.grow_improve_shrink`: more capacity to learn with, then back to the old footprint.

The survey's recipe for a quality-sensitive model (Menghani 2021, section 4): grow the
model (wider), train it, then shrink it back with the same levers as `tfslim.shrink`
(channel pruning to the baseline's width, distillation from the grown model, QAT) until
its footprint measured on the target is no larger than the baseline's, and compare the
two at equal footprint.
"""

import keras

from tfslim._checks import check_float, check_int, invalid_type, invalid_value
from tfslim.strategies import candidates as _candidates
from tfslim.strategies.run import Run, fingerprint
from tfslim.strategies.shrink import (
    check_data,
    check_directory,
    check_model,
    check_target_and_budget,
)
from tfslim.tuning.budget import Budget

__all__ = ["grow_improve_shrink", "widen"]

_MAX_SHRINKS = 3


def widen(model: keras.Model, factor: float) -> keras.Model:
    """A fresh (untrained) copy of `model` with `factor` times the filters and units.

    Every layer with `filters` or `units` grows, except the model's output layers, so
    the outputs keep their shape. Works on Sequential and Functional models.

    Args:
        model: keras.Model. The model to grow.
        factor: float >= 1. Width multiplier.

    Returns:
        An uncompiled keras.Model.
    """
    check_model("model", model)
    factor = check_float("factor", factor, minimum=1)
    # `_keras_history` is how a Keras 3 output tensor names the layer that made it.
    outputs = {t._keras_history[0].name for t in model.outputs}

    def clone(layer):
        config = layer.get_config()
        if layer.name not in outputs:
            for key in ("filters", "units"):
                if isinstance(config.get(key), int):
                    config[key] = max(1, round(config[key] * factor))
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def grow_improve_shrink(
    build_model,
    train_data: tuple,
    validation_data: tuple,
    *,
    target="mcu",
    footprint_of: keras.Model | None = None,
    growth=(1.5, 2.0),
    budget: Budget | None = None,
    epochs: int = 10,
    shrink_epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    max_candidates: int | None = None,
    directory="tfslim_grow",
    overwrite: bool = False,
    calibration_samples: int = 200,
    latency_runs: int = 20,
    seed: int = 0,
    log=None,
):
    """Grows a classifier, trains it, shrinks it back to the baseline's footprint.

    Candidates: the baseline as given (post-training int8); the baseline distilled from
    itself with QAT (`shrink_epochs`, the same improvement without growth, for a fair
    comparison); then for each factor in `growth` the grown model trained for `epochs`,
    and that model channel-pruned back to `1 / factor` of its width, distilled from
    itself-grown with QAT. A shrunk model still over the baseline's flash or arena is
    pruned further (up to 3 times). The budget is the baseline's measured int8 flash and
    TFLite Micro arena unless `budget` is given; `result.notes` gives each grown model's
    quality at that footprint against the baseline's.

    Args:
        build_model: callable or keras.Model. `build_model(width_multiplier=...)`
            returns an uncompiled model (e.g. a `tfslim.architectures` builder wrapped to
            take a multiplier), or a model grown with `widen`.
        train_data: tuple `(x, y)` of NumPy arrays (integer labels).
        validation_data: tuple `(x, y)` of NumPy arrays. Quality is measured on it.
        target: str or Target. Where the model runs. Defaults to `"mcu"`.
        footprint_of: keras.Model or None. The trained baseline whose footprint the grown
            models must meet; None: `build_model` itself when it is a model, else
            `build_model(width_multiplier=1.0)` trained for `epochs`. Defaults to `None`.
        growth: sequence of float > 1. Width multipliers. Defaults to `(1.5, 2.0)`.
        budget: Budget or None. None: the baseline's flash and arena. Defaults to `None`.
        epochs: int. Training epochs of a grown model. Defaults to `10`.
        shrink_epochs: int. Epochs of distillation + QAT after shrinking. Defaults to `3`.
        batch_size: int. Defaults to `32`.
        learning_rate: float. Adam learning rate. Defaults to `1e-3`.
        max_candidates: int or None. Make only the first this many. Defaults to `None`.
        directory: str or path-like. Models, `manifest.json` and the report (resumable,
            as for `tfslim.shrink`). Defaults to `"tfslim_grow"`.
        overwrite: bool. Recompute an earlier or different run. Defaults to `False`.
        calibration_samples: int. Inputs calibrating post-training int8. Defaults to `200`.
        latency_runs: int. Timed LiteRT runs per candidate. Defaults to `20`.
        seed: int. Keras seed set before each candidate. Defaults to `0`.
        log: callable or None. Called with one line per finished candidate.
            Defaults to `None`.

    Returns:
        A `tfslim.strategies.StrategyResult` (strategy `"grow"`).

    Raises:
        TypeError, ValueError: for an invalid argument, checked before any training.
        FileExistsError: as for `tfslim.shrink`.
    """
    settings = dict(
        epochs=check_int("epochs", epochs),
        shrink_epochs=check_int("shrink_epochs", shrink_epochs),
        batch_size=check_int("batch_size", batch_size),
        learning_rate=check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False),
        calibration_samples=check_int("calibration_samples", calibration_samples),
        latency_runs=check_int("latency_runs", latency_runs, minimum=0),
        seed=check_int("seed", seed, minimum=0),
        growth=_check_growth(growth),
    )
    limit = None if max_candidates is None else check_int("max_candidates", max_candidates)
    train_data = check_data("train_data", train_data)
    validation_data = check_data("validation_data", validation_data)
    if isinstance(build_model, keras.Model):
        grow = lambda factor: widen(build_model, factor)  # noqa: E731
        footprint_of = build_model if footprint_of is None else footprint_of
    elif callable(build_model):
        grow = lambda factor: build_model(width_multiplier=factor)  # noqa: E731
    else:
        raise invalid_type(
            "build_model", "a callable build_model(width_multiplier=...)", build_model
        )
    if footprint_of is not None:
        check_model("footprint_of", footprint_of)
    if log is not None and not callable(log):
        raise invalid_type("log", "a callable or None", log)
    target, given = check_target_and_budget(target, budget)
    directory = check_directory(directory)
    x, y = train_data
    if footprint_of is None:
        keras.utils.set_random_seed(seed)
        footprint_of = _fit(grow(1.0), x, y, settings)
    run = Run(directory, "grow", target, given, overwrite, log)
    run.open(fingerprint(footprint_of, None, train_data, validation_data, target, settings))

    made = 0

    def add(spec, make):
        nonlocal made
        if limit is not None and made >= limit:
            return None
        made += 1
        return run.candidate(spec, make, train_data, validation_data, settings)

    base = add(_candidates.CandidateSpec("original", qat=False, train=False), lambda: footprint_of)
    if budget is None:
        run.rejudge(
            Budget(
                max_flash_bytes=base.footprint.flash_bytes,
                max_arena_bytes=base.footprint.arena_bytes,
            )
        )
    fair = _candidates.CandidateSpec("original_qat")
    add(fair, lambda: _improve(fair, footprint_of, footprint_of, x, y, settings))
    for factor in settings["growth"]:
        tag = f"grow{round(100 * factor)}"
        grown_spec = _candidates.CandidateSpec(tag, qat=False, growth=factor)
        cache = {}

        def grown(factor=factor, cache=cache):
            if "model" not in cache:
                keras.utils.set_random_seed(seed)
                cache["model"] = _fit(grow(factor), x, y, settings)
            return cache["model"]

        grown_candidate = add(grown_spec, grown)
        if grown_candidate is None:
            break
        width = 1.0 / factor
        for _ in range(_MAX_SHRINKS):
            spec = _candidates.CandidateSpec(
                f"{tag}_width{round(100 * width)}", width=width, growth=factor
            )

            def shrunk(spec=spec, cache=cache, grown_candidate=grown_candidate):
                # A resumed run reads the grown model back instead of training it again.
                teacher = cache.get("model") or grown_candidate.load_model()
                return _improve(spec, teacher, teacher, x, y, settings)

            candidate = add(spec, shrunk)
            if candidate is None or candidate.feasible:
                break
            width *= 0.8
    _notes(run)
    return run.finish("original")


def _check_growth(growth) -> list:
    if isinstance(growth, str) or not isinstance(growth, list | tuple) or not growth:
        raise invalid_type("growth", "a non-empty list of floats > 1", growth)
    values = []
    for g in growth:
        value = check_float("growth", g, minimum=1, min_inclusive=False)
        if value in values:
            raise invalid_value("growth", "distinct width multipliers", growth)
        values.append(value)
    return values


def _fit(model, x, y, settings):
    model.compile(
        keras.optimizers.Adam(settings["learning_rate"]),
        _candidates.classification_loss(model, x),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=settings["epochs"], batch_size=settings["batch_size"], verbose=0)
    return model


def _improve(spec, model, teacher, x, y, settings):
    """`spec`'s levers on `model`, then distillation from `teacher` + QAT for `shrink_epochs`."""
    return _candidates.train_candidate(
        spec,
        model,
        teacher,
        x,
        y,
        epochs=settings["shrink_epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
    )


def _notes(run) -> None:
    by_name = {c.name: c for c in run.candidates}
    base = by_name.get("original")
    if base is None:
        return
    fair = by_name.get("original_qat")
    for c in run.candidates:
        if not c.name.startswith("grow") or "_width" not in c.name:
            continue
        if not c.feasible:
            run.notes.append(
                f"{c.name}: still over the baseline's footprint ({'; '.join(c.violations)})"
            )
            continue
        gain = 100 * (c.quality - base.quality)
        line = (
            f"{c.name}: quality {c.quality:.4f} at {c.footprint.flash_bytes:,} B flash "
            f"(baseline {base.quality:.4f} at {base.footprint.flash_bytes:,} B): "
            f"{gain:+.2f} points"
        )
        if fair is not None:
            line += f", {100 * (c.quality - fair.quality):+.2f} vs the baseline distilled + QAT"
        run.notes.append(line)
